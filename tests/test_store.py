"""The store and the one ingest path, on real SQLite and (in CI) real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.parse import read_dump
from bot.parse.model import Entity
from bot.pipeline.compose import PRUNED
from bot.pipeline.ingest import Ingest, result_of
from bot.sources.dump import dump_items
from bot.sources.model import ChannelRef, Incoming
from bot.store.models import Channel, Message, MessageEdit
from tests.conftest import SAMPLE

CHAN = ChannelRef(tg_id=1001, username="SomeNews", title="Some News")


def _count(store, model) -> int:
    with Session(store) as s:
        return s.scalar(select(func.count()).select_from(model))


async def test_replaying_a_dump_twice_adds_nothing(sink, store):
    items = dump_items(read_dump(SAMPLE), "mfa")
    first = await sink.ingest(items)
    assert (first.read, first.new, first.unchanged) == (11, 11, 0)
    second = await sink.ingest(dump_items(read_dump(SAMPLE), "mfa"))
    assert (second.read, second.new, second.unchanged, second.updated) == (11, 0, 11, 0)
    assert _count(store, Message) == 11
    with Session(store) as s:
        channel = s.scalar(select(Channel))
        assert channel.dump == "dump:mfa" and channel.tg_id is None and channel.username is None
        ids = list(s.scalars(select(Message.msg_id).order_by(Message.msg_id)))
    assert ids == list(range(1, 12))


async def test_a_dump_never_mixes_with_the_live_channel_of_the_same_name(sink, store):
    await sink.ingest(dump_items(read_dump(SAMPLE), "mfarussia"))
    live = ChannelRef(tg_id=42, username="mfarussia")
    await sink.ingest([Incoming(channel=live, message_id=1, text="a live post")])
    with Session(store) as s:
        assert s.scalar(select(func.count()).select_from(Channel)) == 2
        texts = {m.text for m in s.scalars(select(Message).where(Message.msg_id == 1))}
    assert "a live post" in texts and len(texts) == 2


async def test_an_edit_updates_the_text_and_keeps_the_history(sink, store):
    d0 = datetime(2026, 1, 1, tzinfo=UTC)
    await sink.ingest([Incoming(channel=CHAN, message_id=7, text="first #draft", date=d0)])
    result = await sink.ingest(
        [Incoming(channel=CHAN, message_id=7, text="second #final", date=d0, edit_date=datetime.now(UTC))]
    )
    assert (result.new, result.updated) == (0, 1)
    with Session(store) as s:
        msg = s.scalar(select(Message))
        assert msg.text == "second #final" and msg.hashtags == ["final"]
        assert [e.text for e in s.scalars(select(MessageEdit))] == ["first #draft"]
    # The same edit seen again (a sweep after the live event) is no new version.
    again = await sink.ingest(
        [Incoming(channel=CHAN, message_id=7, text="second #final", date=d0, edit_date=datetime.now(UTC))]
    )
    assert (again.updated, again.unchanged) == (0, 1)
    assert _count(store, MessageEdit) == 1


async def test_a_deletion_marks_the_post_and_keeps_its_text(sink, store):
    await sink.ingest(
        [
            Incoming(channel=CHAN, message_id=1, text="soon gone"),
            Incoming(channel=CHAN, message_id=2, text="stays"),
        ]
    )
    assert await sink.delete(CHAN, [1, 99]) == 1
    with Session(store) as s:
        rows = {m.msg_id: (m.deleted, m.text) for m in s.scalars(select(Message))}
    assert rows == {1: (True, "soon gone"), 2: (False, "stays")}


async def test_the_cursor_is_the_last_seen_id_and_survives_a_new_process(sink, store, make_pipeline):
    assert await sink.cursor(CHAN) is None
    await sink.ingest([Incoming(channel=CHAN, message_id=i, text=f"post {i}") for i in (5, 9, 7)])
    assert await sink.cursor(CHAN) == 9
    other = make_pipeline().ingest  # another process over the same database
    assert await other.cursor(ChannelRef(username="somenews")) == 9


async def test_resolved_channels_are_remembered(sink):
    assert await sink.resolved("SomeNews") is None
    await sink.remember(ChannelRef(tg_id=1001, username="SomeNews", title="Some News", access_hash=555))
    ref = await sink.resolved("@somenews")
    assert (ref.tg_id, ref.access_hash, ref.title) == (1001, 555, "Some News")


async def test_a_renamed_channel_keeps_its_posts(sink, store):
    await sink.ingest([Incoming(channel=CHAN, message_id=1, text="before the rename")])
    renamed = ChannelRef(tg_id=1001, username="NewName", title="Some News")
    await sink.ingest([Incoming(channel=renamed, message_id=2, text="after the rename")])
    with Session(store) as s:
        channel = s.scalar(select(Channel))
        assert channel.username == "newname"
        assert s.scalar(select(func.count()).select_from(Channel)) == 1
    assert await sink.cursor(ChannelRef(username="newname")) == 2


async def test_the_same_post_in_two_channels_is_counted_as_a_duplicate(sink):
    a = ChannelRef(tg_id=1, username="a")
    b = ChannelRef(tg_id=2, username="b")
    await sink.ingest([Incoming(channel=a, message_id=1, text="🚨 Breaking:  the same words")])
    result = await sink.ingest([Incoming(channel=b, message_id=9, text="Breaking: the same words")])
    assert (result.new, result.duplicates) == (1, 1)


async def test_entities_are_stored_and_win_for_hashtags(sink, store):
    text = "Read in full"
    await sink.ingest(
        [
            Incoming(
                channel=CHAN,
                message_id=3,
                text=text,
                entities=[Entity("text_url", 0, 12, "https://x.example/a")],
            )
        ]
    )
    with Session(store) as s:
        msg = s.scalar(select(Message))
    assert msg.urls == ["https://x.example/a"]
    assert msg.entities == [{"type": "text_url", "offset": 0, "length": 12, "url": "https://x.example/a"}]


_line = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda s: s.strip() and "\n" not in s and "\r" not in s
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.lists(_line, min_size=1, max_size=6), min_size=1, max_size=6), st.text(min_size=1, max_size=8)
)
def test_replay_is_idempotent_for_any_dump(store, posts, name):
    """Whatever the dump, the second replay stores nothing new and changes nothing."""
    text = "\n".join(f"Forwarded from Somebody\n{chr(10).join(p)}\n{chr(10).join(p)}" for p in posts)
    ingest = Ingest(store)
    channel = "".join(ch for ch in name if ch.isalnum()) or "x"
    first = result_of(ingest.ingest_sync(dump_items(text, channel)))
    second = result_of(ingest.ingest_sync(dump_items(text, channel)))
    assert second.new == second.updated == 0
    assert second.unchanged == second.read == first.read


async def test_a_post_seen_by_the_web_preview_and_by_telethon_is_one_post(sink, store):
    web = ChannelRef(tg_id=1006, username="MFARussia", title="MFA Russia")  # data-view gives the id
    live = ChannelRef(tg_id=1006, username="mfarussia", title="MFA Russia", access_hash=77)
    await sink.ingest([Incoming(channel=web, message_id=500, text="Statement #CIS")])
    result = await sink.ingest([Incoming(channel=live, message_id=500, text="Statement #CIS")])
    assert (result.new, result.unchanged) == (0, 1)
    assert _count(store, Message) == 1 and _count(store, Channel) == 1


def test_retention_prunes_old_messages_and_sent_deliveries_but_never_the_cursor(store):
    from bot.store.maintenance import prune

    ingest = Ingest(store)
    ingest.ingest_sync([Incoming(channel=CHAN, message_id=i, text=f"post {i}") for i in (1, 2)])
    with Session(store) as s, s.begin():
        s.execute(
            update(Message).where(Message.msg_id == 1).values(created_at=datetime(2020, 1, 1, tzinfo=UTC))
        )
    removed = prune(store, older_than=90 * 86400, forget=PRUNED)
    assert removed["messages"] == 1
    with Session(store) as s:
        assert list(s.scalars(select(Message.msg_id))) == [2]
        assert s.scalar(select(Channel.last_seen_id)) == 2


async def test_a_posts_text_is_stored_once_unless_the_source_gave_another(sink, store):
    # Most posts' source text is their normalised text: stored once. One whose source differs (here
    # trailing blanks, which normalising drops) keeps the source's own, which is what its entities'
    # offsets point into.
    plain, decomposed = "Flood warning for the river #valley", "Cafe\u0301 closed  "
    await sink.ingest(
        [
            Incoming(channel=CHAN, message_id=1, text=plain),
            Incoming(channel=CHAN, message_id=2, text=decomposed),
        ]
    )
    with Session(store) as s:
        rows = {m.msg_id: m for m in s.scalars(select(Message))}
        assert (rows[1].raw_text, rows[1].text, rows[1].source_text) == ("", plain, plain)
        assert rows[2].raw_text == decomposed and rows[2].text == "Cafe\u0301 closed"
        assert rows[2].source_text == decomposed
    # Seen again, neither is an edit: what is compared is the source's text, however it is stored.
    again = await sink.ingest(
        [
            Incoming(channel=CHAN, message_id=1, text=plain),
            Incoming(channel=CHAN, message_id=2, text=decomposed),
        ]
    )
    assert (again.unchanged, again.updated) == (2, 0)
    assert _count(store, MessageEdit) == 0
