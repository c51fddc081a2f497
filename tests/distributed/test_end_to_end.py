"""The distributed stack as processes: API under uvicorn, a Celery worker, PostgreSQL, Redis, SeaweedFS.

A sweep submitted over HTTP is announced on the broker, trained by the worker, its artifacts land in
the bucket and download through the API's redirect with their recorded SHA-256; the summaries equal
those of the embedded (in-process) executor for the same specs and seeds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gni_engine.sweep import SweepSpec
from gni_service.db import Database
from gni_service.executor.inprocess import InProcessExecutor
from gni_service.experiments import create_experiment
from gni_service.migrate import upgrade_database
from gni_service.models import Run
from gni_service.settings import ServiceSettings
from gni_service.storage import LocalArtifactStore

from .conftest import ACCESS_KEY, REGION, SECRET_KEY, free_port, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.s3]

TINY_SPEC = {
    "task": "regression",
    "data": {"name": "sinusoids", "n_points": 32, "frequencies": [1.0, 3.0]},
    "model": {"hidden": [8]},
    "noise": {"sigma": 0.1},
    "training": {"steps": 20, "lr": 0.01},
    "analyses": {"record_every": 10, "noise_gap_samples": 4},
}
AXES = {"training.mode": ["baseline", "gni"], "seed": [0, 1]}


def _stack_environment(postgres_url, broker, s3_server, bucket_name, data_folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNI_")}
    env.update(
        GNI_DATABASE_URL=postgres_url,
        GNI_DATA_FOLDER=str(data_folder),
        GNI_EXECUTOR="celery",
        GNI_BROKER_URL=broker.url,
        GNI_BROKER_KEY_PREFIX=broker.key_prefix,
        GNI_ARTIFACT_STORE="s3",
        GNI_S3_ENDPOINT_URL=s3_server.endpoint_url,
        GNI_S3_REGION=REGION,
        GNI_S3_ACCESS_KEY_ID=ACCESS_KEY,
        GNI_S3_SECRET_ACCESS_KEY=SECRET_KEY,
        GNI_S3_BUCKET=bucket_name,
        GNI_PROGRESS_INTERVAL_S="0.2",
    )
    return env


@pytest.fixture
def stack(postgres_url, broker, s3_server, bucket_name, tmp_path) -> Iterator[str]:
    env = _stack_environment(postgres_url, broker, s3_server, bucket_name, tmp_path / "data")
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("api", "worker")}
    commands = {
        "api": [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--port", str(port)],
        "worker": [
            sys.executable,
            *("-m", "gni_cli.main", "worker", "--pool", "prefork", "--concurrency", "1"),
            f"--hostname=e2e-{uuid.uuid4().hex[:8]}@%h",
            "--log-level=info",
        ],
    }
    processes = {}
    try:
        for name, command in commands.items():
            with logs[name].open("wb") as out:
                processes[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, processes, logs)
        yield url
    finally:
        for process in processes.values():
            stop_process(process, grace_s=5.0)
        for name, log in logs.items():
            sys.stderr.write(f"--- {name} log (tail)\n{log.read_text()[-2000:]}\n")


def _wait_ready(url: str, processes, logs, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited: {logs[name].read_text()[-3000:]}")
        try:
            if (
                httpx.get(f"{url}/readyz", timeout=2).status_code == 200
                and b"ready" in logs["worker"].read_bytes()
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the stack did not become ready: {logs['api'].read_text()[-2000:]}")


def _wait_finished(client: httpx.Client, experiment_id: str, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/experiments/{experiment_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"experiment still {body['status']}: {body['counts']}")


def _embedded_summaries(tmp_path: Path) -> dict[int, dict]:
    """The same sweep through the in-process executor (SQLite, local artifacts)."""
    url = f"sqlite:///{tmp_path / 'embedded.sqlite3'}"
    upgrade_database(url)
    settings = ServiceSettings(data_folder=tmp_path / "embedded", database_url=url)
    database = Database(url)
    executor = InProcessExecutor(database, LocalArtifactStore(settings.resolved_artifact_dir), settings)
    try:
        with database.transaction() as session:
            experiment, _ = create_experiment(
                session,
                SweepSpec.model_validate({"base": TINY_SPEC, "axes": AXES}),
                name="embedded",
                max_runs=10,
            )
        while executor.run_next_batch():
            pass
        with database.reading() as session:
            runs = session.query(Run).filter(Run.experiment_id == experiment.id).all()
            assert {run.status.value for run in runs} == {"succeeded"}
            return {run.position: dict(run.summary or {}) for run in runs}
    finally:
        database.dispose()


def test_a_sweep_runs_on_a_celery_worker_and_matches_the_embedded_executor(
    stack, s3_server, bucket_name, tmp_path, assert_same_summary
):
    with httpx.Client(base_url=stack, timeout=30) as client:
        readiness = client.get("/readyz").json()
        assert readiness["checks"] == {"database": "ok", "storage": "ok", "executor": "ok"}
        created = client.post("/v1/experiments", json={"name": "e2e", "base": TINY_SPEC, "axes": AXES})
        assert created.status_code == 202, created.text
        experiment_id = created.json()["id"]
        experiment = _wait_finished(client, experiment_id)
        assert experiment["status"] == "succeeded", experiment
        runs = client.get(f"/v1/experiments/{experiment_id}/runs").json()["items"]
        assert [r["status"] for r in runs] == ["succeeded"] * 4
        assert all(r["attempt"] == 1 for r in runs)  # each run trained once

        artifacts = []
        for run in runs:
            artifacts += client.get(f"/v1/runs/{run['id']}/artifacts").json()["items"]
        assert {a["kind"] for a in artifacts} >= {"figure", "weights", "metrics", "results"}
        listed = s3_server.client().list_objects_v2(
            Bucket=bucket_name, Prefix=f"experiments/{experiment_id}/runs/"
        )
        assert len(listed.get("Contents", [])) == len(artifacts)
        for artifact in artifacts:
            response = client.get(artifact["download_url"])
            assert response.status_code == 307
            assert response.headers["location"].startswith(s3_server.endpoint_url)
            body = client.get(artifact["download_url"], follow_redirects=True)
            assert body.status_code == 200
            assert len(body.content) == artifact["size"]
            assert hashlib.sha256(body.content).hexdigest() == artifact["sha256"], artifact["name"]

    embedded = _embedded_summaries(tmp_path)
    for run in runs:
        assert_same_summary(run["summary"], embedded[run["position"]])
