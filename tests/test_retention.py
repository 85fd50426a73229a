"""Retention in short batches: what it keeps, that posts arriving meanwhile are stored between its
batches, that SQLite's WAL is emptied after it, and `db vacuum` giving the space back."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.pipeline.compose import PRUNED
from bot.pipeline.ingest import Ingest
from bot.sources.model import ChannelRef, Incoming
from bot.store.db import release
from bot.store.maintenance import Pruner, prune, prune_in_batches
from bot.store.migrate import open_store
from bot.store.models import Alert, Channel, Delivery, Match, Message
from tests.cli import tgs, tgs_process

CHAN = ChannelRef(tg_id=2002, username="retained", title="Retained")
OLD = datetime(2020, 1, 1, tzinfo=UTC)
DAYS_90 = 90 * 86400
RULES = """
rules:
  - id: alarm
    match: {any: [alarm]}
    notify: [console]
"""


def _age_messages(engine, msg_ids) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as s, s.begin():
        s.execute(update(Message).where(Message.msg_id.in_(msg_ids)).values(created_at=OLD))


def _count(engine, model, *where) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


async def test_a_prune_in_batches_keeps_what_is_still_owed_and_removes_the_rest(make_pipeline, store):
    pipeline = make_pipeline(RULES)
    posts = [Incoming(channel=CHAN, message_id=i, text=f"alarm {i}") for i in range(1, 9)]
    posts += [Incoming(channel=CHAN, message_id=i, text=f"quiet {i}") for i in (9, 10)]
    await pipeline.ingest.ingest(posts)
    status = {1: "sent", 2: "sent", 3: "folded", 4: "pending", 5: "held", 6: "dead", 7: "sent", 8: "sent"}
    with Session(store) as s, s.begin():
        owed = (
            select(Delivery, Message.msg_id)
            .join(Alert, Alert.id == Delivery.alert_id)
            .join(Message, Message.id == Alert.message_id)
        )
        for delivery, msg_id in s.execute(owed):
            delivery.status = status[msg_id]
            if msg_id <= 6:  # 7 and 8 were sent recently: they stay, whatever their post's age
                delivery.created_at = OLD
        s.execute(update(Alert).where(Alert.message_id.in_(_ids(s, range(1, 7)))).values(created_at=OLD))
    _age_messages(store, [1, 2, 3, 4, 5, 6, 9, 10])

    removed = await prune_in_batches(store, DAYS_90, batch=2, forget=PRUNED)  # several batches of each table

    assert removed == {"deliveries": 3, "alerts": 3, "messages": 5}
    with Session(store) as s:
        assert sorted(s.scalars(select(Message.msg_id))) == [4, 5, 6, 7, 8]
        owed = (
            select(Message.msg_id)
            .join(Alert, Alert.message_id == Message.id)
            .join(Delivery, Delivery.alert_id == Alert.id)
        )
        assert sorted(s.scalars(owed)) == [4, 5, 6, 7, 8]  # each still has its alert and delivery
        assert s.scalar(select(Channel.last_seen_id)) == 10  # the cursor never rewinds
    assert _count(store, Match) == 5  # the pruned posts' matches went with them


def _ids(session: Session, msg_ids) -> list[int]:  # type: ignore[no-untyped-def]
    return list(session.scalars(select(Message.id).where(Message.msg_id.in_(list(msg_ids)))))


async def test_a_post_arriving_during_a_prune_is_stored_before_the_prune_ends(sqlite_url):
    """The monitor's case: ingest and the prune share SQLite's one writer thread. A prune in one
    transaction kept a post waiting for all of it (85 s for a million rows); in batches the post
    goes in after the batch under way."""
    engine = open_store(sqlite_url)
    ingest = Ingest(engine)
    try:
        await ingest.ingest([Incoming(channel=CHAN, message_id=i, text=f"old {i}") for i in range(1, 201)])
        _age_messages(engine, range(1, 201))
        prune_task = asyncio.ensure_future(prune_in_batches(engine, DAYS_90, batch=20, forget=PRUNED))

        async def write() -> bool:
            result = await ingest.ingest([Incoming(channel=CHAN, message_id=500, text="news")])
            assert result.new == 1
            return prune_task.done()

        removed, prune_was_done = await asyncio.gather(prune_task, write())
        assert not prune_was_done, "the new post waited for the whole prune"
        assert removed["messages"] == 200
        assert _count(engine, Message) == 1
    finally:
        release(engine)


def test_another_connection_writes_between_batches_with_a_short_busy_timeout(sqlite_url):
    """Another process (a `replay`, `alerts retry`) writes through its own connection: between two
    batches the writer lock is free, so it gets in at once, well within a 50 ms busy timeout."""
    engine = open_store(sqlite_url)
    try:
        Ingest(engine).ingest_sync(
            [Incoming(channel=CHAN, message_id=i, text=f"old {i}") for i in range(1, 101)]
        )
        _age_messages(engine, range(1, 101))
        pruner = Pruner(engine, DAYS_90, batch=10, forget=PRUNED)
        other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0.05)
        written = 0
        while pruner.step():
            with other:  # a transaction of its own, committed
                other.execute(
                    "INSERT INTO destination_state (name, reason) VALUES (?, 'test')", (f"d{written}",)
                )
            written += 1
        other.close()
        assert written >= 9  # one write between every two of the ten batches
        assert pruner.removed["messages"] == 100
    finally:
        release(engine)


def _wal(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///") + "-wal")


def _fill(url: str, n: int) -> None:
    """`n` posts of ~4 KB through the real ingest path, all of them old."""
    engine = open_store(url)
    try:
        ingest = Ingest(engine)
        body = " ".join(f"word{k}" for k in range(600))
        for start in range(1, n + 1, 500):
            ingest.ingest_sync(
                [Incoming(channel=CHAN, message_id=i, text=f"{i} {body}") for i in range(start, start + 500)]
            )
        _age_messages(engine, range(1, n + 1))
    finally:
        release(engine)


def test_a_prune_empties_the_wal_and_db_vacuum_shrinks_the_file(sqlite_url):
    _fill(sqlite_url, 2000)
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    engine = open_store(sqlite_url)
    try:
        assert prune(engine, DAYS_90, batch=500, forget=PRUNED)["messages"] == 2000
        assert _wal(sqlite_url).stat().st_size == 0  # checkpointed and truncated, not left at its peak
    finally:
        release(engine)
    pruned = db.stat().st_size

    ran = tgs("db", "vacuum", "--db", sqlite_url)

    assert ran.returncode == 0, ran.stderr
    vacuumed = db.stat().st_size + (_wal(sqlite_url).stat().st_size if _wal(sqlite_url).exists() else 0)
    assert vacuumed < pruned / 4, (pruned, vacuumed)
    line = ran.stderr.decode().strip()
    # An empty store is some 40 tables and indexes of a 32 KB page or more each: about a megabyte.
    assert re.fullmatch(rf"vacuumed {re.escape(sqlite_url)}: 2\d\.\d MB -> 1\.\d MB", line), line


def test_db_vacuum_of_a_missing_database_is_one_line_and_creates_nothing(tmp_path):
    missing = tmp_path / "nothere.db"
    proc = tgs_process("db", "vacuum", "--db", f"sqlite:///{missing}")
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err == f"tgsentinel: no database at {missing}\n"
    assert not missing.exists()


def test_db_vacuum_on_postgresql_runs_vacuum_analyze_on_its_own_tables(db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("the SQLite case is above")
    open_store(db_url).dispose()
    ran = tgs("db", "vacuum", "--db", db_url)
    assert ran.returncode == 0, ran.stderr
    assert "VACUUM (ANALYZE)" in ran.stderr.decode() and "autovacuum" in ran.stderr.decode()
