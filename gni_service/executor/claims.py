"""Claiming work in the database: a conditional update, so that each queued run starts once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from gni_service.models import Run, RunStatus, utcnow

runs_table = cast(Table, Run.__table__)


@dataclass(frozen=True)
class ClaimedRun:
    id: str
    experiment_id: str
    position: int
    attempt: int
    spec: dict[str, Any]
    batch_key: str = ""


def still_held(run: ClaimedRun) -> ColumnElement[bool]:
    """The run is still running under this claim (no reaper re-queued it, no other attempt holds it)."""
    return and_(
        runs_table.c.id == run.id,
        runs_table.c.attempt == run.attempt,
        runs_table.c.status == RunStatus.running.value,
    )


def next_queued_batch(session: Session) -> str | None:
    """The batch key of the longest-waiting queued run, or None when nothing waits."""
    statement = (
        select(Run.batch_key)
        .where(Run.status == RunStatus.queued)
        .order_by(Run.queued_at, Run.experiment_id, Run.position)
        .limit(1)
    )
    return session.scalars(statement).first()


def claim_batch(session: Session, batch_key: str, *, now: datetime | None = None) -> list[ClaimedRun]:
    """Move the batch's queued runs to running and return them; runs claimed elsewhere are skipped."""
    now = now or utcnow()
    statement = (
        update(runs_table)
        .where(runs_table.c.batch_key == batch_key, runs_table.c.status == RunStatus.queued.value)
        .values(
            status=RunStatus.running.value,
            attempt=runs_table.c.attempt + 1,
            started_at=now,
            heartbeat_at=now,
            progress_step=0,
        )
        .returning(
            runs_table.c.id,
            runs_table.c.experiment_id,
            runs_table.c.position,
            runs_table.c.attempt,
            runs_table.c.spec,
            runs_table.c.batch_key,
        )
    )
    rows = session.execute(statement).all()
    claimed = [ClaimedRun(row[0], row[1], int(row[2]), int(row[3]), dict(row[4]), row[5]) for row in rows]
    return sorted(claimed, key=lambda run: (run.experiment_id, run.position))


def requeue_runs(
    session: Session, run_ids: list[str], *, reason: str, attempts: Mapping[str, int] | None = None
) -> int:
    """Put running runs back in the queue; the number re-queued.

    With ``attempts``, only runs still at that attempt are touched (a late worker cannot re-queue
    a run another worker claimed since). A run whose cancellation was asked for is cancelled
    instead. The metric rows the interrupted attempt wrote stay: the next attempt replaces them
    with its checkpoint's (or drops them when it starts from scratch).
    """
    if not run_ids:
        return 0
    held: ColumnElement[bool] = runs_table.c.id.in_(run_ids)
    if attempts is not None:
        held = or_(*((runs_table.c.id == i) & (runs_table.c.attempt == attempts[i]) for i in run_ids))
    running = runs_table.c.status == RunStatus.running.value
    now = utcnow()
    session.execute(
        update(runs_table)
        .where(held, running, runs_table.c.cancel_requested.is_(True))
        .values(status=RunStatus.cancelled.value, finished_at=now, error="cancelled while it was running")
    )
    result = session.execute(
        update(runs_table)
        .where(held, running)
        .values(
            status=RunStatus.queued.value,
            queued_at=now,
            progress_step=0,
            heartbeat_at=None,
            started_at=None,
            error=reason,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def orphaned_runs(session: Session, *, heartbeat_before: datetime | None = None) -> list[str]:
    """Runs marked running; with ``heartbeat_before``, only those whose heartbeat is older."""
    statement = select(Run.id).where(Run.status == RunStatus.running)
    if heartbeat_before is not None:
        statement = statement.where((Run.heartbeat_at < heartbeat_before) | Run.heartbeat_at.is_(None))
    return list(session.scalars(statement))
