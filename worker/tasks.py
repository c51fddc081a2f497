"""The Celery task: a thin edge around :func:`worker.batches.handle_batch`.

The message holds one batch key. Infrastructure errors (database, storage or broker unreachable)
are retried with exponential backoff and jitter, up to ``task_max_retries``; anything else has
already been recorded as the runs' failure when it propagates, and is not retried.

Every line the child logs while it handles a message, Celery's own included, carries the task id,
the batch key and the experiment id (set by ``task_prerun``, cleared by ``task_postrun``); once the
batch is claimed, also its run ids (:func:`~worker.batches.handle_batch`).
"""

from __future__ import annotations

import logging
import random
from contextlib import ExitStack
from typing import Any

from celery import Task
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_process_shutdown

from gni_service.executor.celery_executor import EXECUTE_BATCH_TASK
from gni_service.settings import get_settings
from gni_service.structured_logging import bind_ids, log_context
from worker.app import app
from worker.batches import (
    InfrastructureError,
    close_worker_context,
    experiment_of,
    handle_batch,
    warm_up,
    worker_context,
)

log = logging.getLogger(__name__)
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0


def retry_countdown(retries: int, *, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, base · 2^retries)].

    >>> 0.0 <= retry_countdown(3) <= 16.0
    True
    """
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0**retries)
    return (rng or random).uniform(0.0, ceiling)


@app.task(name=EXECUTE_BATCH_TASK, bind=True, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
def execute_batch_task(self: Task, batch_key: str) -> dict[str, Any]:
    """Train the batch ``batch_key`` (ids only in the message) and record its runs' outcomes."""
    try:
        report = handle_batch(worker_context(), batch_key)
    except InfrastructureError as error:
        retries = int(self.request.retries)
        max_retries = get_settings().task_max_retries
        if retries >= max_retries:
            log.error(
                "batch %s: %s; giving up after %d retries: its runs stay queued until the reaper "
                "announces them again (GNI_REQUEUE_QUEUED_AFTER_S)",
                batch_key,
                error,
                max_retries,
            )
        else:
            log.warning("batch %s: %s (retry %d of %d)", batch_key, error, retries + 1, max_retries)
        close_worker_context()  # reconnect from scratch next time
        raise self.retry(exc=error, countdown=retry_countdown(retries), max_retries=max_retries) from error
    bind_ids(run_ids=list(report.statuses) or None)  # also on Celery's own "succeeded" line
    log.info("batch %s: %s", batch_key, report.statuses or "nothing to do")
    return {"batch_key": batch_key, "statuses": report.statuses}


_task_log_contexts: dict[str, ExitStack] = {}


@task_prerun.connect  # type: ignore[untyped-decorator]
def _log_ids_of_the_task(task_id: str, task: Task, args: Any = None, **_: Any) -> None:
    if task.name != EXECUTE_BATCH_TASK:
        return
    key = str(args[0]) if args else None
    stack = ExitStack()
    # run_ids named here (unset) so that the block's end also clears what bind_ids sets later.
    ids = log_context(task_id=task_id, batch_key=key, experiment_id=experiment_of(key), run_ids=None)
    stack.enter_context(ids)
    _task_log_contexts[task_id] = stack


@task_postrun.connect  # type: ignore[untyped-decorator]
def _end_log_ids_of_the_task(task_id: str, **_: Any) -> None:
    stack = _task_log_contexts.pop(task_id, None)
    if stack is not None:
        stack.close()


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _in_each_child(**_: Any) -> None:
    """Start the child clean (no connection inherited through the fork), then load torch and warm up.

    Everything the first message would otherwise wait for (torch, the batch code, matplotlib, the
    database and store clients, a first connection) is paid here, before the child takes work.
    """
    close_worker_context()
    warm_up()


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _child_exits(**_: Any) -> None:
    close_worker_context()
