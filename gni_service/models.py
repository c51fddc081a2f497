"""The database schema: experiments, their runs, metric series and artifacts.

The same models serve SQLite (embedded mode) and PostgreSQL (production): JSON columns are JSONB on
PostgreSQL and JSON text on SQLite, times are stored in UTC and read back timezone-aware.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL (indexable, typed extraction), JSON text elsewhere; None is stored as SQL NULL.
JSONDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigIntegerKey = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous: pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled})
ACTIVE_STATUSES = frozenset({RunStatus.queued, RunStatus.running})


class FiguresState(enum.StrEnum):
    """Where an experiment's comparison figures stand (see ``gni_service.executor.experiment_figures``).

    ``pending`` until a process claims them (``drawing``, with ``figures_claimed_at`` as its lease),
    then ``drawn``, or ``failed`` when drawing raised or every attempt was used up.
    """

    pending = "pending"
    drawing = "drawing"
    drawn = "drawn"
    failed = "failed"


def _status_enum(name: str) -> Enum:
    # Stored as plain strings with a CHECK constraint, so adding a status is a one-line migration.
    return Enum(
        RunStatus,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Experiment(Base):
    """A named sweep: a base run spec and the axes of a grid over its fields, expanded into runs."""

    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    preset: Mapped[str | None] = mapped_column(String(64))
    base_spec: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # [{"path": "noise.sigma", "values": [...]}, ...]: a list, because JSONB does not keep key order.
    axes: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[RunStatus] = mapped_column(_status_enum("experiment_status"), index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    n_runs: Mapped[int] = mapped_column(Integer)
    n_queued: Mapped[int] = mapped_column(Integer, default=0)
    n_running: Mapped[int] = mapped_column(Integer, default=0)
    n_succeeded: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_cancelled: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A plain string (values of FiguresState): the reaper filters on it, nothing else constrains it.
    figures_state: Mapped[str] = mapped_column(
        String(16), default=FiguresState.pending.value, server_default=FiguresState.pending.value
    )
    figures_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    figures_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    figures_error: Mapped[str | None] = mapped_column(Text)
    # Whether each run gets its own figures (the comparison figures above are drawn either way).
    run_figures: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    __table_args__ = (
        Index(None, "created_at", "id"),
        Index(None, "owner", "idempotency_key"),
        Index(None, "figures_state"),
    )

    def axis_paths(self) -> list[str]:
        return [str(axis["path"]) for axis in self.axes]


class Run(Base):
    """One expanded run spec of an experiment, its progress and its results."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, doc="Index of the run in the sweep's expansion order.")
    spec: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    coords: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    batch_key: Mapped[str] = mapped_column(String(64), doc="Runs sharing a key train as one stacked batch.")
    status: Mapped[RunStatus] = mapped_column(_status_enum("run_status"))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    device: Mapped[str | None] = mapped_column(String(64))
    # Provenance, not a reference: no foreign key, so the record survives the source run's deletion
    # (the reused run owns copies of the summary, the metric rows and the artifact records).
    reused_from: Mapped[str | None] = mapped_column(
        String(40), doc="The run that trained this result, when it was reused instead of trained."
    )

    __table_args__ = (
        Index(None, "experiment_id", "position", unique=True),
        Index(None, "experiment_id", "status"),
        Index(None, "status", "queued_at"),
        Index(None, "batch_key", "status"),
        Index(None, "finished_at"),  # /metrics: the runs finished in the last day
    )


class MetricPoint(Base):
    """One value of one series of a run (``train_loss`` at step 100); written in bulk."""

    __tablename__ = "metric_points"

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    step: Mapped[int] = mapped_column(Integer)
    # NULL stands for a non-finite value (SQLite cannot store NaN).
    value: Mapped[float | None] = mapped_column(Float(precision=53))

    __table_args__ = (Index(None, "run_id", "name", "step"),)


class Artifact(Base):
    """A stored file of a run (``run_id`` set) or of a whole experiment (``run_id`` NULL).

    A stored object is never overwritten, so several records may name the same ``key``: a reused
    run's records point at the objects of the run that trained it (see :mod:`gni_service.reuse`).
    Delete through :func:`gni_service.artifacts.delete_artifacts`, which keeps shared objects.
    """

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(512), index=True)
    content_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """A client's API key: only its SHA-256 is kept; ``id`` is the visible part of the key itself."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyRecord(Base):
    """The answer to a POST made with an ``Idempotency-Key``, replayed when the same request repeats.

    ``owner`` is the API key's id ("" without authentication); ``request_hash`` covers the method,
    path, query and canonical body, so the same key with another request is told apart (409).
    """

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
