"""One batch, as a worker handles it: claim, train, record; Celery-free so it is tested without a broker.

:func:`handle_batch` raises :class:`InfrastructureError` only when the database or the artifact
store cannot be reached; the task retries those. Everything else is recorded in the database
before the function returns or re-raises: a run that diverged is a failed run, not a retry.
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from gni_service.context import build_artifact_store
from gni_service.db import Database
from gni_service.executor.claims import ClaimedRun, claim_batch, requeue_runs, runs_table, still_held
from gni_service.executor.retrying import is_infrastructure_error
from gni_service.experiments import refresh_experiment
from gni_service.models import Run, RunStatus, utcnow
from gni_service.settings import get_settings
from gni_service.structured_logging import log_context

if TYPE_CHECKING:
    from gni_service.executor.batch import BatchContext

log = logging.getLogger(__name__)


class InfrastructureError(Exception):
    """The database or the artifact store is unreachable: the batch may succeed if tried later."""


@dataclass(frozen=True)
class BatchReport:
    """What became of one message: the runs it claimed and their final statuses."""

    batch_key: str
    statuses: dict[str, str] = field(default_factory=dict)

    @property
    def claimed(self) -> int:
        return len(self.statuses)


@lru_cache(maxsize=1)
def worker_context() -> BatchContext:
    """This process's database, store and settings; built in the child, after any fork."""
    from gni_service.executor.batch import BatchContext

    settings = get_settings()
    database = Database(settings.resolved_database_url, pool_size=2, max_overflow=2)
    # A worker never stops a batch half-way: on shutdown it finishes, so the acknowledged message
    # and the database agree.
    return BatchContext(database, build_artifact_store(settings), settings, threading.Event())


def close_worker_context() -> None:
    if worker_context.cache_info().currsize:
        worker_context().database.dispose()
    worker_context.cache_clear()


def warm_up() -> None:
    """Load what a batch needs (torch, the engine, its CPU noise kernel, matplotlib) and connect,
    before taking work.

    Called in each worker child after the fork, so that the first message is not kept waiting
    (the imports alone take seconds). Not reaching the database here is not an error: the first
    batch connects, or retries, as it would anyway.
    """
    import gni_engine.execution  # noqa: F401  (torch: after the fork, see the package docstring)
    import gni_engine.figures  # noqa: F401  (matplotlib)
    from gni_engine.counter_noise import cpu_kernels

    cpu_kernels()  # the CPU noise kernel: compiled once per machine (seconds), loaded and checked

    context = worker_context()
    try:
        context.database.check()
    except Exception as error:
        log.warning("warm-up: the database cannot be reached yet (%s)", type(error).__name__)
    # What is loaded now lives as long as the child: keep the garbage collector's full passes
    # (frequent while figures are drawn) from walking it again and again, as the API does.
    gc.collect()
    gc.freeze()


def experiment_of(batch_key: str | None) -> str | None:
    """The experiment a batch key belongs to (keys are ``<experiment id>/<batch number>``).

    >>> experiment_of("exp_1f/0")
    'exp_1f'
    """
    if not batch_key:
        return None
    return batch_key.partition("/")[0] or None


def handle_batch(context: BatchContext, batch_key: str) -> BatchReport:
    """Claim the batch's queued runs, train them, record the outcome; see the module docstring."""
    try:
        context.store.check()
        runs = _claim(context, batch_key)
    except Exception as error:
        if is_infrastructure_error(error):
            raise InfrastructureError(f"cannot claim batch {batch_key}: {error}") from error
        raise
    if not runs:
        log.info("batch %s: nothing queued (finished, cancelled or claimed elsewhere)", batch_key)
        return BatchReport(batch_key)
    with log_context(experiment_id=runs[0].experiment_id, run_ids=[run.id for run in runs]):
        log.info("batch %s: claimed %d runs (attempt %d)", batch_key, len(runs), max(r.attempt for r in runs))
        _execute(context, batch_key, runs)
        return BatchReport(batch_key, _statuses(context, runs))


def _execute(context: BatchContext, batch_key: str, runs: list[ClaimedRun]) -> None:
    from gni_service.executor.batch import execute_batch

    try:
        execute_batch(context, runs)
    except Exception as error:
        if is_infrastructure_error(error):
            # Put the runs back so that the retry claims them again (unless the database is
            # still down: then they stay 'running' until the lease reaper finds them).
            _settle_quietly(context, runs, failed=None)
            raise InfrastructureError(f"batch {batch_key} could not be recorded: {error}") from error
        _settle_quietly(context, runs, failed=f"internal error: {type(error).__name__}: {error}")
        raise


def _claim(context: BatchContext, batch_key: str) -> list[ClaimedRun]:
    with context.database.transaction() as session:
        runs = claim_batch(session, batch_key)
        for experiment_id in sorted({run.experiment_id for run in runs}):
            refresh_experiment(session, experiment_id)
    return runs


def _settle_quietly(context: BatchContext, runs: list[ClaimedRun], *, failed: str | None) -> None:
    """Re-queue (``failed`` None) or fail this attempt's runs still marked running; never raises."""
    try:
        with context.database.transaction() as session:
            if failed is None:
                requeue_runs(
                    session,
                    [run.id for run in runs],
                    reason="re-queued: infrastructure error",
                    attempts={run.id: run.attempt for run in runs},
                )
            else:
                for run in runs:
                    session.execute(
                        update(runs_table)
                        .where(still_held(run))
                        .values(status=RunStatus.failed.value, finished_at=utcnow(), error=failed[:4000])
                    )
            for experiment_id in sorted({run.experiment_id for run in runs}):
                refresh_experiment(session, experiment_id)
    except Exception:
        log.exception("could not settle %d runs of a broken batch", len(runs))


def _statuses(context: BatchContext, runs: list[ClaimedRun]) -> dict[str, str]:
    with context.database.reading() as session:
        rows = session.execute(select(Run.id, Run.status).where(Run.id.in_([run.id for run in runs])))
        return {run_id: RunStatus(status).value for run_id, status in rows}
