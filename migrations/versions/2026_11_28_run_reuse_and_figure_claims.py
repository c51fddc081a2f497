"""run reuse and figure claims

Runs get ``reused_from``; artifact keys may be shared (a reused run's records name the objects of
the run that trained it), so their unique constraint becomes a plain index; experiments get the
claim columns of their comparison figures. Experiments that already have figures are marked drawn,
the others finished with succeeded runs are left pending for the reaper to draw.

Downgrading deletes data: artifact keys become unique again, so the artifact records of reused runs
(which name their source run's objects) are deleted; the objects and the source's records stay.

Revision ID: 20261128_reuse_figures
Revises: 20261127_api_keys
Create Date: 2026-11-28 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261128_reuse_figures"
down_revision: str | None = "20261127_api_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Adding columns never rebuilds a table, not even in SQLite's batch mode.
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("figures_state", sa.String(16), server_default="pending", nullable=False))
        batch.add_column(sa.Column("figures_claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("figures_attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("figures_error", sa.Text(), nullable=True))
        batch.create_index("ix_experiments_figures_state", ["figures_state"])
    op.execute(
        "UPDATE experiments SET figures_state = 'drawn' "
        "WHERE id IN (SELECT experiment_id FROM artifacts WHERE run_id IS NULL)"
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("reused_from", sa.String(40), nullable=True))
    # SQLite rebuilds the table to drop the constraint: safe here, no table refers to artifacts.
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_constraint("uq_artifacts_key", type_="unique")
        batch.create_index("ix_artifacts_key", ["key"])


def downgrade() -> None:
    # Keys become unique again: the records of reused runs, which share their source's objects, go.
    op.execute("DELETE FROM artifacts WHERE run_id IN (SELECT id FROM runs WHERE reused_from IS NOT NULL)")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_index("ix_artifacts_key")
        batch.create_unique_constraint("uq_artifacts_key", ["key"])
    # Plain DROP COLUMN (SQLite 3.35+), never a batch rebuild of runs or experiments: dropping
    # either table to copy it would cascade, with SQLite's foreign keys on, into their children.
    op.drop_column("runs", "reused_from")
    op.drop_index("ix_experiments_figures_state", table_name="experiments")
    for column in ("figures_error", "figures_attempts", "figures_claimed_at", "figures_state"):
        op.drop_column("experiments", column)
