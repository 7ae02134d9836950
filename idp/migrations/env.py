"""Alembic environment: the models' metadata, and the connection handed over by ``idp.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import idp.models  # noqa: F401  (registers every table)
from idp.db import Base, create_db_engine

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from idp.config import load_settings

    engine = create_db_engine(load_settings().database_url)
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    from idp.config import load_settings

    context.configure(url=load_settings().database_url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
