"""Experiments: creating one from a sweep, planning it, reading, listing and cancelling.

Creating an experiment expands its sweep into runs, groups them into the engine's stacked batches
(``batch_key``) and stores everything in one transaction; the executor then claims whole batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, case, func, insert, or_, select, update
from sqlalchemy.orm import Session

from gni_engine import __version__ as engine_version
from gni_engine.errors import Conflict, NotFound, SpecError
from gni_engine.provenance import engine_fingerprint
from gni_engine.spec import RunSpec
from gni_engine.sweep import Coordinates, SweepSpec, expand_sweep
from gni_service.executor.base import Executor
from gni_service.ids import new_id
from gni_service.models import FINISHED_STATUSES, Experiment, FiguresState, Run, RunStatus, utcnow
from gni_service.pagination import Page, decode_cursor, encode_cursor
from gni_service.reuse import copy_reused_results, find_reusable

PREVIEW_RUNS = 100
NOTHING_TO_DRAW = "no run succeeded: there is nothing to draw"  # figures_error of such an experiment


@dataclass(frozen=True)
class ExpandedSweep:
    """A sweep's runs, in expansion order, with the engine's batch plan."""

    sweep: SweepSpec
    coords: list[Coordinates]
    specs: list[RunSpec]
    batches: list[list[int]]


@dataclass(frozen=True)
class ExperimentPlan:
    """What a dry run reports: the expansion without storing anything."""

    run_count: int
    batches: list[list[int]]
    estimated_flops: float
    runs: list[dict[str, Any]] = field(default_factory=list)


def expand_and_plan(sweep: SweepSpec, *, max_runs: int) -> ExpandedSweep:
    """Expand ``sweep`` (at most ``max_runs`` runs) and group its runs into stacked batches."""
    size = sweep.size()
    if size > max_runs:
        message = f"the sweep expands to {size} runs; this service accepts at most {max_runs} per experiment"
        raise SpecError(message, details=[{"loc": "axes", "msg": message}])
    from gni_engine.execution import plan_batches  # torch: import on first use, not with the API

    expanded = expand_sweep(sweep)
    specs = [spec for _, spec in expanded]
    return ExpandedSweep(sweep, [coords for coords, _ in expanded], specs, plan_batches(specs))


def plan_experiment(sweep: SweepSpec, *, max_runs: int) -> ExperimentPlan:
    from gni_engine.execution import estimate_flops

    expanded = expand_and_plan(sweep, max_runs=max_runs)
    preview = [
        {"position": i, "coords": coords, "spec_hash": spec.spec_hash()}
        for i, (coords, spec) in enumerate(zip(expanded.coords[:PREVIEW_RUNS], expanded.specs, strict=False))
    ]
    return ExperimentPlan(
        run_count=len(expanded.specs),
        batches=expanded.batches,
        estimated_flops=float(sum(estimate_flops(spec) for spec in expanded.specs)),
        runs=preview,
    )


def create_experiment(
    session: Session,
    sweep: SweepSpec,
    *,
    name: str,
    max_runs: int,
    preset: str | None = None,
    owner: str | None = None,
    reuse_results: bool = False,
    run_figures: bool = True,
) -> tuple[Experiment, list[str]]:
    """Store the experiment and its queued runs; returns it with the keys of the batches to train.

    With ``reuse_results``, runs whose spec the owner already trained with this engine (version and
    source fingerprint) are stored succeeded instead, with that run's results (see
    :mod:`gni_service.reuse`); an experiment made only of such runs is finished at once. The caller
    commits, then announces the batch keys to the executor (see :func:`submit_experiment`).
    ``run_figures=False``: the runs are trained without their own figures (a reused run then may come
    from any experiment; with figures, only from one that drew them).
    """
    expanded = expand_and_plan(sweep, max_runs=max_runs)
    now = utcnow()
    hashes = [spec.spec_hash() for spec in expanded.specs]
    reusable = (
        find_reusable(
            session,
            hashes,
            owner=owner,
            engine_version=engine_version,
            engine_fingerprint=engine_fingerprint(),
            with_figures=run_figures,
        )
        if reuse_results
        else {}
    )
    experiment = Experiment(
        id=new_id("exp"),
        name=name,
        owner=owner,
        preset=preset,
        base_spec=sweep.base.model_dump(mode="json"),
        axes=[{"path": path, "values": values} for path, values in sweep.axes.items()],
        spec_hash=sweep.spec_hash(),
        status=RunStatus.queued,
        cancel_requested=False,
        n_runs=len(expanded.specs),
        n_queued=len(expanded.specs),
        n_running=0,
        n_succeeded=0,
        n_failed=0,
        n_cancelled=0,
        created_at=now,
        updated_at=now,
        figures_state=FiguresState.pending.value,
        figures_attempts=0,
        run_figures=run_figures,
    )
    session.add(experiment)
    session.flush()
    batch_of = {index: b for b, indices in enumerate(expanded.batches) for index in indices}
    rows = [
        {
            "id": new_id("run"),
            "experiment_id": experiment.id,
            "position": i,
            "spec": spec.model_dump(mode="json"),
            "spec_hash": spec_hash,
            "coords": coords,
            "batch_key": f"{experiment.id}/{batch_of[i]}",
            "status": RunStatus.queued,
            "attempt": 0,
            "cancel_requested": False,
            "progress_step": 0,
            "progress_total": spec.training.steps,
            "queued_at": now,
            # Every row has every key: one executemany, not one per distinct key set.
            "summary": None,
            "device": None,
            "started_at": None,
            "finished_at": None,
            "reused_from": None,
        }
        for i, (coords, spec, spec_hash) in enumerate(
            zip(expanded.coords, expanded.specs, hashes, strict=True)
        )
    ]
    for row, spec_hash in zip(rows, hashes, strict=True):
        source = reusable.get(spec_hash)
        if source is not None:
            row.update(source.run_values(now), progress_step=row["progress_total"])
    session.execute(insert(Run), rows)
    if reusable:
        copy_reused_results(session, experiment.id, now=now)
        refresh_experiment(session, experiment.id)
    to_train = sorted({batch_of[i] for i, row in enumerate(rows) if row["status"] == RunStatus.queued})
    return experiment, [f"{experiment.id}/{b}" for b in to_train]


def submit_experiment(
    session: Session,
    executor: Executor,
    sweep: SweepSpec,
    *,
    name: str,
    max_runs: int,
    preset: str | None = None,
    owner: str | None = None,
    reuse_results: bool = False,
    run_figures: bool = True,
) -> Experiment:
    """Create the experiment, commit, and hand its batches to the executor."""
    experiment, batch_keys = create_experiment(
        session,
        sweep,
        name=name,
        max_runs=max_runs,
        preset=preset,
        owner=owner,
        reuse_results=reuse_results,
        run_figures=run_figures,
    )
    session.commit()
    executor.enqueue(batch_keys)
    return experiment


def get_experiment(session: Session, experiment_id: str) -> Experiment:
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        raise NotFound(f"no experiment with id '{experiment_id}'")
    return experiment


@dataclass(frozen=True)
class ExperimentQuery:
    status: RunStatus | None = None
    name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    owner: str | None = None


def list_experiments(
    session: Session, query: ExperimentQuery, *, limit: int, cursor: str | None
) -> Page[Experiment]:
    """Newest first, keyset-paginated on (created_at, id)."""
    statement: Select[Experiment] = select(Experiment)
    if query.status is not None:
        statement = statement.where(Experiment.status == query.status)
    if query.name is not None:
        statement = statement.where(Experiment.name == query.name)
    if query.created_after is not None:
        statement = statement.where(Experiment.created_at >= query.created_after)
    if query.created_before is not None:
        statement = statement.where(Experiment.created_at < query.created_before)
    if query.owner is not None:
        statement = statement.where(Experiment.owner == query.owner)
    if cursor is not None:
        position = decode_cursor(cursor, "experiments")
        try:
            created_at = datetime.fromisoformat(str(position["created_at"]))
            last_id = str(position["id"])
            if created_at.tzinfo is None:  # the store refuses naive datetimes (a 500)
                raise ValueError("naive datetime")
            created_at = created_at.astimezone(UTC)  # OverflowError out of range
        except (KeyError, ValueError, OverflowError):
            raise SpecError("invalid cursor", details=[{"loc": "cursor", "msg": "invalid cursor"}]) from None
        statement = statement.where(
            or_(
                Experiment.created_at < created_at,
                and_(Experiment.created_at == created_at, Experiment.id < last_id),
            )
        )
    statement = statement.order_by(Experiment.created_at.desc(), Experiment.id.desc()).limit(limit + 1)
    items = list(session.scalars(statement))
    next_cursor = None
    if len(items) > limit:
        items = items[:limit]
        last = items[-1]
        next_cursor = encode_cursor(
            {"kind": "experiments", "created_at": last.created_at.isoformat(), "id": last.id}
        )
    return Page(items, next_cursor)


def refresh_experiment(session: Session, experiment_id: str) -> Experiment:
    """Recount the experiment's runs by status and derive its status and times from them."""
    experiment = get_experiment(session, experiment_id)
    counts = dict.fromkeys(RunStatus, 0)
    rows = session.execute(
        select(Run.status, func.count(), func.min(Run.started_at), func.max(Run.finished_at))
        .where(Run.experiment_id == experiment_id)
        .group_by(Run.status)
    ).all()
    started = [row[2] for row in rows if row[2] is not None]
    finished = [row[3] for row in rows if row[3] is not None]
    for status, count, _, _ in rows:
        counts[RunStatus(status)] = int(count)
    experiment.n_queued = counts[RunStatus.queued]
    experiment.n_running = counts[RunStatus.running]
    experiment.n_succeeded = counts[RunStatus.succeeded]
    experiment.n_failed = counts[RunStatus.failed]
    experiment.n_cancelled = counts[RunStatus.cancelled]
    experiment.status = derive_status(counts, cancel_requested=experiment.cancel_requested)
    experiment.started_at = min(started) if started else None
    experiment.finished_at = max(finished) if experiment.status in FINISHED_STATUSES and finished else None
    if (
        experiment.status in FINISHED_STATUSES
        and experiment.n_succeeded == 0
        and experiment.figures_state == FiguresState.pending.value
    ):
        # Figures compare succeeded runs; without one nobody will ever claim them ("pending" forever).
        experiment.figures_state = FiguresState.failed.value
        experiment.figures_error = NOTHING_TO_DRAW
    experiment.updated_at = utcnow()
    return experiment


