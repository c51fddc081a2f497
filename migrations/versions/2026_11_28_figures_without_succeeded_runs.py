"""figures of experiments without a succeeded run

An experiment whose runs all failed or were cancelled has nothing to compare, so no one ever claims
its figures; before this revision it kept ``figures_state = 'pending'`` for good. New ones are marked
failed when they finish (``gni_service.experiments.refresh_experiment``); this marks those already
stored the same way. Downgrading leaves the rows as they are: 'failed' with its reason is a state
the earlier code reads too.

Revision ID: 20261128_figures_nothing
Revises: 20261127_run_figures
Create Date: 2026-11-28 05:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261128_figures_nothing"
down_revision: str | None = "20261127_run_figures"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTHING_TO_DRAW = "no run succeeded: there is nothing to draw"


def upgrade() -> None:
    op.execute(
        "UPDATE experiments SET figures_state = 'failed', "
        f"figures_error = '{NOTHING_TO_DRAW}' "
        "WHERE figures_state = 'pending' AND n_succeeded = 0 "
        "AND status IN ('succeeded', 'failed', 'cancelled')"
    )


def downgrade() -> None:
    pass
