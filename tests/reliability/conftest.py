"""Fixtures of the fault tests: a private PostgreSQL and a private Redis, killed and restarted at will.

Never the machine's shared servers (5432, 6379): each instance here is started by the test setup on
a free loopback port (PostgreSQL from ``initdb`` into a temporary folder, owned by the ``postgres``
user when the tests run as root, since PostgreSQL refuses root), and stopped by its own pid. Celery
workers run as subprocesses in their own process group, so that SIGKILL takes parent and children.
A missing binary skips these tests, except under ``CI=true`` where it fails them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis

from gni_service.migrate import upgrade_database
from tests.support import missing_service

missing = missing_service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ------------------------------------------------------------------------------------ PostgreSQL
@dataclass
class PrivatePostgres:
    """One ``postgres`` server of the test run's own, in ``folder``, on ``port``."""

    folder: Path
    port: int
    as_user: list[str]
    pid: int | None = None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl = shutil.which("pg_ctl")
        assert pg_ctl is not None
        subprocess.run([*self.as_user, pg_ctl, "-D", str(self.data), *args], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-l", str(self.folder / "postgres.log"), "-o", options, "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL the postmaster (by its pid) and its backends: the database vanishes mid-query."""
        if self.pid is None:
            return
        backends = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in [self.pid, *map(int, backends)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not _alive(self.pid), 10, "postgres to die")
        self.pid = None
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.pid is not None and _alive(self.pid):
            os.kill(self.pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                wait_until(lambda: not _alive(self.pid), 30, "postgres to stop")
            except AssertionError:
                self.kill()
        self.pid = None

    def create_database(self) -> str:
        name = f"gni_fault_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        url = self.url(name)
        upgrade_database(url)
        return url


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as dead
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server for the whole session (tests that stop it start it again)."""
    initdb = shutil.which("initdb")
    if initdb is None or shutil.which("pg_ctl") is None:
        missing("initdb/pg_ctl are not installed")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="gni-fault-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root without a postgres user to run PostgreSQL as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PrivatePostgres(folder, free_port(), as_user)
    assert initdb is not None
    subprocess.run(
        [*as_user, initdb, "-D", str(server.data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(private_postgres: PrivatePostgres) -> str:
    if private_postgres.pid is None:
        private_postgres.start()
    return private_postgres.create_database()


# ----------------------------------------------------------------------------------------- Redis
@dataclass
class PrivateRedis:
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        command = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, 20, "redis-server to answer")
        client.close()

    def kill(self) -> None:
        """SIGKILL by pid: every queued message is gone (nothing is persisted)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed")
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


# --------------------------------------------------------------------------------------- workers
FAST_LEASES = {
    "GNI_HEARTBEAT_INTERVAL_S": "1",
    "GNI_LEASE_TIMEOUT_S": "4",
    "GNI_REAPER_INTERVAL_S": "0.5",
    "GNI_PROGRESS_INTERVAL_S": "0.2",
    "GNI_CANCEL_POLL_INTERVAL_S": "0.2",
    "GNI_CHECKPOINT_EVERY_STEPS": "100",
    "GNI_CHECKPOINT_MIN_INTERVAL_S": "0",
    "GNI_INFRASTRUCTURE_RETRY_S": "60",
    "GNI_MAX_ATTEMPTS": "3",
}


@dataclass
class Workers:
    """Celery workers as subprocesses, each in its own process group."""

    environment: dict[str, str]
    folder: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def start(self, name: str) -> None:
        command = [
            sys.executable,
            *("-m", "gni_cli.main", "worker", "--pool", "prefork", "--concurrency", "1"),
            f"--hostname={name}-{uuid.uuid4().hex[:6]}@%h",
            "--log-level=info",
        ]
        with (self.folder / f"{name}.log").open("ab") as out:
            self.processes[name] = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.environment, start_new_session=True
            )
        wait_until(lambda: " ready." in self.log(name) or self.processes[name].poll() is not None, 60, name)
        assert self.processes[name].poll() is None, self.log(name)[-3000:]

    def kill(self, name: str) -> None:
        """SIGKILL the worker's whole process group (parent and training child), as a crash would."""
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name)


def stack_environment(database_url: str, broker_url: str, data_folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNI_")}
    env.update(
        GNI_DATABASE_URL=database_url,
        GNI_DATA_FOLDER=str(data_folder),
        GNI_EXECUTOR="celery",
        GNI_BROKER_URL=broker_url,
        GNI_BROKER_KEY_PREFIX=f"gni-fault-{uuid.uuid4().hex[:8]}:",
        GNI_TASK_MAX_RETRIES="20",
        **FAST_LEASES,
        **extra,
    )
    return env


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Workers]]:
    made: list[Workers] = []

    def make(environment: dict[str, str]) -> Workers:
        w = Workers(environment, tmp_path)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop_all()
