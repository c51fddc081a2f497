"""Service benchmark: sweep creation, GET /v1/runs/{id} under load, and the aggregate query.

Starts the API under uvicorn on a free loopback port (executor off, so training does not compete
for the CPU with what is measured), then measures:

1. ``POST /v1/experiments`` of a 1,000-run sweep (expansion, batch planning, 1,000 rows inserted);
2. ``GET /v1/runs/{id}`` of a finished run (its summary the one the engine writes for the spec
   below) with 50 concurrent clients for a fixed time, by ``wrk`` (Debian package ``wrk``) when
   installed, else by a separate Python process running an asyncio httpx loop; besides latency
   and throughput, the server's CPU time per request (all its processes, from ``/proc``), a
   figure that stays meaningful when other work shares the machine;
3. ``GET /v1/experiments/{id}/aggregate`` over a 10,000-run experiment whose runs carry results.

    python benchmarks/api_bench.py                       # SQLite in a temporary folder
    python benchmarks/api_bench.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench

Targets (issue 5): create < 1 s; GET p99 < 50 ms at 50 clients; aggregate < 200 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

SPEC = {
    "task": "regression",
    "data": {"name": "sinusoids", "n_points": 64, "frequencies": [1.0, 3.0, 5.0]},
    "model": {"hidden": [16, 16]},
    "training": {"steps": 30},
}
SERVER_MODULE = """
from api.app import create_app
from gni_service.settings import ServiceSettings


def bench_app():
    # The API alone: runs stay queued, so no training competes with what is measured.
    return create_app(ServiceSettings.from_env(), start_executor=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uvicorn_flags(loop: str | None) -> list[str]:
    """The production options (``api.app.UVICORN_OPTIONS``) as uvicorn's command-line flags."""
    from api.app import UVICORN_OPTIONS

    flags = ["--loop", loop or str(UVICORN_OPTIONS["loop"])]
    return flags if UVICORN_OPTIONS["access_log"] else [*flags, "--no-access-log"]


def start_server(
    data_folder: Path, database_url: str, port: int, workers: int, loop: str | None
) -> subprocess.Popen[bytes]:
    from gni_service.migrate import upgrade_database

    upgrade_database(database_url)  # once, before several workers start
    (data_folder / "gni_bench_server.py").write_text(SERVER_MODULE)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(data_folder), str(Path(__file__).resolve().parents[1])]),
        "GNI_DATA_FOLDER": str(data_folder),
        "GNI_DATABASE_URL": database_url,
        "GNI_RATE_LIMIT_PER_S": "0",  # one client hammering on purpose: no per-key rate limit
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "gni_bench_server:bench_app",
        "--host",
        "127.0.0.1",
    ]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    command += uvicorn_flags(loop)
    # The app's own log (one access line per request) goes to a file, as it would in production.
    log = (data_folder / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=data_folder)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def bench_create(client: httpx.Client, repeats: int) -> dict[str, Any]:
    body = {
        "name": "bench-1000",
        "base": SPEC,
        "axes": {"noise.sigma": [0.01 * i for i in range(10)], "seed": list(range(100))},
    }
    client.post(
        "/v1/experiments?dry_run=true", json=body
    ).raise_for_status()  # the first request imports torch
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.post("/v1/experiments", json=body)
        times.append(time.perf_counter() - started)
        assert response.status_code == 202 and response.json()["run_count"] == 1000, response.text
    assert client.get("/v1/runs/run_absent").status_code == 404
    return {"runs": 1000, "repeats": repeats, "median_s": statistics.median(times), "max_s": max(times)}


