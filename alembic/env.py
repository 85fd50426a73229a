"""Alembic environment: runs on the connection tgsentinel hands it (see bot/store/migrate.py)."""

from __future__ import annotations

from sqlalchemy import create_engine

from alembic import context
from bot.store.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        # Plain `alembic` from the command line: take DATABASE_URL as tgsentinel does.
        from bot.settings import Settings

        engine = create_engine(Settings().database_url)
        with engine.connect() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
