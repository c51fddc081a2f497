"""Fixtures of the security tests: apps on a fresh database of their own, API keys, a spec.

Unlike the service tests, these apps commit for real (idempotency and concurrency need it): each
test gets a migrated SQLite file, or a PostgreSQL database copied from a migrated template and
dropped afterwards. PostgreSQL (``GNI_TEST_POSTGRES_URL``, default 127.0.0.1:5432) is skipped when
unreachable, except under ``CI=true`` where that fails the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from api.app import create_app
from gni_service.auth import create_api_key
from gni_service.context import ServiceContext
from gni_service.db import Database
from gni_service.migrate import upgrade_database
from gni_service.settings import ServiceSettings
from gni_service.storage import LocalArtifactStore
from tests.support import RecordingExecutor, missing_service

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _admin_url() -> str:
    return os.environ.get("GNI_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin(statement: str) -> None:
    with psycopg.connect(_libpq(_admin_url()), autocommit=True, connect_timeout=3) as connection:
        connection.execute(statement)  # type: ignore[arg-type]


def _new_database(template: str | None = None) -> str:
    name = f"gni_sec_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return make_url(_admin_url()).set(database=name).render_as_string(hide_password=False)


def _drop(url: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def security_postgres_template() -> Iterator[str]:
    try:
        url = _new_database()
    except psycopg.Error as error:
        missing_service(f"PostgreSQL is not reachable at {make_url(_admin_url())!r}: {error}")
    try:
        upgrade_database(url)
        yield str(make_url(url).database)
    finally:
        _drop(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'security.sqlite3'}"
        upgrade_database(url)
        yield url
        return
    url = _new_database(template=request.getfixturevalue("security_postgres_template"))
    try:
        yield url
    finally:
        _drop(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'security.sqlite3'}"
    upgrade_database(url)
    return url


class AppHandle:
    def __init__(self, app: FastAPI, context: ServiceContext, executor: RecordingExecutor) -> None:
        self.app = app
        self.context = context
        self.executor = executor
        self.database = context.database

    def new_key(self, name: str = "tester") -> str:
        with self.database.transaction() as session:
            _, plaintext = create_api_key(session, name)
        return plaintext


MakeApp = Callable[..., AppHandle]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    """``make_app(url, auth="required", **settings)``: an app with a recording executor."""
    databases: list[Database] = []

    def build(url: str, **overrides: Any) -> AppHandle:
        values: dict[str, Any] = {
            "data_folder": tmp_path / "data",
            "database_url": url,
            "max_sweep_runs": 200,
            "rate_limit_per_s": 0.0,
            "log_format": "text",
        }
        values.update(overrides)
        settings = ServiceSettings(**values)
        database = Database(url)
        databases.append(database)
        executor = RecordingExecutor()
        store = LocalArtifactStore(settings.resolved_artifact_dir)
        context = ServiceContext(settings, database, store, executor)
        return AppHandle(create_app(context=context), context, executor)

    yield build
    for database in databases:
        database.dispose()


@pytest.fixture
def client_of() -> Iterator[Callable[[AppHandle], TestClient]]:
    clients: list[TestClient] = []

    def open_client(handle: AppHandle) -> TestClient:
        client = TestClient(handle.app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def tiny_spec() -> dict[str, Any]:
    return {
        "task": "regression",
        "data": {"name": "sinusoids", "n_points": 64, "frequencies": [1.0, 3.0, 5.0]},
        "model": {"hidden": [16, 16]},
        "noise": {"sigma": 0.1},
        "training": {"steps": 30, "lr": 0.01},
        "analyses": {"record_every": 10, "noise_gap_samples": 8},
    }


def _assert_error_shape(response: Any, status: int, error_type: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "details"}, body
    if error_type is not None:
        assert body["error"]["type"] == error_type, body
    return dict(body["error"])


@pytest.fixture
def error_of() -> Callable[..., dict[str, Any]]:
    """``error_of(response, status, type)``: checks the one JSON error shape, returns its ``error``."""
    return _assert_error_shape
