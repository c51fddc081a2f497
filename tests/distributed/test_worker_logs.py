"""Every JSON log line written while a batch is handled names its task, experiment and runs.

Both executors: the Celery task (run through Celery's own tracer, so its ``task_prerun`` and
``task_postrun`` signals and its "succeeded" line are part of it) and the in-process executor.
Lines come from the worker code, the recorder's heartbeat thread and the checkpoints (about one
run: those also carry ``run_id``), all captured from the root handler the worker installs.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from gni_engine.sweep import SweepSpec
from gni_service.db import Database
from gni_service.executor.batch import BatchContext
from gni_service.executor.inprocess import InProcessExecutor
from gni_service.executor.recorder import BatchRecorder
from gni_service.experiments import create_experiment
from gni_service.migrate import upgrade_database
from gni_service.models import Run
from gni_service.settings import ServiceSettings
from gni_service.storage import LocalArtifactStore, StorageError
from gni_service.structured_logging import configure_logging
from worker import tasks
from worker.log_ids import CeleryTaskIds

SPEC = {
    "data": {"name": "sinusoids", "n_points": 32, "frequencies": [1.0]},
    "model": {"hidden": [8]},
    "training": {"steps": 30, "lr": 0.01},
    "analyses": {"record_every": 10, "noise_gap_samples": 0, "spectrum": False},
}


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchContext]:
    """A worker's context whose heartbeats and checkpoint uploads fail, so that both log."""
    url = f"sqlite:///{tmp_path / 'logs.sqlite3'}"
    upgrade_database(url)
    settings = ServiceSettings(
        data_folder=tmp_path / "data",
        database_url=url,
        heartbeat_interval_s=0.01,
        checkpoint_every_steps=10,
        checkpoint_min_interval_s=0,
    )
    store = LocalArtifactStore(settings.resolved_artifact_dir)
    database = Database(url)

    def heartbeat_lost(self: BatchRecorder) -> None:
        raise OperationalError("UPDATE runs", {}, ConnectionError("server closed the connection"))

    def no_checkpoints(key: str, source: Path, content_type: str) -> Any:
        if key.startswith("checkpoints/"):
            raise StorageError("bucket unreachable")
        return LocalArtifactStore.put_file(store, key, source, content_type)

    monkeypatch.setattr(BatchRecorder, "heartbeat", heartbeat_lost)
    monkeypatch.setattr(store, "put_file", no_checkpoints)
    yield BatchContext(database, store, settings, threading.Event())
    database.dispose()


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging("json", "INFO", stream=stream, id_filters=[CeleryTaskIds()])
    yield stream
    logging.getLogger().removeHandler(handler)


def _submit(context: BatchContext) -> tuple[str, str, list[str]]:
    sweep = SweepSpec.model_validate({"base": SPEC, "axes": {"seed": [0, 1]}})
    with context.database.transaction() as session:
        experiment, [key] = create_experiment(session, sweep, name="logs", max_runs=10)
        run_ids = [run.id for run in session.query(Run).order_by(Run.position)]
    return experiment.id, key, run_ids


def _parse(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _assert_about_the_batch(lines: list[dict[str, Any]], experiment_id: str, run_ids: list[str]) -> None:
    assert lines
    for line in lines:
        assert line["experiment_id"] == experiment_id, line
        assert sorted(line["run_ids"]) == sorted(run_ids), line
    loggers = {line["logger"] for line in lines}
    assert {"gni_service.executor.recorder", "gni_service.executor.checkpoints"} <= loggers
    heartbeats = [line for line in lines if line["message"] == "heartbeat failed"]
    assert heartbeats  # written by the heartbeat thread, which got the ids from its starter
    about_one_run = [line for line in lines if line["logger"] == "gni_service.executor.checkpoints"]
    assert {line["run_id"] for line in about_one_run} == set(run_ids)
    assert all(line["run_id"] in line["message"] for line in about_one_run)


def test_the_celery_tasks_lines_carry_task_experiment_and_run_ids(context, json_lines, monkeypatch):
    experiment_id, key, run_ids = _submit(context)
    monkeypatch.setattr(tasks, "worker_context", lambda: context)
    result = tasks.execute_batch_task.apply(args=[key], task_id="task-logs-1")
    assert result.successful(), result.traceback
    lines = _parse(json_lines)
    _assert_about_the_batch(lines, experiment_id, run_ids)
    assert all((line["task_id"], line["batch_key"]) == ("task-logs-1", key) for line in lines)
    loggers = {line["logger"] for line in lines}
    assert {"worker.batches", "worker.tasks", "celery.app.trace"} <= loggers  # Celery's own line too
    logging.getLogger("gni.test").info("after the task")
    assert "task_id" not in _parse(json_lines)[-1]  # the task's ids end with it


def test_the_inprocess_executors_lines_carry_experiment_batch_and_run_ids(context, json_lines):
    experiment_id, key, run_ids = _submit(context)
    executor = InProcessExecutor(context.database, context.store, context.settings)
    assert executor.run_next_batch()
    lines = _parse(json_lines)
    _assert_about_the_batch(lines, experiment_id, run_ids)
    assert all(line["batch_key"] == key and "task_id" not in line for line in lines)
    assert any(line["logger"] == "gni_service.executor.inprocess" for line in lines)


def test_celerys_received_line_gets_the_tasks_ids():
    """The worker's main process logs a message's arrival before any task context exists."""
    stream = io.StringIO()
    handler = configure_logging("json", "INFO", stream=stream, id_filters=[CeleryTaskIds()])
    try:
        data = {"id": "task-7", "name": "gni.execute_batch", "args": "['exp_abc/3']", "kwargs": "{}"}
        logging.getLogger("celery.worker.strategy").info(
            "Task %(name)s[%(id)s] received", data, extra={"data": data}
        )
    finally:
        logging.getLogger().removeHandler(handler)
    [line] = _parse(stream)
    assert (line["task_id"], line["batch_key"], line["experiment_id"]) == ("task-7", "exp_abc/3", "exp_abc")
