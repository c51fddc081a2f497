"""Dispatch latency and bookkeeping overhead of the Celery executor, measured on this machine.

Starts the API (uvicorn) and one Celery worker (prefork, concurrency 1) as processes against a fresh
PostgreSQL database, the local Redis (a unique key prefix) and a local artifact folder; their JSON
logs go to files, which give the time of each hop. Then:

* **dispatch latency**, submit → running on an idle worker: ``--submissions`` one-run experiments,
  each sent once the broker says the worker has acknowledged the previous message (nothing queued,
  nothing unacknowledged), so the worker is really idle, not still drawing the last experiment's
  figures. Latency = the run's ``started_at`` (written by the worker's claim) − the moment the
  client sent the POST; also the moment the client first saw ``running`` (polling every 10 ms).
  Each hop is timed from the logs (millisecond stamps) and the database:

  - ``request``: POST sent → experiment ``created_at`` (parsing, auth, validation, expansion);
  - ``commit+send``: ``created_at`` → the API's "announced" line (insert, commit, the message sent);
  - ``broker``: → the worker's "Task … received" line (Redis, the worker's consumer; the API logs
    after sending, so this hop can read a millisecond or two below zero);
  - ``claim``: → ``started_at`` (hand-off to the pool child, the claim's conditional update);
  - ``visible``: → the client's poll of ``GET /v1/runs/{id}`` seeing the run started (its polls
    begin once the POST has answered and the experiment's run was listed).

* **back-to-back** (``--busy-submissions``): the protocol of this script's first version, each
  POST as soon as the previous experiment is finished in the database; the worker is then still
  drawing that experiment's comparison figures, and the new message waits for it.

* **bookkeeping overhead**: one sweep of ``--runs`` runs (``--steps`` steps each, seeds varied)
  through the whole service (POST over HTTP → worker → results, artifacts and figures recorded),
  against the same specs through ``gni_engine.execution.execute_runs`` in this process (the engine
  alone, writing the same per-run files and figures), ``--repeats`` times alternately. Service
  time ends when the experiment is finished in the database ("results") and when the worker has
  acknowledged the message ("worker idle": the experiment's comparison figures drawn, files
  cleaned up). CPU seconds are summed over the worker's processes, the API and the PostgreSQL
  backends of the benchmark's database (from ``/proc``), against this process's for the engine.
  This VM's speed drifts by ±20% between consecutive minutes, which swamps a few per cent in
  either comparison, so the service also measures itself: the worker logs how long its engine call
  took and how much of that its hooks took (progress, metrics, cancel checks), and "bookkeeping
  measured in the service" = results time − (engine call − hooks), as a share of the engine call's
  own work: everything the service adds, timed within the same run. The engine alone runs after
  ``gc.freeze()``, as the worker child does (its heap frozen after start-up).

    .venv/bin/python benchmarks/dispatch.py --submissions 50 --busy-submissions 20 \\
        --runs 100 --steps 2000 --repeats 3      # docs/performance.md's figures, about 8 minutes
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from gni_engine.sweep import SweepSpec, expand_sweep
from gni_service.migrate import upgrade_database

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOPS = ("request", "commit+send", "broker", "claim", "visible")
# The worker's line about a finished batch (gni_service.executor.batch.execute_batch).
BATCH_TIMES = re.compile(
    r"trained in (?P<trained>[0-9.]+) s \(progress, metrics and cancel checks (?P<hooks>[0-9.]+) s\)"
)


def spec(steps: int) -> dict[str, Any]:
    return {
        "data": {"name": "sinusoids", "n_points": 32, "frequencies": [1.0, 3.0]},
        "model": {"hidden": [8]},
        "training": {"steps": steps, "lr": 0.01},
        "analyses": {"record_every": max(1, steps // 2), "noise_gap_samples": 0, "spectrum": False},
        "execution": {"device": "cpu"},
    }


@dataclass
class Stack:
    """The processes under test and how to reach them."""

    client: httpx.Client
    database: psycopg.Connection[Any]
    broker: redis.Redis
    prefix: str
    logs: Path
    pids: dict[str, int]
    database_name: str

    def worker_idle(self) -> bool:
        """Nothing waits in the ``cpu`` queue's lists and no message is unacknowledged."""
        queued = sum(self.broker.llen(key) for key in self.broker.scan_iter(match=f"{self.prefix}cpu*"))
        return queued == 0 and self.broker.hlen(f"{self.prefix}unacked") == 0

    def wait_idle(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not self.worker_idle():
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not become idle")
            time.sleep(0.02)

    def experiment(self, experiment_id: str) -> tuple[str, datetime, datetime | None]:
        row = self.database.execute(
            "SELECT status, created_at, finished_at FROM experiments WHERE id = %s", (experiment_id,)
        ).fetchone()
        assert row is not None
        return row[0], row[1], row[2]


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with _quietly():
            found |= {int(c) for c in (task / "children").read_text().split()}
    for child in list(found):
        found |= _children(child)
    return found


def _cpu_of(pid: int) -> float:
    with _quietly():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


@contextmanager
def _quietly() -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError, IndexError):
        pass


