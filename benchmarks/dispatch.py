"""Dispatch latency and bookkeeping overhead of the Celery executor, measured on this machine.

Starts the API (uvicorn) and one Celery worker (prefork, concurrency 1) as processes against a fresh
PostgreSQL database, the local Redis (a unique key prefix) and a local artifact folder, then:

* dispatch latency: ``--submissions`` one-run experiments, one at a time on an idle worker;
  latency = run ``started_at`` − experiment ``created_at`` (both written by the service);
* bookkeeping overhead: one sweep of ``--runs`` short runs (``--steps`` steps each) submitted over
  HTTP until all finish, against the same specs through ``gni_engine.execution.execute_runs``.

    .venv/bin/python benchmarks/dispatch.py --submissions 30 --runs 200 --steps 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import redis
from sqlalchemy import select

from gni_engine.sweep import SweepSpec, expand_sweep
from gni_service.db import Database
from gni_service.migrate import upgrade_database
from gni_service.models import Experiment, Run

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def spec(steps: int) -> dict:
    return {
        "data": {"name": "sinusoids", "n_points": 32, "frequencies": [1.0, 3.0]},
        "model": {"hidden": [8]},
        "training": {"steps": steps, "lr": 0.01},
        "analyses": {"record_every": max(1, steps // 2), "noise_gap_samples": 0, "spectrum": False},
        "execution": {"device": "cpu"},
    }


def wait(client: httpx.Client, experiment_id: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/v1/experiments/{experiment_id}").json()["status"] in ("succeeded", "failed"):
            return
        time.sleep(0.05)
    raise TimeoutError(experiment_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=30)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()

    name = f"gni_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade_database(url)
    prefix = f"gni-bench-{uuid.uuid4().hex[:8]}:"
    folder = Path(tempfile.mkdtemp(prefix="gni-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNI_")}
    env |= {
        "GNI_DATABASE_URL": url,
        "GNI_DATA_FOLDER": str(folder),
        "GNI_EXECUTOR": "celery",
        "GNI_BROKER_KEY_PREFIX": prefix,
    }
    port = 18000 + os.getpid() % 1000
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gni_cli.main",
            "worker",
            "--queues",
            "cpu",
            "--hostname",
            f"bench-{prefix}@%h",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = Database(url)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(600):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            time.sleep(5)  # let the worker child import torch
            wait(client, client.post("/v1/experiments", json={"base": spec(1)}).json()["id"])  # warm-up
            latencies = []
            for _ in range(args.submissions):
                experiment_id = client.post("/v1/experiments", json={"base": spec(1)}).json()["id"]
                wait(client, experiment_id)
                with database.reading() as session:
                    created = session.scalar(
                        select(Experiment.created_at).where(Experiment.id == experiment_id)
                    )
                    started = session.scalar(select(Run.started_at).where(Run.experiment_id == experiment_id))
                latencies.append((started - created).total_seconds())
            latencies.sort()
            p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
            print(
                f"dispatch latency over {len(latencies)} submissions: median "
                f"{1000 * statistics.median(latencies):.1f} ms, p99 {1000 * p99:.1f} ms"
            )

            sweep = {"base": spec(args.steps), "axes": {"seed": list(range(args.runs))}}
            start = time.perf_counter()
            experiment_id = client.post("/v1/experiments", json=sweep).json()["id"]
            wait(client, experiment_id)
            service_s = time.perf_counter() - start
        from gni_engine.execution import execute_runs

        specs = [s for _, s in expand_sweep(SweepSpec.model_validate(sweep))]
        start = time.perf_counter()
        execute_runs(specs, [folder / "engine" / str(i) for i in range(len(specs))], batch=True)
        engine_s = time.perf_counter() - start
        print(
            f"{args.runs} runs x {args.steps} steps: service {service_s:.2f} s, "
            f"engine alone {engine_s:.2f} s, "
            f"overhead {100 * (service_s / engine_s - 1):.1f}%"
        )
    finally:
        for process in (worker, api):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        database.dispose()
        with psycopg.connect(ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        connection = redis.Redis()
        keys = list(connection.scan_iter(match=f"{prefix}*"))
        if keys:
            connection.delete(*keys)


if __name__ == "__main__":
    main()
