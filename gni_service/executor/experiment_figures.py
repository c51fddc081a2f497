"""Experiment-level comparison figures (baseline vs GNI side by side, layer norms across σ, …).

Drawing them is the engine's job (``gni_engine.figures.comparison_figures``); this module gathers a
finished experiment's succeeded runs from the database (coordinates, spec, metric rows, summary),
hands them over, and stores the files that come back as artifacts of the experiment.

Drawing is claimed like a run: a conditional update moves ``figures_state`` from ``pending`` (or
from a ``drawing`` whose claim is older than ``figures_lease_s``) to ``drawing``, stamps
``figures_claimed_at`` and counts the attempt, so two processes never draw the same experiment at
once. The worker that finishes an experiment's last run draws its figures straight away; if it dies
first, the reaper (:class:`~gni_service.executor.leases.LeaseReaper`) finds the experiment among
:func:`experiments_missing_figures` once ``figures_grace_s`` has passed, or once the dead claim
expires, and draws them. The figures are stored and marked ``drawn`` in one transaction that only
commits while the attempt still holds the claim, so a late process stores nothing twice. A drawing
that raises is a bug, not an outage: it is marked ``failed`` with its reason and not tried again;
a store that cannot be reached releases the claim for a later attempt, up to
``figures_max_attempts``.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ColumnElement, Table, and_, or_, select, update
from sqlalchemy.orm import Session

from gni_engine.spec import RunSpec
from gni_service.artifacts import ArtifactUpload, store_artifacts
from gni_service.db import Database
from gni_service.executor.time_limit import SoftTimeLimitExceeded
from gni_service.models import (
    FINISHED_STATUSES,
    Experiment,
    FiguresState,
    MetricPoint,
    Run,
    RunStatus,
    utcnow,
)
from gni_service.settings import ServiceSettings
from gni_service.storage import ArtifactStore, StorageError

if TYPE_CHECKING:
    from gni_engine.figures import ComparisonRun
    from gni_engine.recording import MetricRow

log = logging.getLogger(__name__)
experiments_table = cast(Table, Experiment.__table__)
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class FigureClaim:
    """This process's right to draw an experiment's figures: valid while ``attempt`` is current."""

    experiment_id: str
    attempt: int


def _claimable(now: datetime, settings: ServiceSettings) -> ColumnElement[bool]:
    """Finished with a succeeded run, not drawn or failed, unclaimed or its claim expired, attempts left."""
    table = experiments_table.c
    expired = now - timedelta(seconds=settings.figures_lease_s)
    return and_(
        table.status.in_([s.value for s in FINISHED_STATUSES]),
        table.n_succeeded > 0,
        table.figures_attempts < settings.figures_max_attempts,
        or_(
            table.figures_state == FiguresState.pending.value,
            and_(table.figures_state == FiguresState.drawing.value, table.figures_claimed_at < expired),
        ),
    )


def claim_figures(
    session: Session, experiment_id: str, settings: ServiceSettings, *, now: datetime | None = None
) -> FigureClaim | None:
    """Claim drawing the experiment's figures; None when they are not due or another process has them."""
    now = now or utcnow()
    table = experiments_table.c
    attempt = session.execute(
        update(experiments_table)
        .where(table.id == experiment_id, _claimable(now, settings))
        .values(
            figures_state=FiguresState.drawing.value,
            figures_claimed_at=now,
            figures_attempts=table.figures_attempts + 1,
        )
        .returning(table.figures_attempts)
    ).scalar()
    return None if attempt is None else FigureClaim(experiment_id, int(attempt))


