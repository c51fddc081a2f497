"""The distributed executor: the API announces batches to Celery workers through a Redis broker.

The API process never imports the worker package: it sends the task by name through a small
client app built from the same :func:`celery_config` the workers use. A message carries one
``batch_key`` (ids only); the worker claims the batch's runs in the database with a conditional
update, so a message delivered twice trains the batch once.

Routing: a batch whose runs ask for ``execution.device == "cpu"`` goes to the ``cpu`` queue,
``"cuda"`` to ``gpu``, and ``"auto"`` to ``task_auto_device_queue``. Each message carries a priority
(Redis: 0 is served first) and soft/hard time limits derived from the batch's estimated FLOPs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.entity import Queue
from sqlalchemy import select

from gni_engine.errors import GNIError
from gni_engine.spec import RunSpec
from gni_service.db import Database
from gni_service.executor.leases import LeaseReaper
from gni_service.models import Run, RunStatus
from gni_service.settings import ServiceSettings
from gni_service.storage import ArtifactStore

log = logging.getLogger(__name__)

EXECUTE_BATCH_TASK = "gni.execute_batch"
QUEUES = ("gpu", "cpu")
VISIBILITY_TIMEOUT_S = 6 * 3600
# Recording a run costs time its FLOPs do not show: its figures (0.5-3 s of a core) and ~13 uploads.
RECORDING_S_PER_RUN = 10.0


class BrokerUnavailable(GNIError):
    error_type = "executor_unavailable"


BROKER_SOCKET_TIMEOUT_S = 5.0


def celery_config(settings: ServiceSettings) -> dict[str, Any]:
    """The Celery configuration shared by the API's client app and the workers."""
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "global_keyprefix": settings.broker_key_prefix,
            # Priorities on Redis: one list per level, served in order (0 first).
            "priority_steps": list(range(10)),
            "sep": ":",
            "queue_order_strategy": "priority",
            # A message unacknowledged this long is delivered again; the claim makes that harmless.
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            # A Redis that accepts connections but never answers is an error after this long, not a
            # request (or /readyz, or the reaper) blocked forever.
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],  # type: ignore[no-untyped-call]
        "task_default_queue": "cpu",
        "task_create_missing_queues": False,
        "task_default_priority": settings.task_default_priority,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
    }


def create_client_app(settings: ServiceSettings) -> Celery:
    """A Celery app that only sends messages (no tasks registered, nothing imported from ``worker``)."""
    app = Celery("gni-api", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def queue_for(spec: RunSpec, settings: ServiceSettings) -> str:
    device = spec.execution.device
    if device == "auto":
        return settings.task_auto_device_queue
    return "gpu" if device == "cuda" else "cpu"


@dataclass(frozen=True)
class BatchMessage:
    """What is sent for one batch: its key, and how it is routed and bounded."""

    batch_key: str
    queue: str
    priority: int
    soft_time_limit_s: float
    time_limit_s: float


def plan_messages(specs_by_batch: dict[str, list[RunSpec]], settings: ServiceSettings) -> list[BatchMessage]:
    """One message per batch; its time limit grows with the batch's estimated FLOPs
    (training and measurements)."""
    from gni_engine.execution import estimate_flops  # torch: the API has it loaded by submit time

    messages = []
    for batch_key, specs in specs_by_batch.items():
        seconds = sum(estimate_flops(spec) for spec in specs) / settings.task_flops_per_second
        seconds += len(specs) * RECORDING_S_PER_RUN
        soft = max(settings.task_time_limit_floor_s, seconds)
        messages.append(
            BatchMessage(
                batch_key,
                queue_for(specs[0], settings),
                settings.task_default_priority,
                soft,
                soft + settings.task_time_limit_grace_s,
            )
        )
    return messages


class CeleryExecutor:
    """Sends each announced batch to the broker; Celery workers elsewhere train it."""

    name = "celery"

    def __init__(
        self,
        database: Database,
        settings: ServiceSettings,
        app: Celery | None = None,
        *,
        store: ArtifactStore | None = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._app = app or create_client_app(settings)
        # With the store, the reaper also draws the figures a dead worker left undrawn.
        self._reaper = LeaseReaper(
            database, settings, self.enqueue, broker_was_reset=self.broker_was_reset, store=store
        )
        self._redis: Any = None

    def start(self) -> None:
        """Start the lease reaper: runs of dead workers and batches whose messages were lost go back."""
        self._reaper.start()

    def broker_was_reset(self) -> bool:
        """Whether the broker lost its data since last asked (true on the first call).

        A marker key lives in Redis next to the queues; a broker restarted empty no longer has it.
        Other brokers keep their messages across restarts: always false.
        """
        if not self._settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
            return False
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                self._settings.broker_url, socket_timeout=2, socket_connect_timeout=2
            )
        marker = f"{self._settings.broker_key_prefix}gni:broker-marker"
        return bool(self._redis.set(marker, "present", nx=True))

    def enqueue(self, batch_keys: Sequence[str]) -> None:
        if not batch_keys:
            return
        statement = select(Run.batch_key, Run.spec).where(
            Run.batch_key.in_(list(batch_keys)), Run.status == RunStatus.queued
        )
        specs: dict[str, list[RunSpec]] = defaultdict(list)
        with self._database.reading() as session:
            for batch_key, spec in session.execute(statement):
                specs[batch_key].append(RunSpec.model_validate(spec))
        messages = plan_messages(dict(specs), self._settings)
        for sent, message in enumerate(messages):
            if not self.send(message):
                # The broker is down or hung: the rest would wait as long each. They stay queued in
                # the database and the reaper announces them again (GNI_REQUEUE_QUEUED_AFTER_S).
                log.error("%d batches left for the reaper to announce again", len(messages) - sent)
                return
        experiments = sorted({batch_key.partition("/")[0] for batch_key in specs})
        ids = {"experiment_id": experiments[0]} if len(experiments) == 1 else {}
        log.info("announced %d batches of %s", len(messages), ", ".join(experiments), extra=ids)

    def send(self, message: BatchMessage) -> bool:
        """Publish one batch's message; whether the broker took it."""
        try:
            self._app.send_task(
                EXECUTE_BATCH_TASK,
                args=[message.batch_key],
                queue=message.queue,
                routing_key=message.queue,
                priority=message.priority,
                soft_time_limit=message.soft_time_limit_s,
                time_limit=message.time_limit_s,
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 2},
            )
        except Exception as error:
            # The runs stay queued in the database (the source of truth); re-announcing them is
            # the recovery path's job, so the submission itself does not fail.
            log.error("could not send batch %s to the broker: %s", message.batch_key, error)
            return False
        return True

    def stop(self, timeout: float | None = None) -> None:
        self._reaper.stop(timeout)
        self._app.close()
        if self._redis is not None:
            self._redis.close()

    def check(self) -> None:
        try:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as error:
            raise BrokerUnavailable(f"the broker cannot be reached: {type(error).__name__}") from error
