"""an index on runs.finished_at

``/metrics`` counts the runs finished in the last day on every scrape; without an index that read
every row of ``runs`` (about 200 ms at 500,000 runs, growing with the table). On PostgreSQL the index
is built ``CONCURRENTLY``, so a large table keeps taking writes while it is built.

Revision ID: 20261128_runs_finished
Revises: 20261128_figures_nothing
Create Date: 2026-11-28 07:30:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261128_runs_finished"
down_revision: str | None = "20261128_figures_nothing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_runs_finished_at"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():  # CONCURRENTLY cannot run inside a transaction
            # A build interrupted before (a lock timeout) leaves an invalid index of this name that
            # IF NOT EXISTS would keep: build it afresh instead.
            op.drop_index(INDEX, table_name="runs", postgresql_concurrently=True, if_exists=True)
            op.create_index(INDEX, "runs", ["finished_at"], postgresql_concurrently=True)
    else:
        op.create_index(INDEX, "runs", ["finished_at"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="runs")
