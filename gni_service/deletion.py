"""Deleting a finished experiment: its records in one transaction, then the objects no record names.

An experiment still queued or running is refused (cancel it first), and so is one whose comparison
figures are being drawn: a worker or a drawer would otherwise write into rows that are gone. The
experiment's row is locked first (``FOR UPDATE`` on PostgreSQL; SQLite has one writer at a time),
so a figures claim or a reuse either commits before and is seen, or waits and finds nothing. Its
runs, metric points and artifact records go with it (the foreign keys cascade). A stored object goes
only when no record names it any more: a run reused elsewhere (see :mod:`gni_service.reuse`) keeps
its objects for the experiments that reuse it; the references are counted after the records are
deleted, in the same transaction. The runs' checkpoints (objects without a record) go too.

Objects are deleted after the commit, in the background, a thousand a request on S3: a sweep's
hundred thousand objects take minutes, which no HTTP client should wait for. One left behind by a
failure (or a process that stopped) is unreferenced garbage, never a record without its object.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gni_engine.errors import Conflict, NotFound
from gni_service.artifacts import unnamed_keys
from gni_service.executor.checkpoints import checkpoint_key
from gni_service.models import ACTIVE_STATUSES, Artifact, Experiment, FiguresState, Run
from gni_service.storage import ArtifactStore

log = logging.getLogger(__name__)
OBJECTS_PER_CALL = 1000


@dataclass(frozen=True)
class DeletedExperiment:
    experiment_id: str
    runs: int
    artifacts: int
    orphaned_keys: list[str]  # objects no record names any more, checkpoints included: delete after commit


def delete_experiment_records(session: Session, experiment_id: str) -> DeletedExperiment:
    """Delete the experiment's rows (the caller commits); refuses one that is active or drawing."""
    experiment = session.scalar(select(Experiment).where(Experiment.id == experiment_id).with_for_update())
    if experiment is None:
        raise NotFound(f"no experiment with id '{experiment_id}'")
    if experiment.status in ACTIVE_STATUSES:
        raise Conflict(
            f"experiment '{experiment_id}' is {experiment.status.value}: cancel it and wait until it "
            "stops before deleting it",
            details={"status": experiment.status.value},
        )
    if experiment.figures_state == FiguresState.drawing.value:
        raise Conflict(
            f"experiment '{experiment_id}': its comparison figures are being drawn; delete it once they "
            "are drawn (a drawer that died loses its claim after GNI_FIGURES_LEASE_S)",
            details={"figures_state": experiment.figures_state},
        )
    run_ids = list(session.scalars(select(Run.id).where(Run.experiment_id == experiment_id)))
    owned = delete(Artifact).where(Artifact.experiment_id == experiment_id).returning(Artifact.key)
    keys = list(session.scalars(owned))
    session.execute(delete(Experiment).where(Experiment.id == experiment_id))  # runs, points cascade
    checkpoints = [checkpoint_key(run_id, slot) for run_id in run_ids for slot in (0, 1)]
    return DeletedExperiment(
        experiment_id, len(run_ids), len(keys), unnamed_keys(session, keys) + checkpoints
    )


def delete_stored_objects(store: ArtifactStore, keys: Sequence[str], label: str) -> int:
    """Delete these objects, a thousand at a time; how many could not be (left as garbage, logged)."""
    failed = 0
    for start in range(0, len(keys), OBJECTS_PER_CALL):
        chunk = list(keys[start : start + OBJECTS_PER_CALL])
        try:
            store.delete_many(chunk)
        except Exception as error:  # the records are gone already: a leftover object harms nothing
            failed += len(chunk)
            log.warning("%s: %d stored objects left behind: %s", label, len(chunk), error)
    log.info("%s: deleted %d stored objects", label, len(keys) - failed)
    return failed


def delete_in_background(store: ArtifactStore, keys: Sequence[str], label: str) -> threading.Thread:
    """:func:`delete_stored_objects` in a thread of its own; the thread (already started)."""
    thread = threading.Thread(
        target=delete_stored_objects, args=(store, list(keys), label), name="gni-delete-objects", daemon=True
    )
    thread.start()
    return thread


__all__ = ["DeletedExperiment", "delete_experiment_records", "delete_in_background", "delete_stored_objects"]