def derive_status(counts: dict[RunStatus, int], *, cancel_requested: bool) -> RunStatus:
    """An experiment is active while any run is; once all are done, the worst outcome names it.

    >>> derive_status({RunStatus.queued: 1, RunStatus.succeeded: 1}, cancel_requested=False)
    <RunStatus.running: 'running'>
    >>> derive_status({RunStatus.succeeded: 3, RunStatus.failed: 1}, cancel_requested=False)
    <RunStatus.failed: 'failed'>
    """
    get = counts.get
    if get(RunStatus.queued, 0) or get(RunStatus.running, 0):
        started = sum(get(s, 0) for s in (RunStatus.running, *FINISHED_STATUSES))
        return RunStatus.running if started else RunStatus.queued
    if cancel_requested:
        return RunStatus.cancelled
    if get(RunStatus.failed, 0):
        return RunStatus.failed
    if get(RunStatus.cancelled, 0):
        return RunStatus.cancelled
    return RunStatus.succeeded


@dataclass(frozen=True)
class ExperimentProgress:
    steps_done: int
    steps_total: int

    @property
    def fraction(self) -> float:
        return self.steps_done / self.steps_total if self.steps_total else 1.0


def experiment_progress(session: Session, experiment_id: str) -> ExperimentProgress:
    """Training steps done over all runs (a finished run counts as all its steps)."""
    finished = Run.status.in_([s.value for s in FINISHED_STATUSES])
    done, total = session.execute(
        select(
            func.coalesce(func.sum(case((finished, Run.progress_total), else_=Run.progress_step)), 0),
            func.coalesce(func.sum(Run.progress_total), 0),
        ).where(Run.experiment_id == experiment_id)
    ).one()
    return ExperimentProgress(int(done), int(total))


def cancel_experiment(session: Session, experiment_id: str) -> Experiment:
    """Cancel queued runs now and ask running ones to stop; cancelling twice is harmless."""
    experiment = get_experiment(session, experiment_id)
    if experiment.status in (RunStatus.succeeded, RunStatus.failed):
        raise Conflict(
            f"experiment '{experiment_id}' has already {experiment.status.value}; there is nothing to cancel",
            details={"status": experiment.status.value},
        )
    now = utcnow()
    experiment.cancel_requested = True
    session.execute(
        update(Run)
        .where(Run.experiment_id == experiment_id, Run.status == RunStatus.queued)
        .values(status=RunStatus.cancelled, finished_at=now, error="cancelled before it started")
    )
    session.execute(
        update(Run)
        .where(Run.experiment_id == experiment_id, Run.status == RunStatus.running)
        .values(cancel_requested=True)
    )
    session.flush()
    return refresh_experiment(session, experiment_id)


def runs_of(session: Session, experiment_id: str, statuses: Sequence[RunStatus]) -> list[Run]:
    statement = select(Run).where(Run.experiment_id == experiment_id, Run.status.in_(list(statuses)))
    return list(session.scalars(statement.order_by(Run.position)))
