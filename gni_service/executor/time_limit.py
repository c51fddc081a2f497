"""Celery's soft time limit, as an exception the executor code can name without importing Celery.

The worker raises it inside a batch that runs past its limit (``plan_messages`` sets the limit from
the batch's FLOPs and its runs' recording time). It is an interruption, not a bug of the batch: the
figures' claim is given back, and the runs' error names the settings that set the limit.
"""

from __future__ import annotations

try:
    from celery.exceptions import SoftTimeLimitExceeded
except ImportError:  # pragma: no cover - the service installed without Celery

    class SoftTimeLimitExceeded(Exception):  # type: ignore[no-redef]
        """Never raised where Celery is absent."""


TIME_LIMIT_REASON = (
    "the batch ran past its time limit (GNI_TASK_TIME_LIMIT_FLOOR_S, GNI_TASK_FLOPS_PER_SECOND); "
    "raise them or cap execution.max_batch_runs"
)

__all__ = ["TIME_LIMIT_REASON", "SoftTimeLimitExceeded"]
