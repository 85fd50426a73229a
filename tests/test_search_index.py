"""The search index kept in step with the store: new posts, edits, the retention prune, and the
migration that indexes what was stored before the index existed. On SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, insert, select, text, update
from sqlalchemy.orm import Session

from bot.pipeline.compose import PRUNED
from bot.pipeline.ingest import Ingest
from bot.search import search, tokens
from bot.sources.model import ChannelRef, Incoming
from bot.store.db import make_engine, release
from bot.store.maintenance import prune, vacuum
from bot.store.migrate import open_store, upgrade
from bot.store.models import Channel, Message

CHAN = ChannelRef(tg_id=7007, username="indexed", title="Indexed")
OLD = datetime(2020, 1, 1, tzinfo=UTC)


def _found(engine: Engine, query: str) -> list[int]:
    with Session(engine) as session:
        return [h.msg_id for h in search(session, query, limit=100).hits]


def _in_index(engine: Engine, stem: str) -> int:
    """How many rows of the index itself hold `stem`, without the join to messages that hides rows
    whose post is gone."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return int(
                conn.execute(
                    text("SELECT count(*) FROM search_fts WHERE search_fts MATCH :q"), {"q": f'"{stem}"'}
                ).scalar_one()
            )
        return int(
            conn.execute(
                text("SELECT count(*) FROM search_docs WHERE doc @@ CAST(:q AS tsquery)"), {"q": f"'{stem}'"}
            ).scalar_one()
        )


def test_new_edited_and_pruned_posts_are_found_by_what_they_say_now(store: Engine) -> None:
    ingest = Ingest(store)
    ingest.ingest_sync(
        [
            Incoming(channel=CHAN, message_id=1, text="Перемирие объявлено #срочно"),
            Incoming(channel=CHAN, message_id=2, text="Weather report: sunny"),
        ]
    )
    assert _found(store, "перемирия") == [1] and _found(store, "#срочно") == [1]

    # The post is edited: found by its new words, no longer by the old ones.
    ingest.ingest_sync([Incoming(channel=CHAN, message_id=1, text="Перемирие сорвано: обстрелы #молния")])
    assert _found(store, "сорвано") == [1] and _found(store, "обстрелов") == [1]
    assert _found(store, "объявлено") == [] and _found(store, "#срочно") == []
    assert _found(store, "#молния") == [1] and _found(store, "перемирие") == [1]
    assert _in_index(store, "объявл") == 0  # gone from the index, not only hidden by the join
    # Edited again, twice in a row, then a post that only changes its view count: still in step.
    ingest.ingest_sync([Incoming(channel=CHAN, message_id=1, text="Третья версия текста")])
    ingest.ingest_sync([Incoming(channel=CHAN, message_id=1, text="Четвёртая версия")])
    ingest.ingest_sync([Incoming(channel=CHAN, message_id=1, text="Четвёртая версия", views=10)])
    assert _found(store, "версия") == [1] and _found(store, "третья") == [] and _found(store, "обстрел") == []
    assert _in_index(store, "верс") == 1

    # The real retention prune deletes post 1: it leaves the index too.
    with Session(store) as s, s.begin():
        s.execute(update(Message).where(Message.msg_id == 1).values(created_at=OLD))
    assert prune(store, 90 * 86400, forget=PRUNED)["messages"] == 1
    assert _found(store, "версия") == [] and _in_index(store, "верс") == 0
    assert _found(store, "sunny") == [2]
    # A new post takes the place of the deleted one, and nothing of the old one comes back with it.
    ingest.ingest_sync([Incoming(channel=CHAN, message_id=3, text="Fresh news, nothing else")])
    assert _found(store, "fresh") == [3] and _found(store, "четвертая") == []
    if store.dialect.name == "sqlite":
        with store.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM search_stale")).scalar_one() == 0
            conn.execute(text("INSERT INTO search_fts (search_fts, rank) VALUES ('integrity-check', 1)"))


