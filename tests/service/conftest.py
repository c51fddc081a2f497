"""Fixtures of the service tests: SQLite and real PostgreSQL databases, an app, a client.

Every API test runs twice, on SQLite and on PostgreSQL (``GNI_TEST_POSTGRES_URL``, default the
machine's server at 127.0.0.1:5432). Each test runs inside a transaction that is rolled back at its
end: the app's sessions join it through savepoints, so route commits stay inside the test. Tests
that need real commits (the executor, migrations) get a fresh database of their own, created from a
migrated template and dropped afterwards. When PostgreSQL cannot be reached the PostgreSQL half is
skipped, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from api.app import create_app
from api.dependencies import reading_session, writing_session
from gni_service.context import ServiceContext
from gni_service.db import Database, create_db_engine
from gni_service.migrate import upgrade_database
from gni_service.settings import ServiceSettings
from gni_service.storage import LocalArtifactStore
from tests.support import RecordingExecutor, missing_service

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def postgres_admin_url() -> str:
    return os.environ.get("GNI_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _require_postgres() -> None:
    try:
        with psycopg.connect(_libpq(postgres_admin_url()), connect_timeout=3):
            pass
    except psycopg.Error as error:
        missing_service(f"PostgreSQL is not reachable at {make_url(postgres_admin_url())!r}: {error}")


def _admin(statement: str) -> None:
    with psycopg.connect(_libpq(postgres_admin_url()), autocommit=True) as connection:
        connection.execute(statement)  # type: ignore[arg-type]


def create_postgres_database(template: str | None = None) -> str:
    name = f"gni_test_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


# --------------------------------------------------------------------------------- databases
@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database that fresh test databases are copied from."""
    _require_postgres()
    url = create_postgres_database()
    try:
        upgrade_database(url)
        yield str(make_url(url).database)
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_shared_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'shared.sqlite3'}"
    upgrade_database(url)
    return url


@pytest.fixture(scope="session")
def postgres_shared_url(postgres_template: str) -> Iterator[str]:
    url = create_postgres_database(template=postgres_template)
    yield url
    drop_postgres_database(url)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def shared_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A migrated database shared by the tests of a session (each test rolls back)."""
    name = "sqlite_shared_url" if backend == "sqlite" else "postgres_shared_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own, for code that commits for real."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        upgrade_database(url)
        yield url
        return
    template = request.getfixturevalue("postgres_template")
    url = create_postgres_database(template=template)
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def session(shared_url: str) -> Iterator[Session]:
    """A session inside a transaction rolled back at the end; commits release savepoints only."""
    engine = create_db_engine(shared_url)
    with engine.connect() as connection:
        transaction = connection.begin()
        with Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False) as s:
            yield s
        transaction.rollback()
    engine.dispose()


# ------------------------------------------------------------------------------------- the app


@pytest.fixture
def settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(data_folder=tmp_path / "data", max_sweep_runs=2000)


@pytest.fixture
def store(settings: ServiceSettings) -> LocalArtifactStore:
    return LocalArtifactStore(settings.resolved_artifact_dir)


@pytest.fixture
def executor() -> RecordingExecutor:
    return RecordingExecutor()


@pytest.fixture
def app(
    shared_url: str,
    session: Session,
    settings: ServiceSettings,
    store: LocalArtifactStore,
    executor: RecordingExecutor,
) -> Iterator[FastAPI]:
    database = Database(shared_url)
    context = ServiceContext(
        settings.model_copy(update={"database_url": shared_url}), database, store, executor
    )
    application = create_app(context=context)

    def joined_session() -> Iterator[Session]:
        yield session

    @contextmanager
    def joined_reads() -> Iterator[Connection]:
        yield session.connection()

    application.dependency_overrides[reading_session] = joined_session
    application.dependency_overrides[writing_session] = joined_session
    database.single_reads = joined_reads  # type: ignore[method-assign]  # the polled route's reads
    yield application
    database.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def tiny_spec() -> dict[str, object]:
    """A run that trains in well under a second on a CPU core."""
    return {
        "task": "regression",
        "data": {"name": "sinusoids", "n_points": 64, "frequencies": [1.0, 3.0, 5.0]},
        "model": {"hidden": [16, 16]},
        "noise": {"sigma": 0.1},
        "training": {"steps": 30, "lr": 0.01},
        "analyses": {"record_every": 10, "noise_gap_samples": 8},
    }


def _leaves(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _leaves(item, f"{prefix}.{key}").items()}
    if isinstance(value, list | tuple):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


VOLATILE_SUMMARY_KEYS = {".wall_time_s"}


@pytest.fixture
def assert_same_summary():
    """Compare two run summaries leaf by leaf: numbers to 1e-6 relative, the rest exactly; timings skipped."""

    def check(actual: dict, expected: dict) -> None:
        got = {k: v for k, v in _leaves(actual).items() if k not in VOLATILE_SUMMARY_KEYS}
        want = {k: v for k, v in _leaves(expected).items() if k not in VOLATILE_SUMMARY_KEYS}
        assert set(got) == set(want)
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
            else:
                assert got[key] == value, key

    return check
