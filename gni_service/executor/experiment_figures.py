"""Experiment-level comparison figures (baseline vs GNI side by side, layer norms across σ, …).

Drawing them is the engine's job (``gni_engine.figures.comparison_figures``); this module gathers a
finished experiment's succeeded runs from the database (coordinates, spec, metric rows, summary),
hands them over, and stores the files that come back as artifacts of the experiment.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from gni_engine.recording import MetricRow
from gni_engine.spec import RunSpec
from gni_service.artifacts import list_experiment_artifacts, store_artifact
from gni_service.db import Database
from gni_service.experiments import get_experiment
from gni_service.models import MetricPoint, Run, RunStatus
from gni_service.settings import ServiceSettings
from gni_service.storage import ArtifactStore, StorageError

if TYPE_CHECKING:
    from gni_engine.figures import ComparisonRun

log = logging.getLogger(__name__)


def store_experiment_figures(
    database: Database, store: ArtifactStore, settings: ServiceSettings, experiment_id: str
) -> list[str]:
    """Draw and store the figures of a finished experiment once; the names of those stored."""
    with database.reading() as session:
        experiment = get_experiment(session, experiment_id)
        if experiment.status not in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled):
            return []
        if list_experiment_artifacts(session, experiment_id, include_runs=False):
            return []
        runs = list(
            session.scalars(
                select(Run)
                .where(Run.experiment_id == experiment_id, Run.status == RunStatus.succeeded)
                .order_by(Run.position)
            )
        )
        if not runs:
            return []
        inputs = _figure_inputs(session, runs)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix=f"{experiment_id}-figures-", dir=settings.work_dir))
    try:
        try:
            from gni_engine.figures import comparison_figures

            files = comparison_figures(inputs, out_dir)
        except Exception:
            # Figures are a convenience: their failure must not fail the experiment's results.
            log.exception("experiment figures failed for %s", experiment_id)
            return []
        stored = []
        with database.transaction() as session:
            for name, path in sorted(files.items()):
                try:
                    store_artifact(
                        session,
                        store,
                        Path(path),
                        name=f"figures/{name}",
                        experiment_id=experiment_id,
                        run_id=None,
                    )
                    stored.append(name)
                except (StorageError, OSError):
                    log.exception("could not store experiment figure %s of %s", name, experiment_id)
        return stored
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _figure_inputs(session: Session, runs: list[Run]) -> list[ComparisonRun]:
    """One ``(coordinates, spec, metric rows, summary)`` per run, as the engine's figures take them."""
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
