"""End to end: ``gni serve`` as a real process, a sweep over real HTTP, results checked against the engine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load

from gni_engine.execution import execute_runs
from gni_engine.spec import RunSpec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_folder: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GNI_")}
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gni_cli.main",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-folder",
                    str(data_folder),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gni serve exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"gni serve not ready: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def data_folder(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_folder: Path, tmp_path: Path) -> Iterator[Server]:
    server = Server(data_folder, tmp_path / "serve.log")
    yield server
    server.stop()


def _wait_finished(client: httpx.Client, experiment_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/experiments/{experiment_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.25)
    raise AssertionError(f"experiment still {body['status']}: {body['counts']}")


def test_a_sweep_over_http_matches_the_engine(server, tiny_spec, tmp_path, assert_same_summary):
    axes = {"training.mode": ["baseline", "gni"], "seed": [0, 1]}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        created = client.post("/v1/experiments", json={"name": "e2e", "base": tiny_spec, "axes": axes})
        assert created.status_code == 202, created.text
        experiment_id = created.json()["id"]
        assert created.headers["location"] == f"/v1/experiments/{experiment_id}"
        experiment = _wait_finished(client, experiment_id)
        assert experiment["status"] == "succeeded", experiment
        assert experiment["progress"]["fraction"] == 1.0
        runs = client.get(f"/v1/experiments/{experiment_id}/runs").json()["items"]
        assert [r["coords"] for r in runs] == [
            {"training.mode": m, "seed": s} for m in ("baseline", "gni") for s in (0, 1)
        ]

        specs = [RunSpec.model_validate(r["spec"]) for r in runs]
        direct = execute_runs(specs, [tmp_path / "direct" / str(i) for i in range(len(specs))], figures=False)
        for run, outcome in zip(runs, direct, strict=True):
            assert outcome.status == "succeeded"
            assert_same_summary(run["summary"], outcome.summary)

        artifacts = client.get(f"/v1/runs/{runs[1]['id']}/artifacts").json()["items"]
        by_kind = {}
        for artifact in artifacts:
            by_kind.setdefault(artifact["kind"], []).append(artifact)
        figure = client.get(by_kind["figure"][0]["download_url"])
        assert figure.status_code == 200 and figure.headers["content-type"] == "image/png"
        assert figure.content.startswith(PNG_SIGNATURE)
        weights = client.get(by_kind["weights"][0]["download_url"])
        tensors = load(weights.content)
        assert tensors and all(t.numel() > 0 for t in tensors.values())
        reference = (tmp_path / "direct" / "1" / "model.safetensors").read_bytes()
        for name, tensor in load(reference).items():
            assert tensors[name].allclose(tensor, rtol=1e-5, atol=1e-7), name

        table = client.get(
            f"/v1/experiments/{experiment_id}/aggregate",
            params={"group_by": "training.mode", "metric": "summary.train_loss"},
        ).json()
        assert [g["key"]["training.mode"] for g in table["groups"]] == ["baseline", "gni"]
        assert all(g["metrics"]["summary.train_loss"]["n"] == 2 for g in table["groups"])
        metrics = client.get(f"/v1/runs/{runs[0]['id']}/metrics", params={"names": "train_loss"}).json()
        assert metrics["series"][0]["steps"][-1] == 30
        assert len(figure.content) == by_kind["figure"][0]["size"]

        # Comparison figures of the whole experiment follow its last run.
        deadline = time.monotonic() + 60
        while not (shared := client.get(f"/v1/experiments/{experiment_id}/artifacts").json()["items"]):
            assert time.monotonic() < deadline, "no experiment-level figures"
            time.sleep(0.25)
        png = next(a for a in shared if a["content_type"] == "image/png")
        assert png["run_id"] is None and png["name"].startswith("figures/")
        assert client.get(png["download_url"]).content.startswith(PNG_SIGNATURE)


def test_the_server_survives_a_restart(data_folder, tmp_path, tiny_spec):
    spec = {**tiny_spec, "training": {"steps": 200_000, "lr": 0.01}, "analyses": {"record_every": 50_000}}
    first = Server(data_folder, tmp_path / "first.log")
    try:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            experiment_id = client.post("/v1/experiments", json={"base": spec}).json()["id"]
            deadline = time.monotonic() + 60
            while client.get(f"/v1/experiments/{experiment_id}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        first.stop(signal.SIGKILL)  # a dead process leaves its run 'running'
    second = Server(data_folder, tmp_path / "second.log")
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            run = client.get(f"/v1/experiments/{experiment_id}/runs").json()["items"][0]
            assert run["status"] in ("queued", "running")
            assert run["attempt"] in (1, 2)
            deadline = time.monotonic() + 60
            while run["attempt"] < 2 or run["status"] != "running":
                assert time.monotonic() < deadline, run
                time.sleep(0.1)
                run = client.get(f"/v1/runs/{run['id']}").json()
            assert client.post(f"/v1/experiments/{experiment_id}/cancel").status_code == 200
            assert _wait_finished(client, experiment_id, timeout=30)["status"] == "cancelled"
    finally:
        second.stop()
