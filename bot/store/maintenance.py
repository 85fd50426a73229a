"""Housekeeping on a schedule: the database's size for /metrics, retention, and giving space back."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Connection, Delete, Engine, delete, exists, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.errors import InputError
from bot.store.channels import now
from bot.store.db import release, run_sync, shown_url, store_error
from bot.store.migrate import open_store
from bot.store.models import Alert, Base, Delivery, Message

# A post arriving during a prune waits for the batch under way, never for the whole prune. What a
# row costs to delete varies tenfold with the disk, the cache and the load (5,000 posts took 0.2 s
# on a quiet machine and 1 s on a busy one), so a batch is sized by time: each is made as large as
# fits in BUDGET seconds at the rate the last one ran, between 250 and BATCH rows.
BATCH = 5_000
BUDGET = 0.25
_FIRST = 500
# Other processes' writers on SQLite (a `replay`, `alerts retry`) wait in SQLite's busy handler,
# which retries about every 100 ms: a gap that long between batches lets them in. The monitor's own
# writers need no gap: they queue on the same thread as the batches (bot.store.db.executor).
SQLITE_PAUSE = 0.1
_FINISHED = ("sent", "folded")
_OWED = ("pending", "held", "dead")
# In this order: a finished delivery goes first, so that its alert is an orphan the next phase takes.
_TABLES = ("deliveries", "alerts", "messages")

# What keeps its own record of messages and must forget the deleted ones (the search index,
# bot.search, a layer above the store): run in the transaction of each batch that deleted messages.
Forget = Callable[[Connection], object]


def database_size(engine: Engine) -> int:
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if not path or path == ":memory:":
            return 0
        return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


@dataclass
class Pruner:
    """One prune as a series of short transactions, each deleting at most `batch` rows and taking
    about `budget` seconds.

    Deletes messages and finished deliveries older than `older_than` seconds. A channel's cursor
    lives on its own row (`channels.last_seen_id`), so pruning never rewinds it. Pending, held and
    dead deliveries stay whatever their age, and so do their alerts and messages: someone still owes
    them a look. Every batch judges those conditions afresh, so a delivery that fails or a post that
    arrives between two batches is seen. Each batch that deleted messages runs `forget` before it
    commits.
    """

    engine: Engine
    older_than: float
    batch: int = BATCH
    budget: float = BUDGET
    forget: Sequence[Forget] = ()
    removed: dict[str, int] = field(init=False, default_factory=lambda: dict.fromkeys(_TABLES, 0))
    _phases: list[str] = field(init=False, default_factory=lambda: list(_TABLES))

    def __post_init__(self) -> None:
        # One cutoff for the whole prune: a row that ages past it mid-prune waits for the next one.
        self.cutoff = now() - timedelta(seconds=self.older_than)
        self.limit = min(_FIRST, self.batch)

    def step(self) -> bool:
        """Delete one batch in one transaction; False once nothing is left to delete."""
        if not self._phases:
            return False
        phase, limit = self._phases[0], self.limit
        started = time.perf_counter()
        with Session(self.engine) as session, session.begin():
            count = session.execute(self._statement(phase, limit)).rowcount or 0
            if phase == "messages" and count:
                for hook in self.forget:
                    hook(session.connection())
        elapsed = time.perf_counter() - started
        self.removed[phase] += count
        if count < limit:
            self._phases.pop(0)
        elif elapsed > 0:
            # At most twice as many next time: one fast batch on a cached page says little.
            fits = int(limit * self.budget / elapsed)
            self.limit = max(min(_FIRST // 2, self.batch), min(fits, 2 * limit, self.batch))
        if not self._phases and self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                checkpoint(conn)
        return bool(self._phases)

    def _statement(self, phase: str, limit: int) -> Delete:
        cutoff = self.cutoff
        if phase == "deliveries":
            done = select(Delivery.id).where(Delivery.status.in_(_FINISHED), Delivery.created_at < cutoff)
            return delete(Delivery).where(Delivery.id.in_(done.limit(limit)))
        if phase == "alerts":
            orphans = select(Alert.id).where(
                Alert.created_at < cutoff, ~exists().where(Delivery.alert_id == Alert.id)
            )
            return delete(Alert).where(Alert.id.in_(orphans.limit(limit)))
        # Alerts still owed to someone point at their message: those messages stay too.
        owed = (
            select(Alert.id)
            .join(Delivery, Delivery.alert_id == Alert.id)
            .where(Alert.message_id == Message.id, Delivery.status.in_(_OWED))
        )
        old = select(Message.id).where(Message.created_at < cutoff, ~owed.exists())
        return delete(Message).where(Message.id.in_(old.limit(limit)))


def prune(
    engine: Engine, older_than: float, *, forget: Sequence[Forget], batch: int = BATCH
) -> dict[str, int]:
    """The whole prune in this thread, batch after batch (see `Pruner`); counts what went."""
    pruner = Pruner(engine, older_than, batch, forget=forget)
    while pruner.step():
        pass
    return pruner.removed


async def prune_in_batches(
    engine: Engine, older_than: float, *, forget: Sequence[Forget], batch: int = BATCH
) -> dict[str, int]:
    """The prune as the monitor runs it: each batch on the store's writer thread, so that the posts
    that arrive meanwhile are stored between two batches rather than after the last."""
    pruner = Pruner(engine, older_than, batch, forget=forget)
    pause = SQLITE_PAUSE if engine.dialect.name == "sqlite" else 0.0
    while await run_sync(engine, pruner.step):
        await asyncio.sleep(pause)
    return pruner.removed


def checkpoint(conn: Connection) -> None:
    """Copy SQLite's WAL into the database and truncate it to nothing.

    Without it the WAL keeps the size of the largest write since it was last reset. A reader on an
    old snapshot (Datasette, a long `status`) makes it wait: one second at most, not the 30 s busy
    timeout, since the monitor's writers queue behind it; the next prune tries again.
    """
    previous = int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())
    conn.exec_driver_sql("PRAGMA busy_timeout=1000")
    try:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout={previous}")


def optimize_fts(conn: Connection) -> None:
    """Merge each FTS5 index (the search index) into one segment, dropping what deleted rows left.

    An FTS5 table without content forgets a deleted row by writing a tombstone; the row's entries
    and the tombstone go only when the segments holding them are merged, and the oldest posts (those
    a prune deletes) sit in the oldest, largest segment. 'optimize' rewrites the whole index: a job
    for `db vacuum`, not for the hourly prune.
    """
    names = conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%fts5%'"
    ).scalars()
    for name in list(names):
        quoted = '"' + name.replace('"', '""') + '"'
        conn.exec_driver_sql(f"INSERT INTO {quoted} ({quoted}) VALUES ('optimize')")


@dataclass(frozen=True)
class Vacuumed:
    dialect: str
    before: int  # bytes: for SQLite the file and its WAL
    after: int


def vacuum(engine: Engine) -> Vacuumed:
    """Give the space of deleted rows back.

    SQLite reuses the pages a prune frees but never returns them to the file system: VACUUM
    rewrites the file (it needs as much free space again, and holds the writer lock throughout).
    In WAL mode the rewrite goes through the WAL, hence a checkpoint before and after; the search
    index is merged first, so that what pruned posts left in it goes too (`optimize_fts`). PostgreSQL's
    autovacuum already makes that space reusable; a plain VACUUM (ANALYZE) takes no lock that stops
    readers or writers, and naming our tables keeps it off everyone else's in a shared database.
    """
    before = database_size(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "sqlite":
            optimize_fts(conn)
            checkpoint(conn)
            conn.exec_driver_sql("VACUUM")
            checkpoint(conn)
        else:
            quote = engine.dialect.identifier_preparer.quote
            tables = ", ".join(quote(t.name) for t in Base.metadata.sorted_tables)
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {tables}")
    return Vacuumed(engine.dialect.name, before, database_size(engine))


def size(n: int) -> str:
    """Bytes as a person reads them: 9.6 GB, 812.0 MB, 4.0 kB."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def analyze(engine: Engine) -> None:
    """Fresh planner statistics after a bulk write (an import, a benchmark's seed) on PostgreSQL.

    Until autovacuum gets to it, the planner judges a table by what it held before: after a million
    rows arrive it seq-scans for the fingerprint lookup every batch makes (measured: 215 ms a batch
    at 300k posts, 10 ms after ANALYZE). SQLite plans by its indexes without statistics."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in ("messages", "alerts", "matches", "deliveries", "channels"):
                conn.execute(text(f"ANALYZE {table}"))


def vacuum_store(url: str) -> str:
    """`tgsentinel db vacuum`: vacuum the store at `url` (never creating one); the line to print."""
    engine = open_store(url, create=False)
    try:
        done = vacuum(engine)
    except SQLAlchemyError as exc:
        raise InputError(store_error(url, exc)) from None
    finally:
        release(engine)
    where = shown_url(url)
    if done.dialect == "sqlite":
        return f"vacuumed {where}: {size(done.before)} -> {size(done.after)}"
    return (
        f"vacuumed {where} (VACUUM (ANALYZE)): {size(done.before)} -> {size(done.after)}; on PostgreSQL "
        "autovacuum makes deleted rows' space reusable, and the files rarely shrink"
    )
