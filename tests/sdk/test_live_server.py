"""The SDK, the command-line client, the examples and docs/sdk.md against a live ``gni serve``."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gni_client import Client
from gni_client.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``gni serve`` on a free loopback port with its own data folder; stopped by its pid."""
    folder = tmp_path_factory.mktemp("serve")
    port = _free_port()
    env = {**os.environ, "GNI_IDLE_POLL_INTERVAL_S": "0.2", "GNI_PROGRESS_INTERVAL_S": "0.2"}
    log = (folder / "server.log").open("w")
    command = [
        sys.executable,
        "-m",
        "gni_cli.main",
        "serve",
        "--port",
        str(port),
        "--data-folder",
        str(folder),
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"gni serve exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("gni serve did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def env(server: str) -> dict[str, str]:
    return {**os.environ, "GNI_BASE_URL": server}


TINY = {
    "data": {"n_points": 64, "frequencies": [1.0, 3.0]},
    "model": {"hidden": [8, 8]},
    "training": {"steps": 20, "lr": 0.01},
    "analyses": {"record_every": 10, "noise_gap_samples": 4, "spectrum": False, "layer_norms": False},
}


def test_cli_round_trip(server, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    base = ["--base-url", server]
    assert cli_main(["submit", str(spec), "--sweep", "seed=0,1", "--wait", "--json", *base]) == 0
    experiment = json.loads(capsys.readouterr().out)
    assert experiment["status"] == "succeeded" and experiment["run_count"] == 2
    eid = experiment["id"]

    assert cli_main(["status", eid, *base]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert cli_main(["runs", eid, "--filter", "seed=1", "--json", *base]) == 0
    assert [r["coords"] for r in json.loads(capsys.readouterr().out)] == [{"seed": 1}]
    assert cli_main(["aggregate", eid, "--metric", "summary.train_loss", *base]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["mean", "std", "stderr", "n"]
    assert cli_main(["download", eid, "--to", str(tmp_path / "out"), "--kind", "results", *base]) == 0
    assert len(list((tmp_path / "out").rglob("results.json"))) == 2
    capsys.readouterr()
    # As docs/sdk.md writes it: a descending sort is a value that starts with '-'.
    assert cli_main(["runs", eid, "--sort", "-seed", "--json", *base]) == 0
    assert [r["coords"] for r in json.loads(capsys.readouterr().out)] == [{"seed": 1}, {"seed": 0}]
    # --to names a folder, also one that does not exist yet (a trailing '/' or not).
    run_id = client_run_ids(server, eid)[0]
    for folder in ("by_run/", "by_run_2"):
        assert cli_main(["download", run_id, "--to", str(tmp_path / folder), "--kind", "results", *base]) == 0
        assert (tmp_path / folder / "results.json").is_file()
    capsys.readouterr()
    assert cli_main(["cancel", eid, *base]) == 1  # already succeeded: a conflict
    assert "nothing to cancel" in capsys.readouterr().err
    assert cli_main(["status", "exp_missing", *base]) == 3
    assert cli_main(["submit", str(spec), "--set", "noise.sigma=-1", *base]) == 2
    assert "base.noise.sigma: sigma must be finite" in capsys.readouterr().err
    assert cli_main(["status", *base]) == 0
    assert eid in capsys.readouterr().out
    assert cli_main(["delete", eid, *base]) == 0  # the whole experiment: 2 runs and their files
    said = capsys.readouterr().out
    assert said.startswith(f"{eid}: deleted 2 runs, ") and " 0 stored objects" not in said
    assert cli_main(["status", eid, *base]) == 3  # gone
    assert cli_main(["delete", eid, *base]) == 3


def client_run_ids(server: str, experiment_id: str) -> list[str]:
    with Client(base_url=server) as client:
        return [run.id for run in client.runs.list(experiment_id)]


def test_submit_refuses_what_it_would_ignore(server, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    base = ["--base-url", server, "--dry-run", "--json"]
    assert cli_main(["submit", str(spec), "--steps", "5", *base]) == 2
    assert "--steps and --seeds go with --preset" in capsys.readouterr().err
    assert cli_main(["submit", "--preset", "spectral-bias", "--set", "training.steps=7", *base]) == 2
    assert "--set goes with a spec file" in capsys.readouterr().err
    assert cli_main(["submit", str(spec), "--set", "training.steps", *base]) == 2
    assert "--set 'training.steps': expected PATH=VALUE" in capsys.readouterr().err
    # A preset's extra axes multiply its runs.
    assert cli_main(["submit", "--preset", "spectral-bias", *base]) == 0
    alone = json.loads(capsys.readouterr().out)["run_count"]
    assert cli_main(["submit", "--preset", "spectral-bias", "--sweep", "training.lr=0.01,0.001", *base]) == 0
    assert json.loads(capsys.readouterr().out)["run_count"] == 2 * alone
    # An axis must be a list: not split into letters, not a traceback.
    for axes, shown in (({"seed": 3}, "got 3"), ({"training.mode": "gni"}, "got 'gni'")):
        spec.write_text(json.dumps({"base": TINY, "axes": axes}))
        assert cli_main(["submit", str(spec), *base]) == 2
        err = capsys.readouterr().err
        assert f"axis '{next(iter(axes))}': expected a list of values, {shown}" in err, err


def test_gni_client_command_without_traceback(env):
    """The torch-free console script: exit codes that mean something, one-line messages."""
    script = Path(sys.executable).with_name("gni-client")
    answer = subprocess.run([str(script), "status", "exp_missing"], env=env, capture_output=True, text=True)
    assert answer.returncode == 3 and "Traceback" not in answer.stderr
    assert answer.stderr.strip() == "error: no experiment with id 'exp_missing'"
    down = subprocess.run(
        [str(script), "status", "--base-url", "http://127.0.0.1:9", "--timeout", "1"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert down.returncode == 5 and "Traceback" not in down.stderr and "could not reach" in down.stderr


def test_sync_client_over_real_http(server):
    with Client(base_url=server) as client:
        assert client.health()["status"] == "ok"
        experiment = client.experiments.create(spec=TINY, sweep={"noise.sigma": [0.0, 0.2]})
        done = client.experiments.wait(experiment.id, timeout=120, poll_interval=0.2, progress=False)
        assert done.status == "succeeded"
        table = client.experiments.aggregate(
            experiment.id, group_by="noise.sigma", metric="summary.train_loss"
        )
        assert [g.key["noise.sigma"] for g in table.groups] == [0.0, 0.2]


@pytest.mark.parametrize(
    "command",
    [
        ["examples/sdk_sigma_sweep.py", "--steps", "20", "--seeds", "1"],
        ["examples/sdk_spectral_bias.py", "--steps", "20", "--out", "{tmp}/figs"],
    ],
    ids=["sigma_sweep", "spectral_bias"],
)
def test_examples_run(env, tmp_path, command):
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    answer = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=240
    )
    assert answer.returncode == 0, answer.stderr[-2000:]
    if "sigma" in command[0]:
        assert "noise.sigma" in answer.stdout and "summary.train_loss.mean" in answer.stdout
    else:
        assert answer.stdout.startswith("succeeded") and "spectral_dynamics" in answer.stdout
        with Client(base_url=env["GNI_BASE_URL"]) as client:
            eid = client.experiments.list(name="spectral-bias").items[0].id
        download = subprocess.run(
            [sys.executable, "examples/sdk_download_figures.py", eid, "--to", str(tmp_path / "all")],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert download.returncode == 0, download.stderr[-2000:]
        assert list((tmp_path / "all").rglob("*.png"))


def test_docs_sdk_blocks_run(env, tmp_path, monkeypatch, capsys):
    """Every python block of docs/sdk.md, in order, in one namespace, against the live server."""
    text = (ROOT / "docs" / "sdk.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 4
    monkeypatch.setenv("GNI_BASE_URL", env["GNI_BASE_URL"])
    namespace = {"FOLDER": tmp_path / "figures", "__name__": "docs_sdk"}
    for block in blocks:
        exec(compile(block, "docs/sdk.md", "exec"), namespace)  # noqa: S102 - the documentation under test
    out = capsys.readouterr().out
    assert "succeeded" in out and "base.noise.sigma" in out
    namespace["client"].close()
