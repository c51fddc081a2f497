"""What the fault tests share: tiny specs, submitting, waiting, and the uninterrupted reference."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from sqlalchemy import select

from gni_engine.spec import RunSpec
from gni_engine.sweep import SweepSpec
from gni_engine.training import BatchTrainer, RunState
from gni_service.db import Database
from gni_service.experiments import cancel_experiment, create_experiment, get_experiment
from gni_service.models import Artifact, Experiment, MetricPoint, Run, RunStatus
from gni_service.runs import cancel_run
from gni_service.settings import ServiceSettings

# ~2.5 ms a step for two stacked runs on this machine: a run lasts seconds, not minutes.
LONG_SPEC = {
    "task": "regression",
    "data": {"name": "sinusoids", "n_points": 32, "frequencies": [1.0, 3.0]},
    "model": {"hidden": [8]},
    "noise": {"sigma": 0.1},
    "training": {"steps": 1500, "lr": 0.01, "mode": "gni"},
    "analyses": {"record_every": 50, "noise_gap_samples": 4},
}
SEEDS = {"seed": [0, 1]}
FINISHED = {RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled}


def with_steps(steps: int) -> dict:
    return {**LONG_SPEC, "training": {**LONG_SPEC["training"], "steps": steps}}


def submit(
    database: Database, spec: dict, axes: dict | None = None, *, run_figures: bool = False
) -> tuple[str, list[str]]:
    """A new experiment's id and its batch keys (to announce to the executor).

    Its runs draw no figures of their own unless asked: these tests are about what survives faults,
    and drawing costs seconds a run (the experiment's comparison figures are drawn either way).
    """
    sweep = SweepSpec.model_validate({"base": spec, "axes": axes or {}})
    with database.transaction() as session:
        experiment, keys = create_experiment(
            session, sweep, name="fault", max_runs=50, run_figures=run_figures
        )
        return experiment.id, keys


def runs_of(database: Database, experiment_id: str) -> list[Run]:
    with database.reading() as session:
        return list(
            session.scalars(select(Run).where(Run.experiment_id == experiment_id).order_by(Run.position))
        )


def experiment(database: Database, experiment_id: str) -> Experiment:
    with database.reading() as session:
        return get_experiment(session, experiment_id)


def wait_runs(
    database: Database, experiment_id: str, statuses: set[RunStatus] = FINISHED, timeout: float = 90.0
) -> list[Run]:
    deadline = time.monotonic() + timeout
    runs: list[Run] = []
    while time.monotonic() < deadline:
        try:
            runs = runs_of(database, experiment_id)
        except Exception:  # the database may be down on purpose
            runs = []
        if runs and all(run.status in statuses for run in runs):
            return runs
        time.sleep(0.2)
    raise AssertionError(f"runs still {[(r.status.value, r.progress_step, r.error) for r in runs]}")


def wait_progress(database: Database, experiment_id: str, step: int, timeout: float = 90.0) -> list[Run]:
    deadline = time.monotonic() + timeout
    runs: list[Run] = []
    while time.monotonic() < deadline:
        runs = runs_of(database, experiment_id)
        if runs and all(r.status == RunStatus.running and r.progress_step >= step for r in runs):
            return runs
        if any(r.status in FINISHED for r in runs):
            raise AssertionError(f"finished before step {step}: {[(r.status, r.error) for r in runs]}")
        time.sleep(0.05)
    raise AssertionError(f"runs did not reach step {step}: {[(r.status, r.progress_step) for r in runs]}")


def reference(runs: Sequence[Run]) -> list[RunState]:
    """The same runs trained uninterrupted, stacked as the worker stacks them."""
    return BatchTrainer([RunSpec.model_validate(run.spec) for run in runs]).run()


@dataclass(frozen=True)
class StoredRun:
    metrics: list[tuple[int, str, float | None]]
    weights: dict[str, torch.Tensor]
    artifact_names: list[str]


def stored_run(database: Database, settings: ServiceSettings, run_id: str) -> StoredRun:
    with database.reading() as session:
        metrics = [
            (int(step), str(name), value)
            for step, name, value in session.execute(
                select(MetricPoint.step, MetricPoint.name, MetricPoint.value)
                .where(MetricPoint.run_id == run_id)
                .order_by(MetricPoint.step, MetricPoint.name)
            )
        ]
        artifacts = list(session.scalars(select(Artifact).where(Artifact.run_id == run_id)))
    names = sorted(a.name for a in artifacts)
    [weights] = [a for a in artifacts if a.name == "model.safetensors"]
    return StoredRun(metrics, load_file(str(settings.resolved_artifact_dir / weights.key)), names)


def assert_equals_reference(stored: StoredRun, expected: RunState) -> None:
    """Bit for bit: every weight tensor and every metric point, each exactly once."""
    want = sorted((r.step, r.name, r.value) for r in expected.metrics)
    assert sorted(stored.metrics, key=lambda m: (m[0], m[1])) == sorted(want, key=lambda m: (m[0], m[1]))
    assert stored.weights.keys() == expected.weights.keys()
    for name, tensor in expected.weights.items():
        assert torch.equal(stored.weights[name], tensor.detach().cpu()), name


def check_cancellation(database: Database, running_id: str, queued_id: str) -> None:
    """Cancel a queued experiment, one run of a running batch, then the rest: prompt and consistent."""
    first, second = wait_progress(database, running_id, 50)
    with database.transaction() as session:
        cancelled = cancel_experiment(session, queued_id)
        assert (cancelled.status, cancelled.n_cancelled) == (RunStatus.cancelled, 2)
    with database.transaction() as session:
        cancel_experiment(session, queued_id)  # again: harmless
    record = experiment(database, queued_id)
    assert (record.status, record.n_cancelled, record.n_queued) == (RunStatus.cancelled, 2, 0)

    asked = time.monotonic()
    with database.transaction() as session:
        cancel_run(session, first.id)
    _wait_until(lambda: runs_of(database, running_id)[0].status == RunStatus.cancelled, 5, "a prompt cancel")
    assert time.monotonic() - asked < 5.0
    with database.transaction() as session:
        cancel_run(session, first.id)  # again: harmless
    assert runs_of(database, running_id)[1].status == RunStatus.running  # its batch-mate goes on

    with database.transaction() as session:
        cancel_experiment(session, running_id)
    runs = wait_runs(database, running_id, timeout=10)
    assert [run.status for run in runs] == [RunStatus.cancelled] * 2
    assert all(run.progress_step < run.progress_total for run in runs)
    record = experiment(database, running_id)
    assert (record.status, record.n_cancelled, record.n_running, record.n_succeeded) == (
        RunStatus.cancelled,
        2,
        0,
        0,
    )
    time.sleep(1.0)  # the queued batch's message arrives: nothing is left to claim
    assert [run.attempt for run in runs_of(database, queued_id)] == [0, 0]
    assert second.id == runs[1].id


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
