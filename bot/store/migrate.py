"""Schema upgrades through Alembic. The app upgrades on start; `tgsentinel db upgrade` does it by hand."""

from __future__ import annotations

import os
from pathlib import Path

from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from alembic import command
from bot.errors import InputError, first_line
from bot.store.db import make_engine, shown_url

# An arbitrary constant: the advisory lock that serialises concurrent upgrades on PostgreSQL.
_LOCK_ID = 0x7467_5345_4E54


def script_location() -> Path:
    override = os.environ.get("TGSENTINEL_ALEMBIC_DIR")
    if override:
        return Path(override)
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / "alembic" / "env.py").exists():
            return base / "alembic"
    raise InputError(
        "the alembic/ migrations directory was not found: run from the project's directory, "
        "or set TGSENTINEL_ALEMBIC_DIR"
    )


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
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


def open_store(url: str) -> Engine:
    """An engine on an up-to-date schema; a bad URL or an unreachable server is one line, exit 2."""
    engine = make_engine(url)
    try:
        upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise InputError(f"cannot upgrade database {shown_url(url)}: {first_line(exc)}") from None
    return engine
