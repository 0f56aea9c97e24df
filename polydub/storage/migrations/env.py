"""Alembic environment for the catalog.

polydub passes its own open, locked connection in `config.attributes["connection"]`;
the `alembic` command line gets one here, opened and locked the same way.
"""

from __future__ import annotations

from alembic import context

from polydub.config import database_url
from polydub.storage.catalog import migration_lock, open_engine
from polydub.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = open_engine(config.get_main_option("sqlalchemy.url") or database_url())
    try:
        with engine.connect() as connection, connection.begin():
            migration_lock(connection)
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
