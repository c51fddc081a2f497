"""The Celery task: a thin edge around :func:`worker.batches.handle_batch`.

The message holds one batch key. Infrastructure errors (database, storage or broker unreachable)
are retried with exponential backoff and jitter, up to ``task_max_retries``; anything else has
already been recorded as the runs' failure when it propagates, and is not retried.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task
from celery.signals import worker_process_init, worker_process_shutdown

from gni_service.executor.celery_executor import EXECUTE_BATCH_TASK
from gni_service.settings import get_settings
from worker.app import app
from worker.batches import InfrastructureError, close_worker_context, handle_batch, worker_context

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
        log.warning("batch %s: %s (retry %d of %d)", batch_key, error, retries + 1, max_retries)
        close_worker_context()  # reconnect from scratch next time
        raise self.retry(exc=error, countdown=retry_countdown(retries), max_retries=max_retries) from error
    log.info("batch %s: %s", batch_key, report.statuses or "nothing to do")
    return {"batch_key": batch_key, "statuses": report.statuses}


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _in_each_child(**_: Any) -> None:
    """Start the child clean (no connection inherited through the fork) and load torch here."""
    close_worker_context()
    import gni_engine.execution  # noqa: F401  (torch, after the fork: see the package docstring)


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _child_exits(**_: Any) -> None:
    close_worker_context()
