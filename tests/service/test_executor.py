"""The in-process executor against a real database: training, claims, recovery, cancellation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sqlalchemy import func, select

from gni_engine.execution import execute_runs
from gni_engine.spec import RunSpec
from gni_engine.sweep import SweepSpec
from gni_service.context import build_context
from gni_service.executor.claims import claim_batch, next_queued_batch
from gni_service.experiments import cancel_experiment, submit_experiment
from gni_service.metrics import insert_metric_points
from gni_service.models import Artifact, MetricPoint, Run, RunStatus
from gni_service.settings import ServiceSettings
from gni_service.storage import file_digest


@pytest.fixture
def service(fresh_url: str, tmp_path: Path):
    settings = ServiceSettings(
        data_folder=tmp_path / "data",
        database_url=fresh_url,
        progress_interval_s=0.05,
        cancel_poll_interval_s=0.05,
        idle_poll_interval_s=0.2,
        heartbeat_interval_s=0.1,
    )
    context = build_context(settings)
    yield context
    context.close(timeout=30)


def _submit(context, spec: dict, axes: dict, *, run_figures: bool = True) -> str:
    sweep = SweepSpec(base=RunSpec.model_validate(spec), axes=axes)
    with context.database.writing() as session:
        experiment = submit_experiment(
            session, context.executor, sweep, name="t", max_runs=100, run_figures=run_figures
        )
        return experiment.id


def _wait_for(context, experiment_id: str, statuses: set[str], timeout: float = 120.0) -> list[Run]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with context.database.reading() as session:
            runs = list(
                session.scalars(select(Run).where(Run.experiment_id == experiment_id).order_by(Run.position))
            )
        if all(run.status.value in statuses for run in runs):
            return runs
        time.sleep(0.1)
    raise AssertionError(f"runs did not reach {statuses}: {[r.status for r in runs]}")


def _experiment_figures(context, experiment_id: str) -> list[str]:
    with context.database.reading() as session:
        statement = select(Artifact.name).where(
            Artifact.experiment_id == experiment_id, Artifact.run_id.is_(None)
        )
        return list(session.scalars(statement))


def _wait_running(context, experiment_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with context.database.reading() as session:
            progressed = session.scalar(
                select(func.count()).where(Run.experiment_id == experiment_id, Run.progress_step > 0)
            )
        if progressed:
            return
        time.sleep(0.05)
    raise AssertionError("no run made progress")


def test_runs_train_and_match_the_engine_called_directly(service, tiny_spec, tmp_path, assert_same_summary):
    axes = {"training.mode": ["baseline", "gni"], "seed": [0, 1]}
    experiment_id = _submit(service, tiny_spec, axes)
    service.executor.start()
    runs = _wait_for(service, experiment_id, {"succeeded", "failed", "cancelled"})
    assert [run.status for run in runs] == [RunStatus.succeeded] * 4, [run.error for run in runs]
    # matplotlib is not thread-safe: let the executor finish the experiment's figures before the
    # direct engine call below draws its own in this thread.
    deadline = time.monotonic() + 60
    while not _experiment_figures(service, experiment_id):
        assert time.monotonic() < deadline, "no experiment figures"
        time.sleep(0.1)

    specs = [RunSpec.model_validate(run.spec) for run in runs]
    direct = execute_runs(specs, [tmp_path / "direct" / str(i) for i in range(4)], figures=False)
    for run, outcome in zip(runs, direct, strict=True):
        assert run.summary is not None and run.device == "cpu"
        assert_same_summary(run.summary, outcome.summary)
        assert run.progress_step == run.progress_total == 30
        assert run.attempt == 1

    with service.database.reading() as session:
        metric_rows = session.scalar(select(func.count()).where(MetricPoint.run_id == runs[0].id))
        artifacts = list(session.scalars(select(Artifact).where(Artifact.run_id == runs[0].id)))
        experiment_status = session.scalar(
            select(Run.status).where(Run.experiment_id == experiment_id).limit(1)
        )
    csv_rows = (tmp_path / "direct" / "0" / "metrics.csv").read_text().strip().splitlines()[1:]
    assert metric_rows == len(csv_rows) > 0
    assert experiment_status == RunStatus.succeeded
    names = {a.name: a for a in artifacts}
    assert {"results.json", "model.safetensors", "metrics.csv", "figures/loss_curves.png"} <= set(names)
    for artifact in artifacts:
        path = service.settings.resolved_artifact_dir / artifact.key
        assert file_digest(path) == (artifact.size, artifact.sha256)
    weights = load_file(str(service.settings.resolved_artifact_dir / names["model.safetensors"].key))
    assert weights and all(t.dtype.is_floating_point for t in weights.values())
    assert not any(service.settings.work_dir.glob("run_*")), "work folders are removed once stored"


def test_a_batch_is_claimed_once(service, tiny_spec):
    _submit(service, tiny_spec, {"seed": [0, 1, 2]})
    with service.database.transaction() as session:
        key = next_queued_batch(session)
        assert key is not None
        first = claim_batch(session, key)
    with service.database.transaction() as session:
        second = claim_batch(session, key)
        assert next_queued_batch(session) is None
    assert [run.position for run in first] == [0, 1, 2]
    assert all(run.attempt == 1 for run in first)
    assert second == []


def test_runs_left_running_by_a_dead_process_are_requeued(service, tiny_spec):
    experiment_id = _submit(service, tiny_spec, {"seed": [0, 1]}, run_figures=False)
    with service.database.transaction() as session:
        claimed = claim_batch(session, next_queued_batch(session))
        insert_metric_points(session, claimed[0].id, [("train_loss", 0, 1.0)])
    assert service.executor.recover_orphans() == 2
    with service.database.reading() as session:
        runs = list(session.scalars(select(Run).where(Run.experiment_id == experiment_id)))
        metric_rows = session.scalar(select(func.count()).select_from(MetricPoint))
    assert {run.status for run in runs} == {RunStatus.queued}
    assert all(run.attempt == 1 and "re-queued" in (run.error or "") for run in runs)
    assert metric_rows == 1  # kept until the next attempt knows where it starts from
    service.executor.start()
    runs = _wait_for(service, experiment_id, {"succeeded", "failed"})
    assert [run.status for run in runs] == [RunStatus.succeeded] * 2
    assert [run.attempt for run in runs] == [2, 2]
    assert all(run.error is None for run in runs)
    with service.database.reading() as session:
        points = session.execute(
            select(MetricPoint.run_id, MetricPoint.name, MetricPoint.step, MetricPoint.value)
        ).all()
    assert len(points) == len({(r, n, s) for r, n, s, _ in points})  # the stale row did not survive
    assert (claimed[0].id, "train_loss", 0, 1.0) not in points


def _long_spec(tiny_spec: dict) -> dict:
    return {**tiny_spec, "training": {"steps": 200_000, "lr": 0.01}, "analyses": {"record_every": 50_000}}


def test_cancelling_a_running_experiment_stops_it_between_steps(service, tiny_spec):
    experiment_id = _submit(service, _long_spec(tiny_spec), {"seed": [0, 1]})
    service.executor.start()
    _wait_running(service, experiment_id)
    beats = []
    for _ in range(2):
        with service.database.reading() as session:
            beats.append(
                session.scalar(select(func.min(Run.heartbeat_at)).where(Run.experiment_id == experiment_id))
            )
        time.sleep(0.5)
    assert beats[0] is not None and beats[1] > beats[0]  # the runs are marked alive while they train
    with service.database.transaction() as session:
        cancel_experiment(session, experiment_id)
    runs = _wait_for(service, experiment_id, {"cancelled", "succeeded", "failed"}, timeout=30)
    assert [run.status for run in runs] == [RunStatus.cancelled] * 2
    assert all(0 < run.progress_step < 200_000 for run in runs)


def test_stopping_the_executor_requeues_its_running_runs(service, tiny_spec):
    experiment_id = _submit(service, _long_spec(tiny_spec), {"seed": [0]})
    service.executor.start()
    _wait_running(service, experiment_id)
    started = time.monotonic()
    service.executor.stop(timeout=30)
    assert time.monotonic() - started < 10
    with service.database.reading() as session:
        run = session.scalars(select(Run).where(Run.experiment_id == experiment_id)).one()
    assert run.status == RunStatus.queued
    assert run.progress_step == 0 and "executor stopped" in (run.error or "")


def test_an_unexpected_engine_failure_fails_the_batch_with_its_reason(service, tiny_spec, monkeypatch):
    import gni_engine.execution

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(gni_engine.execution, "execute_runs", explode)
    experiment_id = _submit(service, tiny_spec, {"seed": [0, 1]})
    assert service.executor.run_next_batch() is True
    runs = _wait_for(service, experiment_id, {"failed"}, timeout=5)
    assert all(run.error == "internal error: RuntimeError: boom" for run in runs)
    assert service.executor.run_next_batch() is False
