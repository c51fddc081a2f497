"""experiment run figures

Experiments get ``run_figures``: whether each run gets its own figures (1–3 s of a CPU core a run;
a large sweep may want only its numbers). Existing experiments drew them: the column defaults to
true. (This file carries the day it was written; the revision it follows was named a day ahead.)

Revision ID: 20261127_run_figures
Revises: 20261128_reuse_figures
Create Date: 2026-11-27 12:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261127_run_figures"
down_revision: str | None = "20261128_reuse_figures"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN: in batch mode Alembic would rebuild experiments for this default (an
    # expression), and SQLite would cascade the table's drop into its runs.
    op.add_column(
        "experiments", sa.Column("run_figures", sa.Boolean(), server_default=sa.true(), nullable=False)
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), never a batch rebuild of experiments (see 20261128_reuse_figures).
    op.drop_column("experiments", "run_figures")
