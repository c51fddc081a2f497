"""initial schema: experiments, runs, metric points, artifacts

Revision ID: 20261126_initial
Revises:
Create Date: 2026-11-26 17:40:02+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "20261126_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as they were at this revision (never import the live models).
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _status(name: str) -> sa.Enum:
    return sa.Enum(*STATUSES, name=name, native_enum=False, create_constraint=True, length=16)


def _time(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("preset", sa.String(64), nullable=True),
        sa.Column("base_spec", _json(), nullable=False),
        sa.Column("axes", _json(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("status", _status("experiment_status"), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("n_runs", sa.Integer(), nullable=False),
        sa.Column("n_queued", sa.Integer(), nullable=False),
        sa.Column("n_running", sa.Integer(), nullable=False),
        sa.Column("n_succeeded", sa.Integer(), nullable=False),
        sa.Column("n_failed", sa.Integer(), nullable=False),
        sa.Column("n_cancelled", sa.Integer(), nullable=False),
        _time("created_at", nullable=False),
        _time("updated_at", nullable=False),
        _time("started_at"),
        _time("finished_at"),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
    )
    op.create_index("ix_experiments_created_at_id", "experiments", ["created_at", "id"])
    op.create_index("ix_experiments_owner", "experiments", ["owner"])
    op.create_index("ix_experiments_owner_idempotency_key", "experiments", ["owner", "idempotency_key"])
    op.create_index("ix_experiments_spec_hash", "experiments", ["spec_hash"])
    op.create_index("ix_experiments_status", "experiments", ["status"])

    op.create_table(
        "runs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("experiment_id", sa.String(40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("coords", _json(), nullable=False),
        sa.Column("batch_key", sa.String(64), nullable=False),
        sa.Column("status", _status("run_status"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("progress_step", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        _time("queued_at", nullable=False),
        _time("heartbeat_at"),
        _time("started_at"),
        _time("finished_at"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("summary", _json(), nullable=True),
        sa.Column("device", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_runs_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_batch_key_status", "runs", ["batch_key", "status"])
    op.create_index("ix_runs_experiment_id_position", "runs", ["experiment_id", "position"], unique=True)
    op.create_index("ix_runs_experiment_id_status", "runs", ["experiment_id", "status"])
    op.create_index("ix_runs_spec_hash", "runs", ["spec_hash"])
    op.create_index("ix_runs_status_queued_at", "runs", ["status", "queued_at"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("experiment_id", sa.String(40), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        _time("created_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_artifacts_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_artifacts_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sa.UniqueConstraint("key", name="uq_artifacts_key"),
    )
    op.create_index("ix_artifacts_experiment_id", "artifacts", ["experiment_id"])
    op.create_index("ix_artifacts_run_id", "artifacts", ["run_id"])

    op.create_table(
        "metric_points",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_metric_points_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_metric_points"),
    )
    op.create_index("ix_metric_points_run_id_name_step", "metric_points", ["run_id", "name", "step"])


def downgrade() -> None:
    op.drop_index("ix_metric_points_run_id_name_step", table_name="metric_points")
    op.drop_table("metric_points")
    op.drop_index("ix_artifacts_run_id", table_name="artifacts")
    op.drop_index("ix_artifacts_experiment_id", table_name="artifacts")
    op.drop_table("artifacts")
    for index in (
        "ix_runs_status_queued_at",
        "ix_runs_spec_hash",
        "ix_runs_experiment_id_status",
        "ix_runs_experiment_id_position",
        "ix_runs_batch_key_status",
    ):
        op.drop_index(index, table_name="runs")
    op.drop_table("runs")
    for index in (
        "ix_experiments_status",
        "ix_experiments_spec_hash",
        "ix_experiments_owner_idempotency_key",
        "ix_experiments_owner",
        "ix_experiments_created_at_id",
    ):
        op.drop_index(index, table_name="experiments")
    op.drop_table("experiments")
