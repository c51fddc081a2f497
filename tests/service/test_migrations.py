"""Alembic: upgrade → downgrade → upgrade on SQLite and PostgreSQL, and no drift from the models."""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, insert, inspect, select

from gni_service.db import create_db_engine
from gni_service.experiments import NOTHING_TO_DRAW
from gni_service.migrate import MIGRATIONS_DIR, alembic_config, downgrade_database, upgrade_database
from gni_service.models import Artifact, Base, Experiment, MetricPoint, Run, utcnow

TABLES = {
    "experiments",
    "runs",
    "metric_points",
    "artifacts",
    "api_keys",
    "idempotency_keys",
    "alembic_version",
}


def _tables(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_leaves_no_drift(fresh_url):
    # fresh_url is already at head: go down to nothing and back up twice.
    assert _tables(fresh_url) == TABLES
    downgrade_database(fresh_url, "base")
    assert _tables(fresh_url) == {"alembic_version"}
    upgrade_database(fresh_url)
    downgrade_database(fresh_url, "base")
    upgrade_database(fresh_url)
    assert _tables(fresh_url) == TABLES
    engine = create_db_engine(fresh_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_migration_files_are_named_by_date_and_slug_and_form_one_line():
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1
    files = sorted(path.name for path in (MIGRATIONS_DIR / "versions").glob("*.py"))
    assert files and all(re.fullmatch(r"\d{4}_\d{2}_\d{2}_[a-z0-9_]+\.py", name) for name in files), files


def test_reuse_and_figure_columns_migrate_without_losing_rows(fresh_url):
    # Dropping the new columns must not rebuild runs or experiments (SQLite would cascade the drop
    # into their children); upgrading marks experiments that have figures as drawn.
    engine = create_db_engine(fresh_url)
    now = utcnow()
    with engine.begin() as connection:
        for experiment_id in ("exp_with", "exp_without"):
            run_id = f"run_{experiment_id}"
            _insert_experiment(connection, experiment_id, "succeeded")
            connection.execute(
                insert(Run.__table__).values(
                    id=run_id,
                    experiment_id=experiment_id,
                    position=0,
                    spec={},
                    spec_hash="h",
                    coords={},
                    batch_key="b",
                    status="succeeded",
                    attempt=1,
                    cancel_requested=False,
                    progress_step=1,
                    progress_total=1,
                    queued_at=now,
                )
            )
            connection.execute(
                insert(MetricPoint.__table__).values(run_id=run_id, name="loss", step=0, value=1.0)
            )
        connection.execute(
            insert(Artifact.__table__).values(
                id="art_1",
                experiment_id="exp_with",
                run_id=None,
                kind="figure",
                name="figures/a.png",
                key="k",
                content_type="image/png",
                size=1,
                sha256="s",
                created_at=now,
            )
        )

    def counts() -> list[int]:
        with engine.connect() as connection:
            return [
                int(connection.scalar(select(func.count()).select_from(model)) or 0)
                for model in (Run, MetricPoint, Artifact)
            ]

    downgrade_database(fresh_url, "20261127_api_keys")
    assert counts() == [2, 2, 1]
    upgrade_database(fresh_url)
    assert counts() == [2, 2, 1]
    with engine.connect() as connection:
        states = dict(connection.execute(select(Experiment.id, Experiment.figures_state)).all())
    assert states == {"exp_with": "drawn", "exp_without": "pending"}
    with engine.connect() as connection:  # experiments from before the choice drew their runs' figures
        assert connection.scalars(select(Experiment.run_figures)).all() == [True, True]
    engine.dispose()


def test_experiments_stuck_without_a_succeeded_run_get_failed_figures(fresh_url):
    # Before 20261128_figures_nothing an experiment whose runs all failed kept figures "pending".
    downgrade_database(fresh_url, "20261127_run_figures")
    engine = create_db_engine(fresh_url)
    rows = {
        "exp_failed": "failed",
        "exp_cancelled": "cancelled",
        "exp_ok": "succeeded",
        "exp_running": "running",
    }
    with engine.begin() as connection:
        for experiment_id, status in rows.items():
            _insert_experiment(connection, experiment_id, status, figures_state="pending")
    upgrade_database(fresh_url)
    with engine.connect() as connection:
        states = {
            row[0]: (row[1], row[2])
            for row in connection.execute(
                select(Experiment.id, Experiment.figures_state, Experiment.figures_error)
            )
        }
    engine.dispose()
    nothing = ("failed", NOTHING_TO_DRAW)
    assert states == {
        "exp_failed": nothing,
        "exp_cancelled": nothing,
        "exp_ok": ("pending", None),
        "exp_running": ("pending", None),
    }


def _insert_experiment(connection: Connection, experiment_id: str, status: str, **columns: Any) -> None:
    """One experiment of one run in ``status``, its counts to match (columns of any revision)."""
    connection.execute(
        insert(Experiment.__table__).values(
            id=experiment_id,
            name="e",
            base_spec={},
            axes=[],
            spec_hash="h",
            status=status,
            cancel_requested=False,
            n_runs=1,
            n_queued=0,
            **{f"n_{s}": int(status == s) for s in ("running", "succeeded", "failed", "cancelled")},
            created_at=utcnow(),
            updated_at=utcnow(),
            **columns,
        )
    )
