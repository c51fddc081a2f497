"""Alembic environment: migrates the database named by the caller or by the service settings."""

from __future__ import annotations

import logging
import logging.config

from alembic import context
from sqlalchemy import Connection

from gni_service.db import create_db_engine
from gni_service.models import Base

config = context.config
target_metadata = Base.metadata

# `alembic upgrade head` from a shell (compose's migrate step): say which revisions ran, as
# alembic.ini's loggers ask. A process that configured its logging already (gni serve) keeps it.
if config.config_file_name is not None and not logging.getLogger().handlers:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from gni_service.settings import get_settings

    return get_settings().resolved_database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: later migrations rebuild tables in batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_db_engine(_database_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
