"""Soak: N runs through the real distributed stack while workers and the broker die at random.

Starts, all private and on free loopback ports: a PostgreSQL (``initdb`` into a temporary folder,
run as the ``postgres`` user when started as root), a Redis (nothing persisted, so a restart comes
back empty), the API under uvicorn with the Celery executor (and its lease reaper) and two Celery
workers, artifacts in a local folder. Submits the runs over HTTP, then, until they are all done or
the chaos window closes, every few seconds SIGKILLs a random worker (restarting it shortly after)
or SIGKILLs Redis and restarts it empty. At the end it prints::

    submitted / succeeded / lost / duplicated

``lost``: runs not succeeded when the time limit ends; ``duplicated``: runs with an artifact or a
metric point stored twice (experiment-level figures, drawn once per experiment, are counted apart).
With ``--verify`` each run's final weights are also compared, bit for bit, with an uninterrupted
run of the same spec. Exit status 0 only for N / N / 0 / 0 (and no mismatch). Never touches the
machine's shared PostgreSQL or Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SPEC: dict[str, Any] = {
    "task": "regression",
    "data": {"name": "sinusoids", "n_points": 32, "frequencies": [1.0, 3.0]},
    "model": {"hidden": [8]},
    "noise": {"sigma": 0.1},
    "training": {"steps": 1200, "lr": 0.01, "mode": "gni"},
    "analyses": {"record_every": 50, "noise_gap_samples": 4},
}
FAST_LEASES = {
    "GNI_HEARTBEAT_INTERVAL_S": "1",
    "GNI_LEASE_TIMEOUT_S": "4",
    "GNI_REAPER_INTERVAL_S": "0.5",
    "GNI_REQUEUE_QUEUED_AFTER_S": "20",
    "GNI_PROGRESS_INTERVAL_S": "0.5",
    "GNI_CHECKPOINT_EVERY_STEPS": "100",
    "GNI_CHECKPOINT_MIN_INTERVAL_S": "0",
    "GNI_INFRASTRUCTURE_RETRY_S": "60",
    "GNI_MAX_ATTEMPTS": "25",
    "GNI_TASK_MAX_RETRIES": "50",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(message: str) -> None:
    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {message}\n")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise SystemExit(f"soak: timed out waiting for {what}")


@dataclass
class Stack:
    folder: Path
    pg_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    as_postgres: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------------------ PostgreSQL
    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/soak"

    def start_postgres(self) -> None:
        pg = self.folder / "pg"
        pg.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(pg, user.pw_uid, user.pw_gid)
            self.folder.chmod(0o711)  # postgres may pass through to its own folder, no more
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        run = [*self.as_postgres]
        subprocess.run(
            [*run, "initdb", "-D", str(pg / "data"), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
        )
        options = (
            f"-p {self.pg_port} -k {pg} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        subprocess.run(
            [*run, "pg_ctl", "-D", str(pg / "data"), "-l", str(pg / "log"), "-o", options, "-w", "start"],
            check=True,
            capture_output=True,
        )
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.pg_port} user=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE soak")
        from gni_service.migrate import upgrade_database

        upgrade_database(self.database_url)

    def stop_postgres(self) -> None:
        data = self.folder / "pg" / "data"
        if (data / "postmaster.pid").exists():
            pid = int((data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)

    # ----------------------------------------------------------------------------------- Redis
    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start_redis(self) -> None:
        command = [
            "redis-server",
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self._spawn("redis", command)
        import redis

        client = redis.Redis(port=self.redis_port, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, 20, "redis")
        client.close()

    # ----------------------------------------------------------------------------- processes
    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GNI_")}
        env.update(
            GNI_DATABASE_URL=self.database_url,
            GNI_DATA_FOLDER=str(self.folder / "data"),
            GNI_EXECUTOR="celery",
            GNI_AUTH="disabled",
            GNI_BROKER_URL=self.broker_url,
            GNI_BROKER_KEY_PREFIX="soak:",
            **FAST_LEASES,
        )
        return env

    def _spawn(self, name: str, command: list[str]) -> None:
        with (self.folder / f"{name}.log").open("ab") as out:
            self.processes[name] = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=ROOT,
                start_new_session=True,
            )

    def start_api(self) -> None:
        self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "api.app:create_app",
                "--port",
                str(self.api_port),
                "--log-level",
                "warning",
            ],
        )

        def ready() -> bool:
            try:
                return httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 60, "the API")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_worker(self, name: str) -> None:
        self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "gni_cli.main",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                f"--hostname={name}-{uuid.uuid4().hex[:6]}@%h",
            ],
        )

    def kill(self, name: str) -> None:
        """SIGKILL the process group (a worker's parent and training child die together)."""
        process = self.processes.pop(name, None)
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)

    def close(self) -> None:
        for name in list(self.processes):
            self.kill(name)
        self.stop_postgres()

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------------------------- the soak
def submit(client: httpx.Client, runs: int, per_experiment: int) -> list[str]:
    """Experiments of ``per_experiment`` seeds each; step counts differ, so each is its own batch."""
    ids = []
    for i in range((runs + per_experiment - 1) // per_experiment):
        seeds = min(per_experiment, runs - i * per_experiment)
        spec = {**SPEC, "training": {**SPEC["training"], "steps": SPEC["training"]["steps"] + i}}
        body = {"name": f"soak-{i}", "base": spec, "axes": {"seed": list(range(seeds))}}
        response = client.post("/v1/experiments", json=body, headers={"Idempotency-Key": f"soak-{i}"})
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


def chaos(
    stack: Stack, rng: random.Random, workers: list[str], done: Callable[[], bool], window_s: float
) -> Counter[str]:
    """Kill workers and the broker at random until ``done()`` or the window closes."""
    events: Counter[str] = Counter()
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline and not done():
        time.sleep(rng.uniform(2.0, 6.0))
        if rng.random() < 0.7:
            name = rng.choice(workers)
            say(f"SIGKILL {name}")
            stack.kill(name)
            time.sleep(rng.uniform(0.5, 3.0))
            stack.start_worker(name)
            events["worker killed"] += 1
        else:
            say("SIGKILL redis; restarting it empty")
            stack.kill("redis")
            time.sleep(rng.uniform(0.2, 2.0))
            stack.start_redis()
            events["broker restarted empty"] += 1
    return events


def tally(database_url: str, experiment_ids: list[str]) -> tuple[dict[str, Any], list[Any]]:
    from sqlalchemy import func, select

    from gni_service.db import Database
    from gni_service.models import Artifact, MetricPoint, Run

    database = Database(database_url)
    try:
        with database.reading() as session:
            runs = list(session.scalars(select(Run).where(Run.experiment_id.in_(experiment_ids))))
            double_artifacts = set(
                session.scalars(
                    select(Artifact.run_id)
                    .where(Artifact.run_id.is_not(None))
                    .group_by(Artifact.run_id, Artifact.name)
                    .having(func.count() > 1)
                )
            )
            double_figures = set(
                session.scalars(
                    select(Artifact.experiment_id)
                    .where(Artifact.run_id.is_(None))
                    .group_by(Artifact.experiment_id, Artifact.name)
                    .having(func.count() > 1)
                )
            )
            with_figures = session.scalar(
                select(func.count(func.distinct(Artifact.experiment_id))).where(Artifact.run_id.is_(None))
            )
            double_points = set(
                session.scalars(
                    select(MetricPoint.run_id)
                    .group_by(MetricPoint.run_id, MetricPoint.name, MetricPoint.step)
                    .having(func.count() > 1)
                )
            )
    finally:
        database.dispose()
    succeeded = [run for run in runs if run.status.value == "succeeded"]
    figures: dict[str, Any] = {
        "submitted": len(runs),
        "succeeded": len(succeeded),
        "lost": len(runs) - len(succeeded),
        "duplicated": len(double_artifacts | double_points),
        "statuses": dict(Counter(run.status.value for run in runs)),
        "attempts": dict(sorted(Counter(run.attempt for run in runs).items())),
        "experiments": len(experiment_ids),
        "experiments_with_figures": with_figures,
        "experiments_with_figures_twice": len(double_figures),
    }
    return figures, runs


def verify(stack: Stack, runs: list[Any]) -> int:
    """Runs whose stored weights differ from an uninterrupted run of the same spec (bit for bit)."""
    import torch
    from safetensors.torch import load_file
    from sqlalchemy import select

    from gni_engine.spec import RunSpec
    from gni_engine.training import BatchTrainer
    from gni_service.db import Database
    from gni_service.models import Artifact

    by_experiment: dict[str, list[Any]] = {}
    for run in runs:
        by_experiment.setdefault(run.experiment_id, []).append(run)
    database = Database(stack.database_url)
    artifacts = stack.folder / "data" / "artifacts"
    mismatched = 0
    try:
        for group in by_experiment.values():
            group.sort(key=lambda r: r.position)
            states = BatchTrainer([RunSpec.model_validate(r.spec) for r in group]).run()
            with database.reading() as session:
                for run, state in zip(group, states, strict=True):
                    key = session.scalar(
                        select(Artifact.key).where(
                            Artifact.run_id == run.id,
                            Artifact.name == "model.safetensors",
                        )
                    )
                    stored = load_file(str(artifacts / key)) if key else {}
                    same = key is not None and all(
                        torch.equal(stored[k], v) for k, v in state.weights.items()
                    )
                    mismatched += not same
    finally:
        database.dispose()
    return mismatched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40, help="runs to submit (default 40)")
    parser.add_argument("--per-experiment", type=int, default=4, help="runs per experiment (one batch)")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    parser.add_argument("--chaos-s", type=float, default=240.0, help="longest chaos window (s)")
    parser.add_argument("--time-limit-s", type=float, default=600.0, help="give up after this long (s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the chaos schedule")
    parser.add_argument("--verify", action="store_true", help="compare final weights bit for bit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    rng = random.Random(args.seed)
    stack = Stack(Path(tempfile.mkdtemp(prefix="gni-soak-")))
    say(f"stack in {stack.folder}")
    try:
        stack.start_postgres()
        stack.start_redis()
        stack.start_api()
        workers = [f"worker{i}" for i in range(args.workers)]
        for name in workers:
            stack.start_worker(name)
        with httpx.Client(base_url=stack.api_url, timeout=30) as client:
            experiment_ids = submit(client, args.runs, args.per_experiment)
            say(f"submitted {args.runs} runs in {len(experiment_ids)} experiments")

            def all_done() -> bool:
                try:
                    states = [client.get(f"/v1/experiments/{i}").json()["status"] for i in experiment_ids]
                except (httpx.HTTPError, KeyError, ValueError):
                    return False
                return all(s in ("succeeded", "failed", "cancelled") for s in states)

            events = chaos(stack, rng, workers, all_done, args.chaos_s)
            say(f"chaos over: {dict(events)}; waiting for the rest")
            deadline = started + args.time_limit_s
            while time.monotonic() < deadline and not all_done():
                time.sleep(1.0)
        figures, runs = tally(stack.database_url, experiment_ids)
        resumes = sum(stack.log(name).count("resumes at step") for name in workers)
        mismatched = verify(stack, runs) if args.verify else None
        elapsed = time.monotonic() - started
        print(
            f"submitted / succeeded / lost / duplicated: {figures['submitted']} / {figures['succeeded']}"
            f" / {figures['lost']} / {figures['duplicated']}"
        )
        print(
            json.dumps(
                {
                    **figures,
                    "faults": dict(events),
                    "resumed_from_checkpoint": resumes,
                    "weights_mismatched": mismatched,
                    "wall_s": round(elapsed, 1),
                }
            )
        )
        ok = (
            figures["submitted"] == figures["succeeded"] == args.runs
            and figures["lost"] == figures["duplicated"] == 0
            and not mismatched
        )
        return 0 if ok else 1
    finally:
        stack.close()
        if args.keep:
            say(f"logs kept in {stack.folder}")
        else:
            shutil.rmtree(stack.folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
