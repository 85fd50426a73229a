"""The live Telegram source, offline, through Telethon's real dispatch and request paths.

The sink here is the recording one from tg_harness; tests/test_telegram_e2e.py runs the same
scenarios over the real ingest path and store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from telethon import errors, events, functions, types

from bot import metrics
from bot.health import Health
from bot.parse.model import Entity
from bot.settings import Settings
from bot.sources.model import Forward
from bot.sources.telegram import SessionError, TelegramSource
from tests.tg_harness import (
    T0,
    Entry,
    FakeTelegram,
    RecordingSink,
    album_merges,
    channel,
    deleted,
    edited,
    make_client,
    message,
    new_post,
    photo,
    push,
    service,
    video,
)

GetHistory = functions.messages.GetHistoryRequest
Resolve = functions.contacts.ResolveUsernameRequest
ALPHA, BETA = 1001, 1002


@dataclass
class World:
    fake: FakeTelegram
    sink: RecordingSink
    health: Health
    settings: Settings
    notices: list[tuple[str, str]] = field(default_factory=list)
    clients: list = field(default_factory=list)

    async def ops(self, kind: str, summary: str) -> None:
        self.notices.append((kind, summary))

    def source(self, *entries: Entry, fake: FakeTelegram | None = None) -> TelegramSource:
        client = make_client(fake or self.fake)
        self.clients.append(client)
        return TelegramSource(
            client, self.sink, self.health, self.settings, self.ops, entries, pace=0, backoff=(0.01, 0.05)
        )

    def chat(self, tg_id: int) -> types.Channel:
        return self.fake.channels[tg_id].chat


@pytest.fixture
async def world() -> AsyncIterator[World]:
    fake = FakeTelegram()
    fake.add_channel(ALPHA, "alpha", left=True)
    fake.fill(ALPHA, range(1, 11))
    fake.add_channel(BETA, "beta")
    fake.fill(BETA, range(1, 6))
    settings = Settings(_env_file=None, flood_wait_alert=0.5)
    w = World(fake, RecordingSink(), Health(lag_threshold=900), settings)
    yield w
    for client in w.clients:
        await client.disconnect()


def ids(items) -> list[int]:
    return [it.message_id for it in items]


async def test_new_channel_starts_at_its_newest_post_without_alerting(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    assert [(it.message_id, it.alert) for it in world.sink.all_ingested()] == [(10, False)]
    # A channel it was not a member of is joined; resolving happened once.
    assert len(world.fake.sent(functions.channels.JoinChannelRequest)) == 1
    assert len(world.fake.sent(Resolve)) == 1


async def test_backfill_stores_history_without_alerting(world: World) -> None:
    src = world.source(Entry("alpha", backfill=4))
    await src.start()
    assert ids(world.sink.all_ingested()) == [7, 8, 9, 10]
    assert not any(it.alert for it in world.sink.all_ingested())


async def test_new_post_is_ingested_for_alerting_with_entities_forward_and_media(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    source_channel = channel(555, "origin", "Origin News")
    text = "🚨 #Alert read more"  # the emoji is 2 UTF-16 units: '#' sits at unit 3
    msg = message(
        ALPHA,
        11,
        text,
        entities=[
            types.MessageEntityHashtag(offset=3, length=6),
            types.MessageEntityTextUrl(offset=10, length=9, url="https://example.org/a"),
            types.MessageEntityBold(offset=0, length=2),
        ],
        media=photo(),
        fwd_from=types.MessageFwdHeader(date=T0, from_id=types.PeerChannel(555), channel_post=77),
        views=1234,
    )
    world.fake.post(ALPHA, msg)
    await push(src.client, new_post(msg), chats=[world.chat(ALPHA), source_channel])

    [post] = [it for it in world.sink.all_ingested() if it.message_id == 11]
    assert post.alert is True
    assert post.text == text
    assert post.entities == [
        Entity("hashtag", 3, 6),
        Entity("text_url", 10, 9, url="https://example.org/a"),
        Entity("bold", 0, 2),
    ]
    assert post.media == ["photo"]
    assert post.forward == Forward(name="Origin News", tg_id=555, username="origin", post_id=77)
    assert post.views == 1234
    assert post.date == T0 + timedelta(seconds=11)
    assert post.channel.tg_id == ALPHA and post.channel.username == "alpha"
    assert world.health.channels["alpha"].last_post == post.date


async def test_forward_from_a_channel_not_in_the_update_keeps_id_and_post(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    msg = message(
        ALPHA,
        11,
        "reposted",
        fwd_from=types.MessageFwdHeader(date=T0, from_id=types.PeerChannel(556), channel_post=9),
    )
    world.fake.post(ALPHA, msg)
    await push(src.client, new_post(msg), chats=[world.chat(ALPHA)])
    assert world.sink.items(ALPHA)[-1].forward == Forward(name=None, tg_id=556, username=None, post_id=9)


async def test_edit_is_ingested_again_with_its_edit_date(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    await push(src.client, new_post(message(ALPHA, 11, "first version")), chats=[world.chat(ALPHA)])
    when = T0 + timedelta(hours=1)
    await push(
        src.client, edited(message(ALPHA, 11, "second version", edit_date=when)), chats=[world.chat(ALPHA)]
    )
    versions = [it for it in world.sink.all_ingested() if it.message_id == 11]
    assert [(v.text, v.edit_date) for v in versions] == [("first version", None), ("second version", when)]


async def test_deletion_is_passed_to_the_sink(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    await push(src.client, new_post(message(ALPHA, 11, "soon gone")), chats=[world.chat(ALPHA)])
    await push(src.client, deleted(ALPHA, [11]))
    assert world.sink.deleted == {(ALPHA, 11): True}


async def test_album_becomes_one_post_with_caption_and_every_media_item(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    parts = [
        message(ALPHA, 11, "", media=photo(), grouped_id=77),
        message(ALPHA, 12, "Caption #Album", media=video(), grouped_id=77),
        message(ALPHA, 13, "", media=photo(), grouped_id=77),
    ]
    world.fake.post(ALPHA, *parts)
    await push(src.client, *map(new_post, parts), chats=[world.chat(ALPHA)])
    # Telethon merges the parts about half a second after the last one.
    await world.sink.wait_for(lambda: (ALPHA, 11) in world.sink.posts)

    album = [it for it in world.sink.all_ingested() if it.message_id > 10]
    assert len(album) == 1
    assert album[0].message_id == 11
    assert album[0].text == "Caption #Album"
    assert album[0].media == ["photo", "video", "photo"]
    assert album[0].grouped_id == 77
    assert album[0].alert is True
    assert album_merges(src.client) == 0  # Telethon's merge state is not kept for ever

    # A later sweep sees the parts again but stores nothing new.
    assert await src.sweep("alpha") == 0
    assert [it.message_id for it in world.sink.items(ALPHA)] == [10, 11]


async def test_album_found_by_a_sweep_is_one_post(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    world.fake.post(
        ALPHA,
        message(ALPHA, 11, "", media=photo(), grouped_id=5),
        message(ALPHA, 12, "", media=photo(), grouped_id=5),
        message(ALPHA, 13, "caption last", media=photo(), grouped_id=5),
        message(ALPHA, 14, "after the album"),
    )
    assert await src.sweep("alpha") == 2
    got = [it for it in world.sink.all_ingested() if it.message_id > 10]
    assert [(it.message_id, it.text, len(it.media)) for it in got] == [
        (11, "caption last", 3),
        (14, "after the album", 0),
    ]


async def test_edit_of_an_album_part_updates_the_album(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    parts = [
        message(ALPHA, 11, "old caption", media=photo(), grouped_id=9),
        message(ALPHA, 12, "", media=photo(), grouped_id=9),
    ]
    world.fake.post(ALPHA, *parts)
    assert await src.sweep("alpha") == 1
    when = T0 + timedelta(minutes=5)
    fixed = message(ALPHA, 11, "new caption", media=photo(), grouped_id=9, edit_date=when)
    world.fake.post(ALPHA, fixed)
    await push(src.client, edited(fixed), chats=[world.chat(ALPHA)])
    last = world.sink.all_ingested()[-1]
    assert (last.message_id, last.text, len(last.media), last.edit_date) == (11, "new caption", 2, when)


async def test_gap_of_250_posts_is_recovered_in_pages_without_duplicates(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    before = metrics.POSTS_RECOVERED.labels(channel="alpha")._value.get()
    world.fake.fill(ALPHA, range(11, 261))  # posted while we were away: no updates for them
    history_before = len(world.fake.sent(GetHistory))

    assert await src.sweep("alpha") == 250

    requests = world.fake.sent(GetHistory)[history_before:]
    pages = world.fake.pages[history_before:]
    assert len(requests) >= 3
    assert all(r.limit <= 100 for r in requests) and max(pages) <= 100
    got = [it.message_id for it in world.sink.all_ingested() if it.message_id > 10]
    assert got == list(range(11, 261))  # each once, in order
    assert all(it.alert for it in world.sink.all_ingested() if it.message_id > 10)
    assert metrics.POSTS_RECOVERED.labels(channel="alpha")._value.get() - before == 250


async def test_live_post_after_a_gap_fetches_the_gap_first(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    world.fake.fill(ALPHA, range(11, 150))  # Telethon skipped these (a gap over 100 is dropped)
    latest = message(ALPHA, 150, "the one that arrived")
    world.fake.post(ALPHA, latest)
    await push(src.client, new_post(latest), chats=[world.chat(ALPHA)])
    assert [it.message_id for it in world.sink.all_ingested() if it.message_id > 10] == list(range(11, 151))


async def test_service_message_gap_does_not_lose_the_next_post(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    world.fake.post(ALPHA, service(ALPHA, 11))
    nxt = message(ALPHA, 12, "after a pin")
    world.fake.post(ALPHA, nxt)
    await push(src.client, new_post(nxt), chats=[world.chat(ALPHA)])
    assert ids(world.sink.items(ALPHA)) == [10, 12]


async def test_floodwait_during_a_sweep_is_slept_through_and_loses_nothing(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    world.fake.fill(ALPHA, range(11, 261))
    world.fake.flood(GetHistory, seconds=1, after=1)  # the sweep's second page is refused for 1 s
    waited_before = metrics.FLOOD_WAIT_SECONDS._value.get()

    started = time.monotonic()
    assert await src.sweep("alpha") == 250
    assert time.monotonic() - started >= 1.0

    got = [it.message_id for it in world.sink.all_ingested() if it.message_id > 10]
    assert got == list(range(11, 261))
    assert metrics.FLOOD_WAIT_SECONDS._value.get() - waited_before == 1
    assert world.health.channels["alpha"].flood_wait_until is not None
    # Longer than the alert threshold (0.5 s here): ops hear about it.
    assert any(kind == "telegram.floodwait" for kind, _ in world.notices)


async def test_floodwait_on_resolve_is_slept_through(world: World) -> None:
    world.fake.flood(Resolve, seconds=1)
    src = world.source(Entry("alpha"))
    await src.start()
    assert len(world.fake.sent(Resolve)) == 2
    assert ids(world.sink.all_ingested()) == [10]


async def test_restart_does_not_resolve_usernames_again(world: World) -> None:
    first = world.source(Entry("alpha"), Entry("beta"))
    await first.start()
    assert len(world.fake.sent(Resolve)) == 2
    await first.stop()

    world.fake.fill(ALPHA, range(11, 14))  # posted while the process was down
    fake2 = world.fake.restarted()
    second = world.source(Entry("alpha"), Entry("beta"), fake=fake2)
    await second.start()
    assert fake2.sent(Resolve) == []
    assert fake2.sent(functions.channels.JoinChannelRequest) == []  # still a member
    # One request checks every cached channel at once.
    assert len(fake2.sent(functions.channels.GetChannelsRequest)) == 1
    # It catches up from where it stopped, alerting on the missed posts; no new baseline.
    assert [(it.message_id, it.alert) for it in world.sink.items(ALPHA)] == [
        (10, False),
        (11, True),
        (12, True),
        (13, True),
    ]


async def test_stale_access_hash_is_resolved_again(world: World) -> None:
    first = world.source(Entry("alpha"))
    await first.start()
    world.fake.channels[ALPHA].chat.access_hash += 1  # e.g. the channel was recreated
    fake2 = world.fake.restarted()
    second = world.source(Entry("alpha"), fake=fake2)
    await second.start()
    assert len(fake2.sent(Resolve)) == 1


async def test_unresolvable_channel_is_reported_once_with_its_rules_line_and_parked_until_a_reload(
    world: World,
) -> None:
    world.health.listed_at = {"ghost": "rules/watch.yaml:4"}
    src = world.source(Entry("ghost"), Entry("alpha"))
    await src.start()
    assert ids(world.sink.all_ingested()) == [10]
    ghost = world.health.snapshot()["channels"]["ghost"]
    assert ghost["state"] == "problem" and ghost["last_error"]
    assert ghost["problem"] == "rules/watch.yaml:4: @ghost does not exist (renamed or deleted?)"
    assert world.notices == [("telegram.not_found", ghost["problem"])]
    assert not world.health.healthy()
    labels = {"channel": "ghost", "kind": "not_found"}
    assert REGISTRY.get_sample_value("tgsentinel_channel_problems", labels) == 1.0
    # Not asked again at any sweep: resolving a missing name again and again earns FloodWaits.
    await src.sweep_all()
    await src.sweep_all()
    assert [r.username for r in world.fake.sent(Resolve)] == ["ghost", "alpha"]
    # A reload that still lists it tries once more, and does not report it a second time.
    await src.update([Entry("ghost"), Entry("alpha")])
    await src.sweep_all()
    assert [r.username for r in world.fake.sent(Resolve)] == ["ghost", "alpha", "ghost"]
    assert len(world.notices) == 1
    # Taken out of the rules: gone from health and metrics.
    await src.update([Entry("alpha")])
    assert REGISTRY.get_sample_value("tgsentinel_channel_problems", labels) is None
    assert world.health.healthy()


async def test_channel_that_cannot_be_swept_turns_health_unhealthy(world: World) -> None:
    src = world.source(Entry("alpha"), Entry("beta"))
    await src.start()
    assert world.health.healthy()

    world.fake.channels[BETA].private = True
    # Time passes: both were last confirmed a full threshold ago.
    for ch in world.health.channels.values():
        ch.last_sweep = time.time() - world.health.lag_threshold - 1
    await src.sweep_all()
    await src.sweep_all()

    assert not world.health.healthy()
    snap = world.health.snapshot()["channels"]
    assert snap["alpha"]["lag_seconds"] < 5 and snap["alpha"]["last_error"] is None
    assert "private" in snap["beta"]["last_error"] and snap["beta"]["state"] == "problem"
    # Ops hear about it once, not at every sweep.
    assert [kind for kind, _ in world.notices] == ["telegram.private"]

    world.fake.channels[BETA].private = False
    await src.sweep_all()
    assert world.health.healthy()


async def test_each_channel_says_how_it_starts_and_a_transient_catch_up_failure_is_retried_quietly(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    src = world.source(Entry("alpha"))
    with caplog.at_level(logging.INFO, logger="bot.sources.telegram"):
        await src.start()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alpha:")]
    assert lines == [
        "alpha: telegram, live updates and a catch-up sweep every 300s; "
        "1 post stored as the starting point, not alerted"
    ]
    assert world.health.state("alpha") == "ok"

    world.fake.fail(GetHistory, lambda req: ConnectionError("connection reset"))
    await src.sweep_all()
    # Within the lag threshold a failed sweep is "retrying": still healthy, no ops notice (a long
    # failure is an outage notice, sent by the monitor), and the next sweep tries again.
    assert world.health.state("alpha") == "retrying" and world.health.healthy()
    assert world.notices == []
    world.fake.fill(ALPHA, [11])
    assert await src.sweep("alpha") == 1
    assert world.health.state("alpha") == "ok"

    again = world.source(Entry("alpha"), fake=world.fake.restarted())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bot.sources.telegram"):
        await again.start()
    assert any(r.getMessage().endswith("; resuming after message 11") for r in caplog.records)


async def test_revoked_session_raises_session_error_and_tells_ops(world: World) -> None:
    world.fake.authorized = False
    src = world.source(Entry("alpha"))
    with pytest.raises(SessionError, match="tgsentinel login"):
        await src.start()
    assert [kind for kind, _ in world.notices] == ["telegram.session"]


async def test_session_revoked_while_running_stops_run(world: World) -> None:
    src = world.source(Entry("alpha"))
    task = asyncio.create_task(src.run())
    await world.sink.wait_for(lambda: bool(world.sink.posts))
    world.fake.authorized = False
    world.fake.fill(ALPHA, [11])
    await push(src.client, new_post(world.fake.channels[ALPHA].messages[11]), chats=[world.chat(ALPHA)])
    await push(src.client, new_post(message(ALPHA, 13, "gap")), chats=[world.chat(ALPHA)])
    with pytest.raises(SessionError):
        await asyncio.wait_for(task, 5)
    assert world.health.connected is False


async def test_run_reconnects_after_network_loss_and_catches_up(world: World) -> None:
    src = world.source(Entry("alpha"))
    client = src.client
    failures = iter([OSError("network is unreachable"), OSError("still down")])
    real_connect = client.connect

    async def flaky_connect() -> None:
        err = next(failures, None)
        if err is not None:
            raise err
        await real_connect()

    client.connect = flaky_connect
    world.fake.connected = False  # starts offline: the first two connects fail
    task = asyncio.create_task(src.run())
    try:
        await world.sink.wait_for(lambda: (ALPHA, 10) in world.sink.posts)
        assert world.health.connected

        world.fake.drop()
        world.fake.fill(ALPHA, range(11, 131))  # posted during the outage
        await world.sink.wait_for(lambda: (ALPHA, 130) in world.sink.posts)
        assert world.health.connected
        got = [it.message_id for it in world.sink.all_ingested() if it.message_id > 10]
        assert got == list(range(11, 131))
        assert not task.done()  # network errors never end it
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_hot_reload_adds_and_drops_channels(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    await src.update([Entry("alpha"), Entry("beta")])
    assert ids(world.sink.items(BETA)) == [5]
    assert set(world.health.channels) == {"alpha", "beta"}

    await src.update([Entry("beta")])
    assert set(world.health.channels) == {"beta"}
    await push(src.client, new_post(message(ALPHA, 11, "not watched any more")), chats=[world.chat(ALPHA)])
    await push(src.client, new_post(message(BETA, 6, "watched")), chats=[world.chat(BETA)])
    assert (ALPHA, 11) not in world.sink.posts
    assert (BETA, 6) in world.sink.posts


async def test_sink_failure_on_a_live_post_is_retried_by_the_next_sweep(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    msg = message(ALPHA, 11, "while the database was away")
    world.fake.post(ALPHA, msg)
    world.sink.fail_next = ConnectionError("database is gone")
    await push(src.client, new_post(msg), chats=[world.chat(ALPHA)])
    assert (ALPHA, 11) not in world.sink.posts
    assert await src.sweep("alpha") == 1
    assert (ALPHA, 11) in world.sink.posts


async def test_channel_id_entry_without_username_is_reported_when_unknown(world: World) -> None:
    src = world.source(Entry(tg_id=987654))
    await src.start()
    assert world.health.channels["-100987654"].last_error
    assert world.notices and "987654" in world.notices[0][1]


@pytest.mark.parametrize("error", [errors.ChannelsTooMuchError, errors.UserAlreadyParticipantError])
async def test_join_refusals_that_still_allow_polling(world: World, error: type) -> None:
    world.fake.fail(functions.channels.JoinChannelRequest, lambda req: error(request=req))
    src = world.source(Entry("alpha"))
    await src.start()
    world.fake.fill(ALPHA, [11])
    assert await src.sweep("alpha") == 1


async def test_restart_after_an_album_does_not_store_its_other_parts_as_a_new_post(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    parts = [message(ALPHA, i, "cap" if i == 11 else "", media=photo(), grouped_id=8) for i in (11, 12, 13)]
    world.fake.post(ALPHA, *parts)
    await push(src.client, *map(new_post, parts), chats=[world.chat(ALPHA)])
    await world.sink.wait_for(lambda: (ALPHA, 11) in world.sink.posts)
    await src.stop()
    # The store knows the album by its first id (11) only; parts 12 and 13 are newer than that.
    assert await world.sink.cursor(src.channels[0]) == 11

    again = world.source(Entry("alpha"), fake=world.fake.restarted())
    await again.start()
    assert ids(world.sink.items(ALPHA)) == [10, 11]


async def test_album_parts_arriving_late_are_not_a_second_post(world: World) -> None:
    src = world.source(Entry("alpha"))
    await src.start()
    late_album = asyncio.Event()

    async def watch(event: events.Album.Event) -> None:  # runs after the source's own handler
        if event.messages[0].id == 13:
            late_album.set()

    src.client.add_event_handler(watch, events.Album)
    early = [message(ALPHA, i, "cap" if i == 11 else "", media=photo(), grouped_id=4) for i in (11, 12)]
    late = [message(ALPHA, i, "", media=photo(), grouped_id=4) for i in (13, 14)]
    world.fake.post(ALPHA, *early, *late)
    await push(src.client, *map(new_post, early), chats=[world.chat(ALPHA)])
    await world.sink.wait_for(lambda: (ALPHA, 11) in world.sink.posts)
    # Telethon has delivered the album; the other parts come later and are merged on their own.
    await push(src.client, *map(new_post, late), chats=[world.chat(ALPHA)])
    await asyncio.wait_for(late_album.wait(), 5)
    history = len(world.fake.sent(GetHistory))
    nxt = message(ALPHA, 15, "next post")
    world.fake.post(ALPHA, nxt)
    await push(src.client, new_post(nxt), chats=[world.chat(ALPHA)])
    assert ids(world.sink.items(ALPHA)) == [10, 11, 15]
    assert len(world.fake.sent(GetHistory)) == history  # 15 followed on directly: no catch-up needed