class CpuMeter:
    """CPU seconds the service's processes spend between two readings, by kind of process.

    Processes that appear in between (new PostgreSQL backends) count from zero; the benchmark's own
    database connection (its polling) is left out.
    """

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        own = stack.database.execute("SELECT pg_backend_pid()").fetchone()
        self._own_backend = own[0] if own else None
        self._start = self._read()

    def _read(self) -> dict[tuple[str, int], float]:
        worker = self._stack.pids["worker"]
        rows = self._stack.database.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self._stack.database_name,)
        ).fetchall()
        kinds = [("API", self._stack.pids["api"]), ("worker main process", worker)]
        kinds += [("worker child", pid) for pid in _children(worker)]
        kinds += [("PostgreSQL", row[0]) for row in rows if row[0] != self._own_backend]
        return {(kind, pid): _cpu_of(pid) for kind, pid in kinds}

    def elapsed(self) -> dict[str, float]:
        by_kind: dict[str, float] = defaultdict(float)
        for (kind, pid), cpu in self._read().items():
            by_kind[kind] += cpu - self._start.get((kind, pid), 0.0)
        return dict(by_kind)


# ------------------------------------------------------------------------------------ dispatch
def measure_dispatch(stack: Stack, submissions: int) -> None:
    # The first message a fresh worker gets (the API's first send also opens its broker connection).
    first = time.time()
    experiment_id = submit(stack, spec(1))
    started = stack.database.execute(
        "SELECT started_at FROM runs WHERE experiment_id = %s", (experiment_id,)
    ).fetchone()
    assert started is not None
    first_ms = 1000 * (started[0].timestamp() - first)
    print(f"first message to a fresh worker: submit -> running {first_ms:.1f} ms")
    samples: list[dict[str, Any]] = []
    for _ in range(submissions):
        stack.wait_idle()
        time.sleep(0.05)  # the child, too, back to waiting (it acks, then returns to the pool)
        sent = time.time()
        experiment_id = stack.client.post("/v1/experiments", json={"base": spec(1)}).json()["id"]
        answered = time.time()
        seen = _first_seen_running(stack, experiment_id)
        samples.append({"experiment": experiment_id, "sent": sent, "answered": answered, "seen": seen})
    stack.wait_idle()
    time.sleep(1.0)  # let the log files catch up
    hops = _hops(stack, samples)
    to_started = sorted(h["started"] - h["sent"] for h in hops)
    to_seen = sorted(h["seen"] - h["sent"] for h in hops)
    print(f"dispatch latency, submit -> running, idle worker, {len(hops)} submissions:")
    print(f"  recorded (run started_at - POST sent): {_median_p99(to_started)}")
    print(f"  seen by the client (polling every 10 ms): {_median_p99(to_seen)}")
    print(f"  (the POST's answer came after {_median_p99(sorted(h['answered'] - h['sent'] for h in hops))})")
    edges = ("sent", "created", "announced", "received", "started", "seen")
    for name, (a, b) in zip(HOPS, zip(edges, edges[1:], strict=False), strict=True):
        print(f"  hop {name:12s} {_median_p99(sorted(h[b] - h[a] for h in hops))}")


def measure_back_to_back(stack: Stack, submissions: int) -> None:
    """The previous benchmark's protocol: each POST as soon as the last experiment is finished.

    The worker has then recorded the run but not yet acknowledged its message: it still draws the
    experiment's comparison figures and cleans up, and the next message waits in Redis for it.
    """
    latencies = []
    for _ in range(submissions):
        sent = time.time()
        experiment_id = stack.client.post("/v1/experiments", json={"base": spec(1)}).json()["id"]
        wait_finished(stack, experiment_id, poll_s=0.05)
        row = stack.database.execute(
            "SELECT started_at FROM runs WHERE experiment_id = %s", (experiment_id,)
        ).fetchone()
        assert row is not None
        latencies.append(row[0].timestamp() - sent)
    stack.wait_idle()
    print("dispatch latency, submit -> running, right after the previous experiment finished:")
    print(f"  recorded (run started_at - POST sent): {_median_p99(sorted(latencies[1:]))}")


