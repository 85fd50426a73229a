"""Schema upgrades through Alembic. The app upgrades on start; `tgsentinel db upgrade` does it by hand."""

from __future__ import annotations

from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from alembic import command
from bot.errors import InputError
from bot.packaged import migrations
from bot.store.db import make_engine, store_error

# An arbitrary constant: the advisory lock that serialises concurrent upgrades on PostgreSQL.
_LOCK_ID = 0x7467_5345_4E54


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations()))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`. Several processes may call this at once on PostgreSQL."""
    cfg = alembic_config()
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _LOCK_ID})
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK_ID})
                conn.commit()


def open_store(url: str, *, create: bool = True) -> Engine:
    """An engine on an up-to-date schema; a bad URL or an unreachable server is one line, exit 2.

    Commands that only look at a store pass `create=False`: a SQLite file that is not there is
    refused, not made.
    """
    engine = make_engine(url, create=create)
    try:
        upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise InputError(store_error(url, exc)) from None
    return engine