async def test_each_post_is_tokenized_once_in_the_match_thread_not_on_the_stores(
    store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tokenizing is the index's CPU work: done ahead, in the match thread, and handed to the stage
    # with the batch; done again in the transaction, it would hold up the store's one thread.
    seen: list[tuple[str, str]] = []
    body = tokens.body
    monkeypatch.setattr(
        tokens, "body", lambda text: seen.append((threading.current_thread().name, text)) or body(text)
    )
    ingest = Ingest(store)
    result = await ingest.ingest(
        [Incoming(channel=CHAN, message_id=i, text=f"Санкции, пост {i}") for i in range(1, 6)]
    )
    assert result.new == 5
    assert _found(store, "санкциям") == [5, 4, 3, 2, 1]
    assert len(seen) == 5 and all(name.startswith("tgsentinel-match") for name, _ in seen), seen

    # An edit too: its new text is tokenized ahead, once. (On SQLite the old text is tokenized in
    # the transaction, to take its words out: a contentless index forgets only what it is told.)
    seen.clear()
    result = await ingest.ingest([Incoming(channel=CHAN, message_id=1, text="Перемирие, пост 1")])
    assert result.updated == 1
    assert _found(store, "перемирия") == [1] and _found(store, "санкциям") == [5, 4, 3, 2]
    assert [name for name, text in seen if text == "Перемирие, пост 1"] == ["tgsentinel-match_0"], seen
    assert len(seen) == (2 if store.dialect.name == "sqlite" else 1), seen
    if store.dialect.name == "sqlite":
        with store.connect() as conn:
            conn.execute(text("INSERT INTO search_fts (search_fts, rank) VALUES ('integrity-check', 1)"))


def _index_bytes(engine) -> int:
    with engine.connect() as conn:
        query = "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'search_fts%'"
        return int(conn.execute(text(query)).scalar_one())


def test_vacuum_gives_back_the_space_of_pruned_posts_index_included(sqlite_url: str) -> None:
    engine = open_store(sqlite_url)
    try:
        ingest = Ingest(engine)
        for start in range(1, 1501, 500):
            ingest.ingest_sync(
                [
                    Incoming(channel=CHAN, message_id=i, text=" ".join(f"слово{i}x{k}" for k in range(200)))
                    for i in range(start, start + 500)
                ]
            )
        with Session(engine) as s, s.begin():
            s.execute(update(Message).values(created_at=OLD))
        held = _index_bytes(engine)
        prune(engine, 90 * 86400, forget=PRUNED)
        done = vacuum(engine)
        index_bytes = _index_bytes(engine)
    finally:
        release(engine)
    assert done.after < done.before / 10, done
    assert index_bytes < held / 10, (held, index_bytes)


def test_the_migration_indexes_the_posts_stored_before_it(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0002")
        now = datetime.now(UTC)
        with Session(engine) as s, s.begin():
            channel = Channel(tg_id=CHAN.tg_id, username="indexed", title="Indexed", created_at=now)
            s.add(channel)
            s.flush()
            for n, body, tags in [
                (1, "Санкции против энергетики #Энергетика", ["Энергетика"]),
                (2, "Talks on the border resumed", []),
                (3, "Війна і санкції", []),
            ]:
                # Core inserts of the columns 0002 had: the model has columns added since.
                s.execute(
                    insert(Message).values(
                        channel_id=channel.id,
                        msg_id=n,
                        date=now,
                        raw_text=body,
                        entities=[],
                        text=body,
                        title=body,
                        hashtags=tags,
                        mentions=[],
                        urls=[],
                        media=[],
                        created_at=now,
                        updated_at=now,
                    )
                )
        upgrade(engine, "head")
        assert sorted(_found(engine, "санкциям")) == [1, 3]
        assert _found(engine, "#энергетика") == [1]
        assert _found(engine, "border talk") == [2]
        assert _found(engine, "війною") == [3]
        # And the posts that come after it are indexed by the ingest path.
        Ingest(engine).ingest_sync([Incoming(channel=CHAN, message_id=4, text="Новые санкции")])
        assert sorted(_found(engine, "санкции")) == [1, 3, 4]
        with Session(engine) as s:
            assert s.scalar(select(func.count()).select_from(Message)) == 4
    finally:
        release(engine)
