"""Reusing finished results: a run whose spec its owner already trained need not train again.

When an experiment is created with ``reuse_results``, each expanded run whose canonical
``spec_hash`` matches a succeeded, trained (not itself reused) run is created succeeded at once,
with ``reused_from`` naming that run. A source must belong to the same owner (another owner's
results are that owner's data, never shown to anyone else) and carry the same engine version and
code in its summary (``engine_version`` and ``engine_fingerprint``, a hash of the engine's source
files, written by the engine into every summary), so a result is reused only where this service
would train the very same thing with the very same code.

A reused run gets its source's summary and device, a copy of its metric series (one
``INSERT … SELECT`` in the database, however long the series), and artifact records of its own
(new ids, this experiment and run) that name the source's stored objects.

Why records share objects instead of copying them: a stored object is written once, under a key
made of a fresh artifact id, and never overwritten, so a second record naming it reads exactly the
bytes the first does. Sharing keeps reuse one database transaction with no store round-trip: a
reused sweep of thousands of runs is created as fast as a queued one, works while the store is
down, leaves no half-copied objects behind when its transaction rolls back, and does not store the
same weights twice. The price is that a key no longer belongs to one record, so deletion counts
references: :func:`gni_service.artifacts.delete_artifacts` removes an object only once no record
names it, and the source records are read here ``FOR SHARE`` (PostgreSQL; SQLite has one writer
at a time) so that a concurrent deletion either waits for this transaction and then sees the new
records, or commits first and leaves nothing to copy.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, insert, select
from sqlalchemy.orm import Session

from gni_service.field_paths import FieldPath
from gni_service.ids import new_id
from gni_service.json_sql import json_string
from gni_service.models import Artifact, Experiment, MetricPoint, Run, RunStatus

ENGINE_VERSION = FieldPath("summary", ("engine_version",), "summary.engine_version")
ENGINE_FINGERPRINT = FieldPath("summary", ("engine_fingerprint",), "summary.engine_fingerprint")
# Well under SQLite's 32,766 bound parameters and PostgreSQL's 65,535.
HASHES_PER_QUERY = 500


@dataclass(frozen=True)
class ReusableRun:
    """A trained run whose result another run with the same spec can take."""

    id: str
    summary: dict[str, Any]
    device: str | None

    def run_values(self, now: datetime) -> dict[str, Any]:
        """The columns of a new run that takes this result (finished at ``now``, never claimed)."""
        return {
            "status": RunStatus.succeeded,
            "summary": self.summary,
            "device": self.device,
            "started_at": now,
            "finished_at": now,
            "reused_from": self.id,
        }


def find_reusable(
    session: Session,
    spec_hashes: Collection[str],
    *,
    owner: str | None,
    engine_version: str,
    engine_fingerprint: str,
    with_figures: bool = True,
) -> dict[str, ReusableRun]:
    """For each spec hash that has one, the most recently finished trained run to reuse.

    ``with_figures``: only runs of experiments that drew their runs' figures (a reused run carries
    its source's artifacts, so a run without figures cannot stand in for one with them).
    """
    dialect = session.get_bind().dialect.name
    owned: ColumnElement[bool] = Experiment.owner.is_(None) if owner is None else Experiment.owner == owner
    hashes = sorted(set(spec_hashes))
    found: dict[str, ReusableRun] = {}
    for start in range(0, len(hashes), HASHES_PER_QUERY):
        statement = (
            select(Run.spec_hash, Run.id, Run.summary, Run.device)
            .join(Experiment, Experiment.id == Run.experiment_id)
            .where(
                Run.spec_hash.in_(hashes[start : start + HASHES_PER_QUERY]),
                Run.status == RunStatus.succeeded,
                Run.reused_from.is_(None),
                owned,
                json_string(ENGINE_VERSION, dialect) == engine_version,
                json_string(ENGINE_FINGERPRINT, dialect) == engine_fingerprint,
            )
            .order_by(Run.finished_at.desc(), Run.id)
            # Held to the commit (PostgreSQL): deleting the source's experiment waits for this
            # reuse, then finds the copies naming its objects, instead of emptying them under it.
            .with_for_update(read=True, of=Run)
        )
        if with_figures:
            statement = statement.where(Experiment.run_figures.is_(True))
        for spec_hash, run_id, summary, device in session.execute(statement):
            found.setdefault(spec_hash, ReusableRun(run_id, dict(summary), device))
    return found


def copy_reused_results(session: Session, experiment_id: str, *, now: datetime) -> None:
    """Copy metric series and artifact records into the experiment's runs that have ``reused_from`` set."""
    reused = (Run.experiment_id == experiment_id, Run.reused_from.is_not(None))
    # In the database: a series can hold millions of points, none of which needs to pass through here.
    session.execute(
        insert(MetricPoint).from_select(
            ["run_id", "name", "step", "value"],
            select(Run.id, MetricPoint.name, MetricPoint.step, MetricPoint.value)
            .join(MetricPoint, MetricPoint.run_id == Run.reused_from)
            .where(*reused)
            .order_by(Run.id, MetricPoint.id),
        )
    )
    sources = session.execute(
        select(Run.id, Artifact)
        .join(Artifact, Artifact.run_id == Run.reused_from)
        .where(*reused)
        .order_by(Run.id, Artifact.name, Artifact.id)
        .with_for_update(read=True, of=Artifact)
    ).all()
    records = [
        {
            "id": new_id("art"),
            "experiment_id": experiment_id,
            "run_id": run_id,
            "kind": source.kind,
            "name": source.name,
            "key": source.key,
            "content_type": source.content_type,
            "size": source.size,
            "sha256": source.sha256,
            "created_at": now,
        }
        for run_id, source in sources
    ]
    if records:
        session.execute(insert(Artifact), records)
