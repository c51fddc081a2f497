"""Schema migrations, run programmatically (``gni serve`` and the tests) or with ``alembic upgrade``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect, text

from gni_engine.errors import GNIError

# The migrations live beside the packages in the source tree (and in the service images).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def alembic_config(database_url: str | None = None, connection: Connection | None = None) -> Config:
    ini = PROJECT_ROOT / "alembic.ini"
    scripts = MIGRATIONS_DIR
    if not ini.is_file() or not scripts.is_dir():
        raise GNIError(
            f"the migrations are not installed: expected {ini} and {scripts} beside the gni_service package"
        )
    config = Config(str(ini))
    config.set_main_option("script_location", str(scripts))
    if database_url is not None:
        # ConfigParser interpolates '%': escape it (passwords may contain it).
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Bring the schema of ``database_url`` up to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade_database(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


@lru_cache(maxsize=1)
def head_revisions() -> frozenset[str]:
    """The revisions ``alembic upgrade head`` would reach with the migrations installed here."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def check_schema(engine: Engine) -> None:
    """Raise :class:`GNIError` when the database was never migrated or is behind this code's head.

    A database ahead of it (a revision these migrations do not know: a newer release migrated it
    during a rolling upgrade) passes: migrations add, so the older code still reads and writes it.
    """
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    # Read alembic's table directly: a MigrationContext logs two INFO lines each time, and /readyz
    # asks every few seconds.
    with engine.connect() as connection:
        current: frozenset[str] = frozenset()
        if inspect(connection).has_table("alembic_version"):
            current = frozenset(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    heads = head_revisions()
    if current == heads:
        return
    expected = ", ".join(sorted(heads))
    if not current:
        raise GNIError(f"schema not migrated (expected revision {expected}): run `alembic upgrade head`")
    scripts = ScriptDirectory.from_config(alembic_config())
    try:
        known = [scripts.get_revision(revision) for revision in current]
    except CommandError:
        return  # a revision newer than these migrations
    if all(revision is not None for revision in known):
        found = ", ".join(sorted(current))
        raise GNIError(f"schema revision {found} is behind {expected}: run `alembic upgrade head`")
