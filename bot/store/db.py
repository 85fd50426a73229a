"""Engines: SQLite by default (WAL, busy timeout), PostgreSQL through psycopg 3 when scaled out."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session

from bot.database_url import parse
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
        return parse(url)
    except ValueError as exc:
        raise InputError(f"DATABASE_URL is invalid: {exc}") from None


def make_engine(url: str, *, check: bool = True, create: bool = True) -> Engine:
    """An engine for `url`; with `check`, connect once so a bad URL fails here, in one line.

    Without `create`, a SQLite file that does not exist is refused (`no database at dta/x.db`)
    rather than made: a command that only reads must not leave an empty database behind a typo.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            _sqlite_file(Path(parsed.database), create)
        engine = create_engine(parsed, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # A new file's pages hold several posts each: with SQLite's default 4 KB page, a row of
            # 2-4 KB (a typical long post) takes a page of its own, and the rest of it is never used.
            # `bench search`, 2.8 KB rows: 4.1 KB a post with 4 KB pages, 3.3 with 16 KB, 3.0 with
            # 32 KB. It must come before WAL; on a file that exists already it changes nothing.
            cur.execute("PRAGMA page_size=32768")
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
            raise InputError(store_error(parsed, exc)) from None
    return engine


def _sqlite_file(path: Path, create: bool) -> None:
    """The file and its directory as SQLite needs them, or one line saying which is wrong and why.

    SQLite itself says only "unable to open database file"; a container's bind mount owned by
    another user is the usual cause, so the line names the absolute path and our uid.
    """
    if not create:
        if not path.is_file():
            raise InputError(f"no database at {path}")
    else:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created 0600: the store holds every post and every alert's text.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise InputError(_cannot_write(path if path.parent.is_dir() else path.parent, exc)) from None
    # WAL mode writes -wal and -shm files beside the database, so the directory must be writable too.
    for target in (path.parent, path):
        if target.exists() and not os.access(target, os.W_OK):
            raise InputError(_cannot_write(target, PermissionError(errno.EACCES, "Permission denied")))


def _cannot_write(path: Path, exc: OSError) -> str:
    reason = (exc.strerror or str(exc)).lower()
    return f"cannot write {path.resolve()} (uid {os.getuid()}): {reason}"


def store_error(url: str | URL, exc: BaseException) -> str:
    """One line for an error from the store: for SQLite's read-only and cannot-open cases, with the
    file's absolute path and our uid, since that is what the user has to fix."""
    parsed = make_url(url) if isinstance(url, str) else url
    reason = first_line(exc)
    if (
        parsed.get_backend_name() == "sqlite"
        and parsed.database
        and ("readonly" in reason or "unable to open" in reason or "disk I/O" in reason)
    ):
        return f"cannot write {Path(parsed.database).resolve()} (uid {os.getuid()}): {reason}"
    return f"cannot open database {shown_url(parsed)}: {reason}"


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


# Any constant both sides agree on: pg_advisory_xact_lock's key for "an ingest batch is being written".
_INGEST_LOCK = 0x7467_5365_6E74  # "tgSent"


def one_writer(session: Session) -> None:
    """Make this transaction the only ingest batch being written to the store, until it ends.

    Ingest looks before it writes (a post's story, whether its story already alerted), so two
    processes writing batches side by side could each miss the other's uncommitted rows: two story
    ids, two alerts. On PostgreSQL the batch transactions of every process take turns on one advisory
    lock, taken first so that no lock is held while waiting for it (no deadlock). SQLite has one
    writer at a time already.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INGEST_LOCK})


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the store is unavailable (server gone, disk full, file read-only or locked)
    rather than that one piece of data is wrong: an outage passes, so work waits for it and retries."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


# engine id -> called with None after each piece of work that reached the store, or with the outage
Observer = Callable[[BaseException | None], None]
_observers: dict[int, Observer] = {}


def observe(engine: Engine, observer: Observer) -> None:
    """Have `observer` told how every `run_sync` on `engine` went: the health of the store."""
    _observers[id(engine)] = observer


async def run_sync(engine: Engine, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking database work off the event loop."""
    observer = _observers.get(id(engine))
    try:
        result = await asyncio.get_running_loop().run_in_executor(executor(engine), fn, *args)
    except Exception as exc:
        if observer is not None and is_outage(exc):
            observer(exc)
        raise
    if observer is not None:
        observer(None)
    return result


def release(engine: Engine) -> None:
    _observers.pop(id(engine), None)
    pool = _executors.pop(id(engine), None)
    if pool is not None:
        pool.shutdown(wait=True)
    engine.dispose()
