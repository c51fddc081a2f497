"""Alembic: upgrade → downgrade → upgrade on SQLite and PostgreSQL, and no drift from the models."""

from __future__ import annotations

import re

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from gni_service.db import create_db_engine
from gni_service.migrate import MIGRATIONS_DIR, alembic_config, downgrade_database, upgrade_database
from gni_service.models import Base

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