def wrk_get(url: str, connections: int, seconds: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert match, out
        return float(match.group(1)) * units[match.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "tool": "wrk",
        "p50_ms": latency("50"),
        "p90_ms": latency("90"),
        "p99_ms": latency("99"),
        "requests_per_s": rps,
        "requests": requests,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


LOADGEN = """
import asyncio, json, sys, time, httpx
url, connections, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
async def client(c, deadline, latencies, errors):
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        r = await c.get(url)
        latencies.append(time.perf_counter() - t)
        errors[0] += r.status_code != 200
async def main():
    latencies, errors = [], [0]
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as c:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(client(c, deadline, latencies, errors) for _ in range(connections)))
    print(json.dumps({"latencies": latencies, "errors": errors[0], "seconds": seconds}))
asyncio.run(main())
"""


def python_get(url: str, connections: int, seconds: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", LOADGEN, url, str(connections), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out)
    ms = [x * 1e3 for x in result["latencies"]]
    return {
        "tool": "python asyncio httpx (separate process)",
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "requests_per_s": len(ms) / result["seconds"],
        "requests": len(ms),
        "non_2xx": result["errors"],
    }


def finish_run(client: httpx.Client, database_url: str) -> str:
    """A run of the first experiment, made to look trained: succeeded, timed, the engine's summary."""
    from sqlalchemy import update

    from gni_engine.execution import execute_runs
    from gni_engine.spec import RunSpec
    from gni_service.db import Database
    from gni_service.models import Run, utcnow

    experiment = client.get("/v1/experiments", params={"limit": 1}).json()["items"][0]["id"]
    runs = client.get(f"/v1/experiments/{experiment}/runs", params={"limit": 1}).json()
    run_id = str(runs["items"][0]["id"])
    with tempfile.TemporaryDirectory() as out:
        [outcome] = execute_runs([RunSpec.model_validate(SPEC)], [Path(out)])
    database = Database(database_url)
    now = utcnow()
    with database.transaction() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(
                status="succeeded",
                summary=outcome.summary,
                progress_step=SPEC["training"]["steps"],  # type: ignore[index]
                device="cpu",
                started_at=now,
                heartbeat_at=now,
                finished_at=now,
            )
        )
    database.dispose()
    return run_id


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children (uvicorn's workers), from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [pid, *(int(p) for p in children.read_text().split())] if children.exists() else [pid]
    total = 0.0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def bench_get(
    client: httpx.Client, base_url: str, run_id: str, server_pid: int, connections: int, seconds: int
) -> dict[str, Any]:
    url = f"{base_url}/v1/runs/{run_id}"
    response = client.get(url)
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    get = wrk_get if shutil.which("wrk") else python_get
    get(url, min(10, connections), 2)  # warm-up: first-use imports and caches
    started = cpu_seconds(server_pid)
    result = get(url, connections, seconds)
    used = cpu_seconds(server_pid) - started
    return {
        **result,
        "response_bytes": len(response.content),
        "server_cpu_ms_per_request": round(used / result["requests"] * 1e3, 3),
        "server_cpu_cores": round(used / seconds, 2),
    }


def fill_results(database_url: str, experiment_id: str) -> None:
    """Give every run of the experiment a succeeded status and results, as training would."""
    from sqlalchemy import bindparam, update

    from gni_service.db import Database
    from gni_service.executor.claims import runs_table
    from gni_service.models import Run

    database = Database(database_url)
    rng = random.Random(0)
    with database.transaction() as session:
        ids = list(
            session.scalars(
                Run.__table__.select().with_only_columns(Run.id).where(Run.experiment_id == experiment_id)
            )
        )
        rows = [
            {
                "run_id": i,
                "result": {
                    "test_loss": rng.gauss(1.0, 0.1),
                    "train_loss": rng.gauss(0.5, 0.05),
                    "ece": rng.random(),
                },
            }
            for i in ids
        ]
        session.execute(
            update(runs_table)
            .where(runs_table.c.id == bindparam("run_id"))
            .values(status="succeeded", summary=bindparam("result")),
            rows,
        )
    database.dispose()


def bench_aggregate(client: httpx.Client, database_url: str, repeats: int) -> dict[str, Any]:
    axes = {
        "noise.sigma": [0.01 * i for i in range(10)],
        "training.mode": ["baseline", "gni"],
        "seed": list(range(500)),
    }
    created = client.post("/v1/experiments", json={"name": "bench-10000", "base": SPEC, "axes": axes})
    assert created.status_code == 202, created.text
    experiment_id = created.json()["id"]
    fill_results(database_url, experiment_id)
    params = {"group_by": "noise.sigma,training.mode", "metric": "summary.test_loss"}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(f"/v1/experiments/{experiment_id}/aggregate", params=params)
        times.append(time.perf_counter() - started)
        groups = response.json()["groups"]
        assert len(groups) == 20 and all(g["metrics"]["summary.test_loss"]["n"] == 500 for g in groups)
    return {
        "runs": 10_000,
        "groups": 20,
        "repeats": repeats,
        "median_s": statistics.median(times),
        "max_s": max(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a dedicated database (its tables are created there); default: SQLite in a temp folder",
    )
    parser.add_argument(
        "--postgres-server",
        default=None,
        help="a PostgreSQL server URL (postgresql+psycopg://user@host:port): "
        "a fresh database is created there and dropped afterwards",
    )
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes serving the API")
    parser.add_argument(
        "--loop", default=None, help="uvicorn's event loop (default: api.app.UVICORN_OPTIONS's), e.g. uvloop"
    )
    args = parser.parse_args()
    data_folder = Path(tempfile.mkdtemp(prefix="gni-bench-"))
    database_url = args.database_url or f"sqlite:///{data_folder / 'gni.sqlite3'}"
    scratch = None
    if args.postgres_server:
        scratch = f"gni_bench_{uuid.uuid4().hex[:8]}"
        _admin(args.postgres_server, f'CREATE DATABASE "{scratch}"')
        database_url = f"{args.postgres_server.rstrip('/')}/{scratch}"
    port = free_port()
    server = start_server(data_folder, database_url, port, args.workers, args.loop)
    base_url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            results = {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}",
                "database": database_url.split("://")[0],
                "api_workers": args.workers,
                "uvicorn": " ".join(uvicorn_flags(args.loop)),
                "load_average_before": os.getloadavg()[0],
                "date": time.strftime("%Y-%m-%d"),
                "create_1000_runs": bench_create(client, args.repeats),
                "get_run_under_load": {
                    "connections": args.connections,
                    "seconds": args.seconds,
                    **bench_get(
                        client,
                        base_url,
                        finish_run(client, database_url),
                        server.pid,
                        args.connections,
                        args.seconds,
                    ),
                },
                "aggregate_10000_runs": bench_aggregate(client, database_url, max(args.repeats, 20)),
            }
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(data_folder, ignore_errors=True)
        if scratch is not None:
            _admin(args.postgres_server, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    print(json.dumps(results, indent=2))


def _admin(server_url: str, statement: str) -> None:
    """Run one statement on the server's ``postgres`` database, outside a transaction."""
    import psycopg

    dsn = server_url.replace("postgresql+psycopg://", "postgresql://").rstrip("/") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(statement.encode())


if __name__ == "__main__":
    main()