def _settle(session: Session, claim: FigureClaim, state: FiguresState, error: str | None) -> bool:
    """Leave ``drawing`` for ``state`` if the claim still holds; whether it did."""
    table = experiments_table.c
    result = session.execute(
        update(experiments_table)
        .where(
            table.id == claim.experiment_id,
            table.figures_state == FiguresState.drawing.value,
            table.figures_attempts == claim.attempt,
        )
        .values(
            figures_state=state.value,
            figures_claimed_at=None,
            figures_error=error[:MAX_ERROR_CHARS] if error else None,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def experiments_missing_figures(
    session: Session, settings: ServiceSettings, *, now: datetime | None = None, limit: int = 10
) -> list[str]:
    """Experiments whose figures the reaper should draw: claimable and finished ``figures_grace_s`` ago."""
    now = now or utcnow()
    settled = now - timedelta(seconds=settings.figures_grace_s)
    statement = (
        select(Experiment.id)
        .where(_claimable(now, settings))
        .where(or_(Experiment.finished_at.is_(None), Experiment.finished_at <= settled))
        .order_by(Experiment.finished_at, Experiment.id)
        .limit(limit)
    )
    return list(session.scalars(statement))


def _abandoned(now: datetime, settings: ServiceSettings) -> ColumnElement[bool]:
    """Drawing under an expired claim that was the last one allowed."""
    table = experiments_table.c
    expired = now - timedelta(seconds=settings.figures_lease_s)
    return and_(
        table.figures_state == FiguresState.drawing.value,
        table.figures_claimed_at < expired,
        table.figures_attempts >= settings.figures_max_attempts,
    )


def abandoned_figures(session: Session, settings: ServiceSettings, *, now: datetime | None = None) -> bool:
    """Whether some figures wait for :func:`give_up_abandoned_figures` (a read, before any write)."""
    found = session.scalar(
        select(experiments_table.c.id).where(_abandoned(now or utcnow(), settings)).limit(1)
    )
    return found is not None


def give_up_abandoned_figures(
    session: Session, settings: ServiceSettings, *, now: datetime | None = None
) -> int:
    """Mark failed the figures whose last allowed claim expired (their process died each time)."""
    result = session.execute(
        update(experiments_table)
        .where(_abandoned(now or utcnow(), settings))
        .values(
            figures_state=FiguresState.failed.value,
            figures_claimed_at=None,
            figures_error=(
                f"gave up after {settings.figures_max_attempts} attempts: "
                "the process drawing the figures stopped each time"
            ),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def store_experiment_figures(
    database: Database, store: ArtifactStore, settings: ServiceSettings, experiment_id: str
) -> list[str]:
    """Claim, draw and store the figures of a finished experiment; the names of those stored.

    Returns ``[]`` when they are not due (running, drawn, failed, claimed elsewhere) or could not
    be drawn or stored (recorded on the experiment).
    """
    with database.reading() as session:
        # A read first: most batches end while their experiment still runs, and need no write lock.
        due = session.scalar(
            select(experiments_table.c.id).where(
                experiments_table.c.id == experiment_id, _claimable(utcnow(), settings)
            )
        )
    if due is None:
        return []
    with database.transaction() as session:
        claim = claim_figures(session, experiment_id, settings)
    if claim is None:
        return []
    with database.reading() as session:
        runs = list(
            session.scalars(
                select(Run)
                .where(Run.experiment_id == experiment_id, Run.status == RunStatus.succeeded)
                .order_by(Run.position)
            )
        )
        inputs = _figure_inputs(session, runs)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix=f"{experiment_id}-figures-", dir=settings.work_dir))
    try:
        try:
            from gni_engine.figures import comparison_figures

            files = comparison_figures(inputs, out_dir)
        except SoftTimeLimitExceeded:
            # The batch's time limit, not a drawing bug: give the claim back; the reaper redraws.
            log.warning("drawing the figures of %s was interrupted by a time limit", experiment_id)
            with database.transaction() as session:
                _settle(session, claim, FiguresState.pending, "interrupted by the task's time limit")
            return []
        except Exception as error:
            # A drawing bug fails the same way next time: record it instead of retrying forever.
            log.exception("experiment figures failed for %s", experiment_id)
            with database.transaction() as session:
                _settle(session, claim, FiguresState.failed, f"{type(error).__name__}: {error}")
            return []
        return _store(database, store, settings, claim, files)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _store(
    database: Database,
    store: ArtifactStore,
    settings: ServiceSettings,
    claim: FigureClaim,
    files: dict[str, Any],
) -> list[str]:
    """Store every figure and mark them drawn, all or nothing, while the claim holds."""
    experiment_id = claim.experiment_id
    try:
        with database.transaction() as session:
            # First: on PostgreSQL this locks the row, so no other process re-claims meanwhile.
            if not _settle(session, claim, FiguresState.drawn, None):
                log.warning("the figures of %s were claimed again meanwhile: not stored", experiment_id)
                return []
            uploads = [
                ArtifactUpload(Path(path), f"figures/{name}", experiment_id, None)
                for name, path in sorted(files.items())
            ]
            store_artifacts(session, store, uploads, threads=settings.artifact_upload_threads)
    except (StorageError, OSError) as error:
        # The store is away: give the claim back for a later attempt, or give up past the last.
        log.exception("could not store the figures of experiment %s", experiment_id)
        last = claim.attempt >= settings.figures_max_attempts
        reason = f"could not store the figures (attempt {claim.attempt}): {error}"
        with database.transaction() as session:
            _settle(session, claim, FiguresState.failed if last else FiguresState.pending, reason)
        return []
    return sorted(files)


def _figure_inputs(session: Session, runs: list[Run]) -> list[ComparisonRun]:
    """One ``(coordinates, spec, metric rows, summary)`` per run, as the engine's figures take them."""
    # torch comes with the engine's recording module: imported here, in the drawing process, so
    # that importing the executors (the reaper imports this module) does not load torch in a parent
    from gni_engine.recording import MetricRow

    metrics: dict[str, list[MetricRow]] = {run.id: [] for run in runs}
    statement = (
        select(MetricPoint.run_id, MetricPoint.step, MetricPoint.name, MetricPoint.value)
        .where(MetricPoint.run_id.in_(list(metrics)))
        .order_by(MetricPoint.run_id, MetricPoint.step, MetricPoint.id)
    )
    for run_id, step, name, value in session.execute(statement):
        metrics[run_id].append(MetricRow(int(step), str(name), math.nan if value is None else float(value)))
    return [
        (dict(run.coords), RunSpec.model_validate(run.spec), metrics[run.id], dict(run.summary or {}))
        for run in runs
    ]
