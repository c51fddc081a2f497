"""The worker's pieces without a broker: claiming, redelivery, failure recording, retries, routing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from celery.exceptions import Retry
from sqlalchemy.exc import OperationalError

from gni_engine.spec import RunSpec
from gni_engine.sweep import SweepSpec
from gni_service.db import Database
from gni_service.executor.batch import BatchContext
from gni_service.executor.celery_executor import RECORDING_S_PER_RUN, celery_config, plan_messages, queue_for
from gni_service.experiments import create_experiment
from gni_service.migrate import upgrade_database
from gni_service.models import Run
from gni_service.settings import ServiceSettings
from gni_service.storage import LocalArtifactStore, StorageError
from worker import tasks
from worker.batches import InfrastructureError, handle_batch

SPEC = {
    "data": {"name": "sinusoids", "n_points": 32, "frequencies": [1.0]},
    "model": {"hidden": [8]},
    "training": {"steps": 20, "lr": 0.01},
    "analyses": {"record_every": 10, "noise_gap_samples": 0},
}


@pytest.fixture
def context(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'worker.sqlite3'}"
    upgrade_database(url)
    settings = ServiceSettings(data_folder=tmp_path / "data", database_url=url)
    database = Database(url)
    yield BatchContext(
        database, LocalArtifactStore(settings.resolved_artifact_dir), settings, threading.Event()
    )
    database.dispose()


def _submit(context: BatchContext, spec: dict, axes: dict | None = None) -> list[str]:
    with context.database.transaction() as session:
        _, keys = create_experiment(
            session, SweepSpec.model_validate({"base": spec, "axes": axes or {}}), name="t", max_runs=10
        )
    return keys


def _runs(context: BatchContext) -> list[Run]:
    with context.database.reading() as session:
        return list(session.query(Run).order_by(Run.position))


def test_a_redelivered_message_does_not_train_a_finished_batch_again(context):
    [key] = _submit(context, SPEC, {"seed": [0, 1]})
    first = handle_batch(context, key)
    assert first.claimed == 2 and set(first.statuses.values()) == {"succeeded"}
    again = handle_batch(context, key)
    assert again.claimed == 0
    assert [run.attempt for run in _runs(context)] == [1, 1]


def test_a_diverged_run_is_recorded_failed_and_not_raised(context):
    diverging = {
        **SPEC,
        "data": {"name": "sinusoids", "n_points": 32, "frequencies": [1.0], "amplitudes": [1e20]},
        "training": {"steps": 50, "lr": 10.0, "optimizer": "sgd"},
    }
    [key] = _submit(context, diverging)
    report = handle_batch(context, key)
    [run] = _runs(context)
    assert report.statuses == {run.id: "failed"}
    assert run.error and "diverged" in run.error


def test_an_unreachable_store_is_an_infrastructure_error_before_anything_is_claimed(context, monkeypatch):
    [key] = _submit(context, SPEC)

    def broken() -> None:
        raise StorageError("bucket unreachable")

    monkeypatch.setattr(context.store, "check", broken)
    with pytest.raises(InfrastructureError):
        handle_batch(context, key)
    assert [run.status.value for run in _runs(context)] == ["queued"]


def test_a_database_failure_while_recording_requeues_the_runs(context, monkeypatch):
    [key] = _submit(context, SPEC)
    import gni_service.executor.batch as batch_module

    calls = []

    def lost_connection(*args, **kwargs):
        calls.append(1)
        raise OperationalError("UPDATE runs", {}, ConnectionError("server closed the connection"))

    monkeypatch.setattr(batch_module, "_record_outcomes", lost_connection)
    settings = context.settings.model_copy(update={"infrastructure_retry_s": 1.0})
    with pytest.raises(InfrastructureError):
        handle_batch(dataclasses.replace(context, settings=settings), key)
    [run] = _runs(context)
    assert run.status.value == "queued" and run.attempt == 1
    assert len(calls) > 1  # backed off and tried again before giving the batch back


def test_a_bug_is_recorded_as_failure_before_it_propagates(context, monkeypatch):
    [key] = _submit(context, SPEC)
    import gni_service.executor.batch as batch_module

    def bug(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(batch_module, "_record_outcomes", bug)
    with pytest.raises(KeyError):
        handle_batch(context, key)
    [run] = _runs(context)
    assert run.status.value == "failed" and "KeyError" in run.error


@pytest.fixture
def task(monkeypatch):
    monkeypatch.setattr(tasks, "retry_countdown", lambda retries: 0.0)
    monkeypatch.setattr(tasks, "worker_context", lambda: None)
    monkeypatch.setattr(tasks, "close_worker_context", lambda: None)
    monkeypatch.setattr(tasks, "get_settings", lambda: ServiceSettings(task_max_retries=2))
    return tasks.execute_batch_task


def _run(task, retries: int) -> None:
    task.push_request(retries=retries, id="test-task", called_directly=False, is_eager=False)
    try:
        task.run("exp_1/0")
    finally:
        task.pop_request()


def test_the_task_retries_infrastructure_errors_up_to_the_cap(task, monkeypatch):
    sent = []

    def unreachable(context, key):
        raise InfrastructureError("database unreachable")

    monkeypatch.setattr(tasks, "handle_batch", unreachable)
    monkeypatch.setattr(task, "apply_async", lambda *args, **kwargs: sent.append(kwargs))
    with pytest.raises(Retry):
        _run(task, retries=0)
    assert len(sent) == 1 and sent[0]["retries"] == 1
    with pytest.raises(InfrastructureError):  # the cap reached: the error itself, no more retries
        _run(task, retries=2)
    assert len(sent) == 1


def test_the_task_does_not_retry_other_errors(task, monkeypatch):
    sent = []

    def bug(context, key):
        raise ValueError("a bug")

    monkeypatch.setattr(tasks, "handle_batch", bug)
    monkeypatch.setattr(task, "apply_async", lambda *args, **kwargs: sent.append(kwargs))
    with pytest.raises(ValueError):
        _run(task, retries=0)
    assert sent == []


def test_backoff_grows_and_is_capped():
    import random

    rng = random.Random(0)
    samples = [max(tasks.retry_countdown(n, rng=rng) for _ in range(200)) for n in (0, 3, 20)]
    assert samples[0] <= 2.0 < samples[1] <= 16.0 < samples[2] <= tasks.BACKOFF_MAX_S


def test_routing_priority_and_time_limits():
    settings = ServiceSettings(
        task_time_limit_floor_s=60, task_flops_per_second=1e3, task_time_limit_grace_s=30
    )
    cpu = RunSpec.model_validate({**SPEC, "execution": {"device": "cpu"}})
    cuda = RunSpec.model_validate({**SPEC, "execution": {"device": "cuda"}})
    auto = RunSpec.model_validate(SPEC)
    assert (queue_for(cpu, settings), queue_for(cuda, settings), queue_for(auto, settings)) == (
        "cpu",
        "gpu",
        "gpu",
    )
    assert queue_for(auto, settings.model_copy(update={"task_auto_device_queue": "cpu"})) == "cpu"
    [small, large] = plan_messages({"e/0": [cpu], "e/1": [cuda] * 50}, settings)
    assert (small.queue, large.queue) == ("cpu", "gpu")
    assert small.priority == large.priority == settings.task_default_priority
    assert large.soft_time_limit_s > small.soft_time_limit_s >= 60
    assert large.time_limit_s == large.soft_time_limit_s + 30
    # Recording (figures, uploads) takes time the FLOPs do not show: a second's worth of FLOPs
    # a run, but every run's recording counted.
    tiny = settings.model_copy(update={"task_time_limit_floor_s": 1, "task_flops_per_second": 1e30})
    [many] = plan_messages({"e/2": [cpu] * 100}, tiny)
    assert many.soft_time_limit_s >= 100 * RECORDING_S_PER_RUN


def test_messages_are_json_only_acked_late_and_prefetched_one_at_a_time():
    config = celery_config(ServiceSettings(broker_key_prefix="p:"))
    assert config["accept_content"] == ["json"] and config["task_serializer"] == "json"
    assert config["task_acks_late"] is True and config["worker_prefetch_multiplier"] == 1
    assert config["broker_transport_options"]["global_keyprefix"] == "p:"
    assert [q.name for q in config["task_queues"]] == ["gpu", "cpu"]
    assert tasks.execute_batch_task.name == "gni.execute_batch"
    assert tasks.execute_batch_task.acks_late is True


def test_importing_the_worker_does_not_import_torch():
    code = "import sys, worker.app, worker.tasks, worker.batches; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_worker_command_builds_a_celery_command_line():
    from gni_cli.main import build_parser
    from gni_cli.worker_command import celery_argv

    args = build_parser().parse_args(["worker", "--queues", "gpu", "--concurrency", "2"])
    argv = celery_argv(args)
    assert argv[0] == "worker" and "--queues=gpu" in argv and "--concurrency=2" in argv
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--queues", "tpu"])