def _first_seen_running(stack: Stack, experiment_id: str) -> float:
    """When ``GET /v1/runs/{id}`` (the route clients poll) first answers with the run started."""
    [run] = stack.client.get(f"/v1/experiments/{experiment_id}/runs").json()["items"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if stack.client.get(f"/v1/runs/{run['id']}").json()["status"] != "queued":
            return time.time()
        time.sleep(0.01)
    raise TimeoutError(experiment_id)


def _hops(stack: Stack, samples: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Each submission's timestamps: sent, created, announced, received, started, seen."""
    announced = {
        line["experiment_id"]: _time(line)
        for line in _log_lines(stack.logs / "api.log")
        if line.get("message", "").startswith("announced") and "experiment_id" in line
    }
    worker_lines = list(_log_lines(stack.logs / "worker.log"))
    received = {
        line["task_id"]: _time(line)
        for line in worker_lines
        if line.get("message", "").endswith("received") and "task_id" in line
    }
    task_of = {
        line["experiment_id"]: line["task_id"]
        for line in worker_lines
        if "claimed" in line.get("message", "") and "task_id" in line and "experiment_id" in line
    }
    hops = []
    for sample in samples:
        experiment_id = str(sample["experiment"])
        row = stack.database.execute(
            "SELECT e.created_at, r.started_at FROM experiments e JOIN runs r ON r.experiment_id = e.id "
            "WHERE e.id = %s",
            (experiment_id,),
        ).fetchone()
        task_id = task_of.get(experiment_id)
        if row is None or experiment_id not in announced or task_id not in received:
            continue
        hops.append(
            {
                "sent": sample["sent"],
                "answered": sample["answered"],
                "created": row[0].timestamp(),
                "announced": announced[experiment_id],
                "received": received[str(task_id)],
                "started": row[1].timestamp(),
                "seen": sample["seen"],
            }
        )
    return hops


def _log_lines(path: Path) -> Iterator[dict[str, Any]]:
    for text in path.read_text(errors="replace").splitlines():
        if text.startswith("{"):
            with _quietly():
                yield json.loads(text)


def _time(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["time"]).timestamp()


def _median_p99(values: list[float]) -> str:
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return f"median {1000 * statistics.median(values):7.1f} ms, p99 {1000 * p99:7.1f} ms"


# ------------------------------------------------------------------------------------ overhead
def submit(stack: Stack, base: dict[str, Any], axes: dict[str, Any] | None = None) -> str:
    response = stack.client.post("/v1/experiments", json={"base": base, "axes": axes or {}})
    response.raise_for_status()
    experiment_id = str(response.json()["id"])
    wait_finished(stack, experiment_id)
    stack.wait_idle()
    return experiment_id


def wait_finished(stack: Stack, experiment_id: str, timeout: float = 3600, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while stack.experiment(experiment_id)[0] not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise TimeoutError(experiment_id)
        time.sleep(poll_s)  # a database read: the worker's CPU is left alone


@dataclass(frozen=True)
class ServiceRound:
    """One sweep through the service: seconds after the POST was sent, and what the worker logged."""

    results_s: float  # until the experiment is finished in the database
    idle_s: float  # until the worker has acknowledged the message
    cpu_s: float  # the service's processes
    trained_s: float  # the worker's engine call, its hooks included
    hooks_s: float  # of which the recorder's hooks (progress, metrics, cancel checks)

    @property
    def bookkeeping_s(self) -> float:
        """Everything in ``results_s`` but the engine's own work in the worker."""
        return self.results_s - (self.trained_s - self.hooks_s)


def measure_overhead(stack: Stack, runs: int, steps: int, repeats: int, folder: Path) -> None:
    from gni_engine.execution import execute_runs

    sweep = {"base": spec(steps), "axes": {"seed": list(range(runs))}}
    specs = [s for _, s in expand_sweep(SweepSpec.model_validate(sweep))]
    execute_runs(specs[:1], [folder / "engine" / "warm-up"], batch=True)  # imports, caches: as the worker's
    # The worker child freezes its start-up heap (worker.batches.warm_up), which spares the garbage
    # collector a few per cent of the time; the engine alone gets the same, for a like comparison.
    gc.collect()
    gc.freeze()
    ratios: dict[str, list[float]] = defaultdict(list)
    for repeat in range(repeats):
        # Alternate which side goes first: slow drift of the machine's speed then cancels out.
        for side in ("engine", "service") if repeat % 2 == 0 else ("service", "engine"):
            if side == "engine":
                cpu, start = time.process_time(), time.perf_counter()
                out = folder / "engine" / str(repeat)
                execute_runs(specs, [out / str(i) for i in range(len(specs))], batch=True)
                engine_s, engine_cpu = time.perf_counter() - start, time.process_time() - cpu
            else:
                service = _service_once(stack, sweep)
        ratios["results"].append(service.results_s / engine_s - 1)
        ratios["idle"].append(service.idle_s / engine_s - 1)
        ratios["cpu"].append(service.cpu_s / engine_cpu - 1)
        ratios["direct"].append(service.bookkeeping_s / (service.trained_s - service.hooks_s))
        ratios["engine in worker"].append((service.trained_s - service.hooks_s) / engine_s - 1)
        print(
            f"{runs} runs x {steps} steps, round {repeat + 1}: engine alone {engine_s:.2f} s "
            f"({engine_cpu:.1f} CPU s, {engine_s / runs:.3f} s a run); service: results "
            f"{service.results_s:.2f} s ({_percent(ratios['results'][-1])}), worker idle "
            f"{service.idle_s:.2f} s ({_percent(ratios['idle'][-1])}), {service.cpu_s:.1f} CPU s "
            f"({_percent(ratios['cpu'][-1])}); bookkeeping measured in the service itself "
            f"{service.bookkeeping_s:.2f} s ({_percent(ratios['direct'][-1])} of its engine time)"
        )
    median = {name: statistics.median(values) for name, values in ratios.items()}
    print(
        f"overhead, median of {repeats} rounds: wall-clock to results {_percent(median['results'])}, "
        f"to the worker idle {_percent(median['idle'])}, CPU {_percent(median['cpu'])}; "
        f"bookkeeping measured in the service {_percent(median['direct'])}; the worker's engine call "
        f"(hooks excluded) against the engine alone {_percent(median['engine in worker'])}"
    )


def _percent(ratio: float) -> str:
    return f"{100 * ratio:+.1f}%"


def _service_once(stack: Stack, sweep: dict[str, Any]) -> ServiceRound:
    meter = CpuMeter(stack)
    start = time.time()
    response = stack.client.post("/v1/experiments", json=sweep)
    response.raise_for_status()
    experiment_id = str(response.json()["id"])
    wait_finished(stack, experiment_id)
    stack.wait_idle()
    idle = time.time()
    finished = stack.experiment(experiment_id)[2]
    assert finished is not None
    cpu = meter.elapsed()
    print("  service CPU s: " + ", ".join(f"{kind} {seconds:.2f}" for kind, seconds in sorted(cpu.items())))
    time.sleep(0.5)  # the worker's log file catches up
    [message] = [
        line["message"]
        for line in _log_lines(stack.logs / "worker.log")
        if line.get("experiment_id") == experiment_id and line["message"].startswith("batch of")
    ]
    print(f"  worker: {message}")
    found = BATCH_TIMES.search(message)
    assert found is not None, message
    return ServiceRound(
        finished.timestamp() - start,
        idle - start,
        sum(cpu.values()),
        float(found["trained"]),
        float(found["hooks"]),
    )


# ------------------------------------------------------------------------------------- set-up
@contextmanager
def service_stack(folder: Path) -> Iterator[Stack]:
    name = f"gni_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    prefix = f"gni-bench-{uuid.uuid4().hex[:8]}:"
    logs = folder / "logs"
    logs.mkdir(parents=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        upgrade_database(url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GNI_")}
        env |= {
            "GNI_DATABASE_URL": url,
            "GNI_DATA_FOLDER": str(folder / "data"),
            "GNI_EXECUTOR": "celery",
            "GNI_BROKER_KEY_PREFIX": prefix,
            "GNI_LOG_FORMAT": "json",
        }
        port = 18000 + os.getpid() % 1000
        api_command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "api.app:create_app",
            "--port",
            str(port),
        ]
        worker_command = [sys.executable, "-m", "gni_cli.main", "worker", "--queues", "cpu"]
        worker_command += ["--hostname", f"bench-{prefix.rstrip(':')}@%h"]
        for command, log in ((api_command, "api.log"), (worker_command, "worker.log")):
            with (logs / log).open("wb") as out:
                processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
            psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as database,
        ):
            stack = Stack(
                client,
                database,
                redis.Redis(),
                prefix,
                logs,
                {"api": processes[0].pid, "worker": processes[1].pid},
                name,
            )
            _wait_ready(stack, logs)
            yield stack
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        broker = redis.Redis()
        keys = list(broker.scan_iter(match=f"{prefix}*"))
        if keys:
            broker.delete(*keys)


def _wait_ready(stack: Stack, logs: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            api_ready = stack.client.get("/readyz").status_code == 200
        except httpx.TransportError:
            api_ready = False
        lines = _log_lines(logs / "worker.log")
        if api_ready and any(line.get("message", "").endswith(" ready.") for line in lines):
            return
        time.sleep(0.2)
    raise TimeoutError("the API or the worker did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--submissions", type=int, default=40)
    parser.add_argument("--busy-submissions", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    folder = Path(tempfile.mkdtemp(prefix="gni-bench-"))
    try:
        with service_stack(folder) as stack:
            if args.submissions:
                measure_dispatch(stack, args.submissions)
            if args.busy_submissions:
                measure_back_to_back(stack, args.busy_submissions + 1)
            if args.runs:
                measure_overhead(stack, args.runs, args.steps, args.repeats, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # a 1,000-run sweep leaves ~400 MB of files
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
