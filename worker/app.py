"""The workers' Celery app; configured from the service settings on first use, not at import.

``celery -A worker.app worker`` finds :data:`app`; the tasks are registered by importing
:mod:`worker.tasks` (listed in ``include``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from gni_service.executor.celery_executor import celery_config
from gni_service.settings import get_settings


def _configuration() -> dict[str, Any]:
    config = celery_config(get_settings())
    # Take one message at a time per child, and drop the broker's copy only once the batch is
    # recorded (acks_late): a worker dying mid-batch leaves the message to be delivered again.
    config.update(
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_lost_wait=30.0,
        # A child imports torch and warms up before it reports ready (worker.tasks); Celery's 4 s
        # default is less than that takes on a busy node, and a child late by it is killed and
        # replaced, again and again.
        worker_proc_alive_timeout=120.0,
    )
    return config


app = Celery("gni-worker", include=["worker.tasks"], set_as_current=False)
app.add_defaults(_configuration)
