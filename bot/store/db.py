"""Engines: SQLite by default (WAL, busy timeout), PostgreSQL through psycopg 3 when scaled out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from bot.errors import InputError, first_line

T = TypeVar("T")

CHUNK = 500  # keeps IN (...) lists under every database's parameter limit


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """`values` in slices short enough for one `IN (...)` list."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def shown_url(url: str | URL) -> str:
    """The URL as it may appear in a log or an error: no password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed>"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError(f"DATABASE_URL is malformed: {url.split('://')[0]}://...") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise InputError(
            f"DATABASE_URL: unsupported database {parsed.get_backend_name()!r} (sqlite, postgresql)"
        )
    return parsed


def make_engine(url: str, *, check: bool = True) -> Engine:
    """An engine for `url`; with `check`, connect once so a bad URL fails here, in one line."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # WAL lets readers (Datasette, the CLI) look while the monitor writes.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    else:
        engine = create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)
    if check:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except (DBAPIError, NoSuchModuleError, OSError) as exc:
            engine.dispose()
            raise InputError(f"cannot open database {shown_url(parsed)}: {first_line(exc)}") from None
    return engine


_executors: dict[int, ThreadPoolExecutor] = {}


def executor(engine: Engine) -> ThreadPoolExecutor | None:
    """The thread every write to this engine goes through, or None for a pool (PostgreSQL).

    SQLite has one writer at a time; two threads writing contend for its lock and sleep in its busy
    handler for tens of milliseconds. One thread in turn is both simpler and faster.
    """
    if engine.dialect.name != "sqlite":
        return None
    key = id(engine)
    if key not in _executors:
        _executors[key] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tgsentinel-sqlite")
    return _executors[key]


async def run_sync(engine: Engine, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking database work off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(executor(engine), fn, *args)


def release(engine: Engine) -> None:
    pool = _executors.pop(id(engine), None)
    if pool is not None:
        pool.shutdown(wait=True)
    engine.dispose()
