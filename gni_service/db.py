"""Database engines and sessions for SQLite (embedded) and PostgreSQL.

Two kinds of session: :meth:`Database.reading` for requests that only read, and
:meth:`Database.writing` for those that change rows. On SQLite a writing session starts with
``BEGIN IMMEDIATE``, so two writers queue on the database lock instead of one failing with
"database is locked" when it upgrades a read transaction; readers never block in WAL mode.
:meth:`Database.single_reads` is the polled path's Core connection, outside any transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_IMMEDIATE = "gni_sqlite_begin_immediate"
_NO_TRANSACTION = "gni_sqlite_no_transaction"
SQLITE_BUSY_TIMEOUT_MS = 30_000


POSTGRES_CONNECT_TIMEOUT_S = 10


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings this service relies on (foreign keys and WAL on SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database not in (None, "", ":memory:"):
            # A file's pool keeps as many connections as threads may read at once: an overflow
            # connection is opened (file, PRAGMAs) and closed again by every request that needs it.
            kwargs.setdefault("pool_size", 20)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 40)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # A server that never answers a connection is an error after this long, not a hung thread.
        connect_args = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S, **kwargs.pop("connect_args", {})}
        kwargs["connect_args"] = connect_args
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # pysqlite's own transaction handling breaks SAVEPOINT and BEGIN IMMEDIATE: take it over.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get(_NO_TRANSACTION, False):
            return  # autocommit: each statement reads a consistent snapshot of its own
        connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_IMMEDIATE, False) else "BEGIN")


class Database:
    """One engine and its session factories; safe to share between threads."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.engine = create_db_engine(url, **engine_kwargs)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(**{_IMMEDIATE: True}), expire_on_commit=False
        )
        # Reads outside a transaction: SQLite's own autocommit, PostgreSQL's AUTOCOMMIT (no BEGIN
        # and ROLLBACK round trips). Setting AUTOCOMMIT on SQLite would cost a PRAGMA per checkout.
        no_transaction = (
            {_NO_TRANSACTION: True} if self.dialect == "sqlite" else {"isolation_level": "AUTOCOMMIT"}
        )
        self._single_reads = self.engine.execution_options(**no_transaction)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def reading(self) -> Session:
        return self._read()

    def writing(self) -> Session:
        return self._write()

    @contextmanager
    def single_reads(self) -> Iterator[Connection]:
        """A Core connection for reads that need no snapshot in common, outside any transaction.

        Each statement sees a consistent state of its own; nothing may be written through it.
        The cheapest way to the database (the polled ``GET /v1/runs/{id}``): no ORM session, no
        BEGIN, COMMIT or ROLLBACK.
        """
        with self._single_reads.connect() as connection:
            yield connection

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A writing session committed on success and rolled back on any exception."""
        with self.writing() as session, session.begin():
            yield session

    def check(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
