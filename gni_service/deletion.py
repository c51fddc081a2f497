"""Deleting a finished experiment: its records in one transaction, then the objects no record names.

An experiment still queued or running is refused (cancel it first): a worker would otherwise write
into rows that are gone. Its runs, metric points and artifact records go with it (the foreign keys
cascade). A stored object goes only when no record names it any more: a run reused elsewhere (see
:mod:`gni_service.reuse`) keeps its objects for the experiments that reuse it. Objects are deleted
after the commit; one left behind by a failure is unreferenced garbage, never a record without its
object. A reused run elsewhere keeps its ``reused_from`` (provenance, not a reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gni_engine.errors import Conflict
from gni_service.experiments import get_experiment
from gni_service.models import ACTIVE_STATUSES, Artifact, Experiment, FiguresState, Run
from gni_service.storage import ArtifactStore


@dataclass(frozen=True)
class DeletedExperiment:
    experiment_id: str
    runs: int
    artifacts: int
    orphaned_keys: list[str]  # stored objects no record names any more: delete them after the commit


def delete_experiment_records(session: Session, experiment_id: str) -> DeletedExperiment:
    """Delete the experiment's rows (the caller commits); refuses one with queued or running runs."""
    experiment = get_experiment(session, experiment_id)
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
    runs = session.scalar(select(func.count()).select_from(Run).where(Run.experiment_id == experiment_id))
    keys = list(
        session.scalars(
            delete(Artifact).where(Artifact.experiment_id == experiment_id).returning(Artifact.key)
        )
    )
    session.execute(delete(Experiment).where(Experiment.id == experiment_id))  # runs, points cascade
    still_named = set(session.scalars(select(Artifact.key).where(Artifact.key.in_(set(keys))).distinct()))
    return DeletedExperiment(experiment_id, int(runs or 0), len(keys), sorted(set(keys) - still_named))


def delete_stored_objects(store: ArtifactStore, keys: Sequence[str]) -> list[str]:
    """Delete these objects from the store; the keys it could not delete (left as garbage)."""
    failed = []
    for key in keys:
        try:
            store.delete(key)
        except Exception:  # the records are gone already: a leftover object harms nothing
            failed.append(key)
    return failed
