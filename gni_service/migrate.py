"""Schema migrations, run programmatically (``gni serve`` and the tests) or with ``alembic upgrade``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

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
