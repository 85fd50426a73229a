"""The live source end to end: Telethon's real dispatch -> TelegramSource -> the real ingest path and store.

What a user notices here is rows: a stored post, a match, an alert waiting for delivery.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from telethon import functions, types

from bot.app import Pipeline
from bot.health import Health
from bot.sources.telegram import TelegramSource
from bot.store.models import Alert, Message, MessageEdit
from tests.tg_harness import (
    Entry,
    FakeTelegram,
    ObservedSink,
    deleted,
    edited,
    make_client,
    message,
    new_post,
    photo,
    push,
    video,
)

RULES = """
rules:
  - id: flood
    stories: each  # the generated posts differ only in their numbers: one story to `merge`
    match:
      any: ["flood"]
"""
ALPHA = 2001
NOW = datetime.now(UTC).replace(microsecond=0)  # fresh posts: older ones meet the stale-alert guard


@dataclass
class World:
    fake: FakeTelegram
    pipeline: Pipeline
    store: Engine
    sink: ObservedSink
    health: Health = field(default_factory=lambda: Health(lag_threshold=900))
    clients: list = field(default_factory=list)

    def source(self, *entries: Entry, fake: FakeTelegram | None = None) -> TelegramSource:
        client = make_client(fake or self.fake)
        self.clients.append(client)
        return TelegramSource(
            client, self.sink, self.health, self.pipeline.settings, self.pipeline.ops, entries, pace=0
        )

    def chats(self) -> list[types.Channel]:
        return [self.fake.channels[ALPHA].chat]

    def rows(self) -> list[Message]:
        with Session(self.store) as s:
            return list(s.scalars(select(Message).order_by(Message.msg_id)))

    def alerts(self, kind: str = "match") -> list[Alert]:
        with Session(self.store) as s:
            return list(s.scalars(select(Alert).where(Alert.kind == kind).order_by(Alert.id)))

    def alerted_ids(self) -> list[int]:
        with Session(self.store) as s:
            q = select(Message.msg_id).join(Alert, Alert.message_id == Message.id)
            return sorted(s.scalars(q.where(Alert.kind == "match")))


@pytest.fixture
async def world(make_pipeline: Callable[..., Pipeline], store: Engine) -> AsyncIterator[World]:
    fake = FakeTelegram()
    fake.add_channel(ALPHA, "alpha", left=True)
    fake.fill(ALPHA, range(1, 21), text="old flood report {id}", date=NOW - timedelta(minutes=5))
    pipeline = make_pipeline(RULES, flood_wait_alert=0.5)
    w = World(fake, pipeline, store, ObservedSink(pipeline.ingest))
    yield w
    for client in w.clients:
        await client.disconnect()


async def test_new_channel_does_not_alert_on_its_history(world: World) -> None:
    src = world.source(Entry("alpha", backfill=5))
    await src.start()
    # Five posts stored and matched (every one says "flood"), none alerted.
    assert [r.msg_id for r in world.rows()] == [16, 17, 18, 19, 20]
    with Session(world.store) as s:
        assert s.scalar(select(func.count()).select_from(Alert)) == 0


async def test_new_post_leads_to_an_alert(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    msg = message(ALPHA, 21, "Flood warning for the river valley", date=NOW)
    world.fake.post(ALPHA, msg)
    await push(src.client, new_post(msg), chats=world.chats())
    assert world.alerted_ids() == [21]
    assert world.rows()[-1].source_text == "Flood warning for the river valley"


async def test_edit_is_stored_and_rematched(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    await push(src.client, new_post(message(ALPHA, 21, "A calm day", date=NOW)), chats=world.chats())
    assert world.alerted_ids() == []
    fixed = message(ALPHA, 21, "A calm day, then a flood", date=NOW, edit_date=NOW + timedelta(minutes=1))
    await push(src.client, edited(fixed), chats=world.chats())
    assert world.alerted_ids() == [21]
    assert world.rows()[-1].source_text == "A calm day, then a flood"
    with Session(world.store) as s:
        assert [e.source_text for e in s.scalars(select(MessageEdit))] == ["A calm day"]


async def test_deletion_marks_the_post_and_keeps_its_text(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    await push(src.client, new_post(message(ALPHA, 21, "to be withdrawn", date=NOW)), chats=world.chats())
    await push(src.client, deleted(ALPHA, [21]))
    row = world.rows()[-1]
    assert (row.msg_id, row.deleted, row.source_text) == (21, True, "to be withdrawn")


async def test_album_becomes_one_post_and_one_alert(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    parts = [
        message(ALPHA, 21, "", media=photo(), grouped_id=3, date=NOW),
        message(ALPHA, 22, "Flood photos from the valley", media=video(), grouped_id=3, date=NOW),
        message(ALPHA, 23, "", media=photo(), grouped_id=3, date=NOW),
    ]
    world.fake.post(ALPHA, *parts)
    await push(src.client, *map(new_post, parts), chats=world.chats())
    # Telethon merges the parts about 0.5 s after the last one.
    await world.sink.wait_for(lambda: (ALPHA, 21) in world.sink.ingested)
    # The store keeps media kinds as flags, each once (the normaliser's Content.media).
    assert [(r.msg_id, r.media, r.source_text) for r in world.rows() if r.msg_id > 20] == [
        (21, ["photo", "video"], "Flood photos from the valley")
    ]
    assert world.alerted_ids() == [21]
    # A sweep sees the parts again: still one post, one alert.
    assert await src.sweep("alpha") == 0
    assert [r.msg_id for r in world.rows() if r.msg_id > 20] == [21]
    assert world.alerted_ids() == [21]


async def test_gap_of_250_posts_recovered_once_with_no_duplicate_alerts(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    world.fake.fill(ALPHA, range(21, 271), text="flood bulletin number {id}", date=NOW)
    before = len(world.fake.sent(functions.messages.GetHistoryRequest))
    world.fake.flood(functions.messages.GetHistoryRequest, seconds=1, after=1)

    assert await src.sweep("alpha") == 250
    assert await src.sweep("alpha") == 0
    # A late live update for a post the sweep already stored changes nothing.
    await push(src.client, new_post(world.fake.channels[ALPHA].messages[270]), chats=world.chats())

    requests = world.fake.sent(functions.messages.GetHistoryRequest)[before:]
    assert len(requests) >= 3 and all(r.limit <= 100 for r in requests)
    assert [r.msg_id for r in world.rows()] == list(range(20, 271))
    assert world.alerted_ids() == list(range(21, 271))


async def test_usernames_are_not_resolved_again_after_a_restart(world: World) -> None:
    first = world.source(Entry("alpha"))
    await first.start()
    await first.stop()
    fake2 = world.fake.restarted()
    second = world.source(Entry("alpha"), fake=fake2)
    await second.start()
    assert len(world.fake.sent(functions.contacts.ResolveUsernameRequest)) == 1
    assert fake2.sent(functions.contacts.ResolveUsernameRequest) == []


async def test_unresolvable_channel_reaches_the_ops_destination(world: World) -> None:
    src = world.source(Entry("nosuchchannel"), Entry("alpha"))
    await src.start()
    [notice] = world.alerts("ops")
    assert "nosuchchannel" in (notice.summary or "")
    assert world.health.channels["nosuchchannel"].last_error
