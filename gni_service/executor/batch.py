"""Training one claimed batch through the engine and recording what came out.

Celery-free on purpose: the in-process executor calls :func:`execute_batch` from a thread, a
Celery task will call it from a worker; both first claim the batch with
:func:`~gni_service.executor.claims.claim_batch`.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import bindparam, select, update

from gni_engine.errors import GNIError
from gni_engine.spec import RunSpec
from gni_service.artifacts import ArtifactUpload, store_artifacts
from gni_service.db import Database
from gni_service.executor.checkpoints import StoredCheckpoints
from gni_service.executor.claims import ClaimedRun, requeue_runs, runs_table
from gni_service.executor.experiment_figures import store_experiment_figures
from gni_service.executor.recorder import BatchRecorder, Heartbeat
from gni_service.executor.retrying import is_infrastructure_error, retry_infrastructure
from gni_service.executor.time_limit import TIME_LIMIT_REASON, SoftTimeLimitExceeded
from gni_service.experiments import refresh_experiment
from gni_service.models import Experiment, RunStatus, utcnow
from gni_service.settings import ServiceSettings
from gni_service.storage import ArtifactStore

if TYPE_CHECKING:
    from gni_engine.execution import RunOutcome

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 4000
T = TypeVar("T")


@dataclass(frozen=True)
class BatchContext:
    """What training a batch needs from its process."""

    database: Database
    store: ArtifactStore
    settings: ServiceSettings
    stopping: threading.Event


def execute_batch(context: BatchContext, runs: Sequence[ClaimedRun]) -> None:
    """Train ``runs`` (already claimed) as one engine call, then record outcomes and artifacts.

    Runs resume from their checkpoints when a previous attempt left some (see
    :mod:`~gni_service.executor.checkpoints`). While the database or the artifact store is
    unreachable, training goes on and recording the outcome is retried for
    ``infrastructure_retry_s``; after that the infrastructure error propagates with the runs still
    ``running`` (the caller re-queues them, or their lease expires) and is never recorded as the
    runs' failure.
    """
    if not runs:
        return
    from gni_engine.execution import execute_runs  # torch: imported by the thread that trains

    settings = context.settings
    out_dirs = [settings.work_dir / run.id / f"attempt-{run.attempt}" for run in runs]
    recorder = BatchRecorder(
        context.database,
        runs,
        progress_interval_s=settings.progress_interval_s,
        cancel_poll_interval_s=settings.cancel_poll_interval_s,
        metrics_flush_rows=settings.metrics_flush_rows,
        stopping=context.stopping,
        retry_budget_s=settings.infrastructure_retry_s,
    )
    checkpoints = StoredCheckpoints(
        context.store,
        runs,
        settings.work_dir / "checkpoints",
        every=settings.checkpoint_every_steps,
        min_interval_s=settings.checkpoint_min_interval_s,
        on_started=recorder.restart_metrics,
    )
    run_figures = _retry(context, lambda: _draws_run_figures(context, runs), "reading the experiment")
    started = time.perf_counter()
    try:
        with Heartbeat(recorder, settings.heartbeat_interval_s):
            try:
                specs = [RunSpec.model_validate(run.spec) for run in runs]
                for out_dir in out_dirs:
                    out_dir.mkdir(parents=True, exist_ok=True)
                outcomes = execute_runs(
                    specs,
                    out_dirs,
                    recorder,
                    batch=True,
                    checkpoints=checkpoints,
                    figures=run_figures,
                    figure_processes=settings.figure_processes,
                )
                _retry(context, recorder.flush, "recording metrics")
                trained = time.perf_counter()
            except Exception as error:
                if is_infrastructure_error(error):
                    raise
                # A bug or an unreadable spec must not leave runs 'running' forever: fail them, saying why.
                log.exception("batch of %d runs failed before producing outcomes", len(runs))
                if isinstance(error, SoftTimeLimitExceeded):
                    reason = TIME_LIMIT_REASON
                else:
                    reason = (
                        error.message
                        if isinstance(error, GNIError)
                        else f"internal error: {type(error).__name__}: {error}"
                    )
                _retry(context, lambda: _record_failure(context, runs, reason), "recording a failure")
                checkpoints.discard([run.id for run in runs])
                return
            # The heartbeat goes on while artifacts upload: a long upload is not a lost worker.
            recorded = _retry(
                context, lambda: _record_outcomes(context, runs, outcomes, recorder), "recording outcomes"
            )
        checkpoints.discard(recorded)
        stored = time.perf_counter()
        _store_figures(context, {run.experiment_id for run in runs})
        # Where a batch's time goes, for the logs (docs/performance.md reads them).
        log.info(
            "batch of %d runs: trained in %.2f s (progress, metrics and cancel checks %.2f s), "
            "outcomes and artifacts recorded in %.2f s, experiment figures in %.2f s",
            len(runs),
            trained - started,
            recorder.hook_seconds,
            stored - trained,
            time.perf_counter() - stored,
        )
    finally:
        _remove_quietly(out_dirs)


def _draws_run_figures(context: BatchContext, runs: Sequence[ClaimedRun]) -> bool:
    """Whether the batch's experiment asked for each run's figures (a batch is one experiment's)."""
    with context.database.reading() as session:
        wanted = session.scalar(select(Experiment.run_figures).where(Experiment.id == runs[0].experiment_id))
    return wanted is not False


def _retry(context: BatchContext, action: Callable[[], T], what: str) -> T:
    return retry_infrastructure(
        action, budget_s=context.settings.infrastructure_retry_s, what=what, stopping=context.stopping
    )


def _record_outcomes(
    context: BatchContext, runs: Sequence[ClaimedRun], outcomes: Sequence[RunOutcome], recorder: BatchRecorder
) -> list[str]:
    """One transaction: artifacts stored and verified, then statuses; the ids of the runs recorded.

    A run this attempt no longer holds (its lease expired and another worker has it) is skipped,
    so a late worker stores nothing twice. A storage failure raises (the whole transaction rolls
    back and is retried): a run is never marked succeeded without its artifacts.
    """
    interrupted: list[str] = []
    if context.stopping.is_set():
        asked = recorder.cancelled_by_request()
        interrupted = [runs[o.index].id for o in outcomes if o.status == "cancelled" and o.index not in asked]
    experiments = {run.experiment_id for run in runs}
    finished: list[tuple[ClaimedRun, RunStatus, str | None, dict[str, Any]]] = []
    with context.database.transaction() as session:
        held = _held_runs(session, runs)
        uploads: list[ArtifactUpload] = []
        for outcome in outcomes:
            run = runs[outcome.index]
            if run.id in interrupted or run.id not in held:
                continue
            status = RunStatus(outcome.status)
            files = outcome.files if status == RunStatus.succeeded else {}
            uploads += [
                ArtifactUpload(Path(path), name, run.experiment_id, run.id)
                for name, path in sorted(files.items())
            ]
            finished.append((run, status, outcome.error, outcome.summary))
        store_artifacts(session, context.store, uploads, threads=context.settings.artifact_upload_threads)
        # The artifact records go in with the first statement, as one multi-row insert.
        _finish_runs(session, finished)
        requeue_runs(session, interrupted, reason="re-queued: the executor stopped while it was running")
        for experiment_id in sorted(experiments):
            refresh_experiment(session, experiment_id)
    return [run.id for run, *_ in finished]


def _held_runs(session: Any, runs: Sequence[ClaimedRun]) -> set[str]:
    """The runs still running under this attempt, locked until the transaction ends."""
    statement = (
        select(runs_table.c.id, runs_table.c.attempt)
        .where(runs_table.c.id.in_([run.id for run in runs]), runs_table.c.status == RunStatus.running.value)
        .with_for_update()
    )
    attempts = {run.id: run.attempt for run in runs}
    return {run_id for run_id, attempt in session.execute(statement) if attempts[run_id] == attempt}


def _store_figures(context: BatchContext, experiments: set[str]) -> None:
    for experiment_id in sorted(experiments):
        try:
            store_experiment_figures(context.database, context.store, context.settings, experiment_id)
        except Exception:
            # Figures are a convenience: the runs' outcomes are recorded already.
            log.exception("could not store the figures of experiment %s", experiment_id)


def _finish_runs(
    session: Any, finished: Sequence[tuple[ClaimedRun, RunStatus, str | None, dict[str, Any]]]
) -> None:
    """Write the runs' final statuses: one executemany per kind (a succeeded run's progress is full)."""
    now = utcnow()
    for succeeded in (True, False):
        rows = [
            {
                "run_id": run.id,
                "run_attempt": run.attempt,
                "status": status.value,
                "finished_at": now,
                "error": error[:MAX_ERROR_CHARS] if error else None,
                "summary": json_safe(summary) if summary else None,
                "device": str(summary["device"])[:64] if summary.get("device") is not None else None,
            }
            for run, status, error, summary in finished
            if (status == RunStatus.succeeded) == succeeded
        ]
        if not rows:
            continue
        values: dict[str, Any] = {
            name: bindparam(name) for name in ("status", "finished_at", "error", "summary", "device")
        }
        if succeeded:
            values["progress_step"] = runs_table.c.progress_total
        statement = (
            update(runs_table)
            .where(
                runs_table.c.id == bindparam("run_id"),
                runs_table.c.attempt == bindparam("run_attempt"),
                runs_table.c.status == RunStatus.running.value,
            )
            .values(**values)
        )
        session.execute(statement, rows)


def _record_failure(context: BatchContext, runs: Sequence[ClaimedRun], reason: str) -> None:
    with context.database.transaction() as session:
        _finish_runs(session, [(run, RunStatus.failed, reason, {}) for run in runs])
        for experiment_id in sorted({run.experiment_id for run in runs}):
            refresh_experiment(session, experiment_id)


def json_safe(value: Any) -> Any:
    """The value with non-finite floats replaced by None (JSON, and PostgreSQL's jsonb, have no NaN).

    >>> json_safe({"loss": float("nan"), "r": [1.0, float("inf")], "path": Path("a")})
    {'loss': None, 'r': [1.0, None], 'path': 'a'}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if hasattr(value, "item"):  # numpy and torch scalars
        return json_safe(value.item())
    return str(value)


def _remove_quietly(out_dirs: Sequence[Path]) -> None:
    for out_dir in out_dirs:
        shutil.rmtree(out_dir.parent, ignore_errors=True)
