"""One bad post costs only itself: the page parser, the id guard, the ingest path's post-by-post retry,
and the web source's concurrent polls, against real stores and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from prometheus_client import REGISTRY
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session
from werkzeug import Request, Response

from bot.settings import Settings
from bot.sources.model import ChannelRef, Incoming
from bot.sources.web import MAX_AHEAD, WebSource, id_problems
from bot.sources.webpage import MAX_DEPTH, parse_page
from bot.store.models import Message, RejectedPost
from tests.test_web_source import (
    CHANNEL,
    KEY,
    RULES,
    TG_ID,
    Entry,
    Recording,
    alerted_posts,
    page_html,
    post_html,
    serve,
    text_of,
)

INT64_MAX = 2**63 - 1


def with_markup(mid: int, inner: str, channel: str = CHANNEL) -> str:
    """A post whose text is `inner` as markup, not as escaped text."""
    return post_html(channel, mid, "@@TEXT@@").replace("@@TEXT@@", inner)


def page_with(posts: list[tuple[int, str]], extra: list[str], channel: str = CHANNEL) -> str:
    """A page of ordinary posts plus `extra` raw messages after them."""
    return page_html(posts, channel=channel).replace("</section>", "".join(extra) + "</section>")


def own_page(channel: str, posts: list[tuple[int, str]]) -> str:
    """`page_html` for a channel with an id of its own (page_html gives every channel TG_ID)."""
    body = page_html(posts, channel=channel)
    for mid, _ in posts:
        view = base64.urlsafe_b64encode(f'{{"c":-{TG_ID},"p":{mid}}}'.encode()).decode().rstrip("=")
        own = base64.urlsafe_b64encode(f'{{"c":-{zlib.crc32(channel.encode())},"p":{mid}}}'.encode())
        body = body.replace(view, own.decode().rstrip("="))
    return body


def nested(depth: int, words: str) -> str:
    return "<b>" * depth + words + "</b>" * depth


def rejected_total(reason: str) -> float:
    return REGISTRY.get_sample_value("tgsentinel_posts_rejected_total", {"reason": reason}) or 0.0


def dropped_total(reason: str) -> float:
    return REGISTRY.get_sample_value("tgsentinel_posts_dropped_total", {"reason": reason}) or 0.0


def rejected_rows(engine: Engine) -> list[tuple[str, str | None, str]]:
    with Session(engine) as session:
        rows = session.scalars(select(RejectedPost).order_by(RejectedPost.id))
        return [(r.channel, r.ref, r.reason) for r in rows]


def stored_ids(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return sorted(session.scalars(select(Message.msg_id)))


# --- the page parser -----------------------------------------------------------------------------------


def test_the_text_walk_needs_no_recursion_and_reads_text_deeper_than_the_limit_flat() -> None:
    shallow = '<a href="?q=%23BRICS">#BRICS</a> ' + nested(3, "summit")
    page = parse_page(
        page_with(
            [(1, text_of(1))],
            [
                with_markup(2, shallow + " " + nested(5000, "BRICS deep inside")),
                with_markup(3, nested(MAX_DEPTH, "x")),
            ],
        )
    )
    assert [p.message_id for p in page.posts] == [1, 2, 3]
    deep = page.posts[1]
    assert deep.text == "#BRICS summit BRICS deep inside"
    # The shallow markup keeps its entities; past the limit only the words are kept.
    assert [(e.type, e.offset, e.length) for e in deep.entities if e.type == "hashtag"] == [("hashtag", 0, 6)]
    assert len([e for e in deep.entities if e.type == "bold"]) == 3 + MAX_DEPTH
    # Exactly at the limit, every level is still an entity.
    assert len(page.posts[2].entities) == MAX_DEPTH
    assert page.rejected == []


def test_a_message_whose_id_is_no_number_is_rejected_and_the_page_read() -> None:
    bad = with_markup(2, "BRICS").replace(f'data-post="{CHANNEL}/2"', f'data-post="{CHANNEL}/2abc"')
    page = parse_page(page_with([(1, text_of(1)), (3, text_of(3))], [bad]))
    assert [p.message_id for p in page.posts] == [1, 3]
    [rejected] = page.rejected
    assert (rejected.ref, rejected.reason, rejected.message_id) == ("2abc", "bad_id", None)
    assert rejected.channel.key == KEY and "2abc" in rejected.detail


# --- the id guard --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "cursor", "problems"),
    [
        pytest.param(list(range(100, 120)), 99, {}, id="an ordinary page"),
        pytest.param(list(range(100_000, 100_020)), 50, {}, id="a long absence: the whole page is far ahead"),
        pytest.param([1, 2, 3], None, {}, id="a new channel"),
        pytest.param([5, 6, 2**63], 4, {2**63: "id_range"}, id="beyond int64"),
        pytest.param([5, 0, -3], 4, {0: "id_range", -3: "id_range"}, id="not positive"),
        pytest.param([5, 6, 10**15], 4, {10**15: "out_of_sequence"}, id="absurd, among the page's ids"),
        pytest.param([10**15], 4, {10**15: "out_of_sequence"}, id="absurd, alone: the cursor outvotes it"),
        pytest.param(
            [5, 10**15, 10**15 + 1],
            4,
            {10**15: "out_of_sequence", 10**15 + 1: "out_of_sequence"},
            id="two absurd ones vouching for each other",
        ),
        pytest.param([5, 6, 6 + MAX_AHEAD], None, {}, id="at the bound"),
        pytest.param([5, 6, 7 + MAX_AHEAD], None, {7 + MAX_AHEAD: "out_of_sequence"}, id="past the bound"),
        pytest.param([INT64_MAX], INT64_MAX - 1, {}, id="the highest the store holds"),
    ],
)
def test_id_guard(ids: list[int], cursor: int | None, problems: dict[int, str]) -> None:
    assert id_problems(ids, cursor) == problems


# --- the ingest path -----------------------------------------------------------------------------------


@pytest.fixture
def pipeline(make_pipeline: Callable[..., object]):
    return make_pipeline(RULES, max_alert_age=10.0**9)


@contextlib.contextmanager
def inserts_of_messages(engine: Engine) -> Iterator[list[int]]:
    """A list that counts `INSERT INTO messages` statements as they run."""
    counted: list[int] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO MESSAGES"):
            counted.append(len(parameters) if executemany else 1)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield counted
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_a_post_the_store_refuses_is_rejected_and_the_rest_of_its_batch_is_stored_and_alerted(
    pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    engine = pipeline.store
    chan = ChannelRef(tg_id=77, username="poisoned")
    # An id no BIGINT holds, and a date no UTC timestamp holds: each fails the batch's one insert.
    late = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(-timedelta(hours=14)))
    items = [
        Incoming(chan, 1, "BRICS one"),
        Incoming(chan, 2**63, "BRICS too big"),
        Incoming(chan, 3, "BRICS three"),
        Incoming(chan, 5, "BRICS five", date=late),
        Incoming(chan, 4, "BRICS four"),
    ]
    before = rejected_total("store_failed")
    result = await pipeline.ingest.ingest(items)

    assert (result.read, result.new, result.matches) == (5, 3, 3)
    assert stored_ids(engine) == [1, 3, 4]
    assert alerted_posts(pipeline) == [1, 3, 4]
    assert rejected_rows(engine) == [
        ("poisoned", str(2**63), "store_failed"),
        ("poisoned", "5", "store_failed"),
    ]
    assert rejected_total("store_failed") == before + 2
    # Past the post with a sound id; an id beyond the column never moves the cursor.
    assert await pipeline.ingest.cursor(chan) == 5
    skipped = [r.getMessage() for r in caplog.records if "skipped (store_failed)" in r.getMessage()]
    assert len(skipped) == 2 and not any("BRICS" in line for line in skipped)

    # The same batch again: nothing new stored, recorded or counted.
    again = await pipeline.ingest.ingest(items)
    assert again.new == 0 and len(rejected_rows(engine)) == 2
    assert rejected_total("store_failed") == before + 2


async def test_a_sound_batch_is_one_insert(pipeline) -> None:
    chan = ChannelRef(tg_id=78, username="busy")
    with inserts_of_messages(pipeline.store) as counted:
        result = await pipeline.ingest.ingest([Incoming(chan, i, f"post {i}") for i in range(1, 51)])
        assert counted == [50]
    assert result.new == 50


# --- the web source ------------------------------------------------------------------------------------


@pytest.fixture
def web_settings(settings: Settings, http: HTTPServer) -> Settings:
    return settings.model_copy(
        update={
            "web_base": http.url_for("/").rstrip("/"),
            "web_interval": 0.01,
            "web_rpm": 60_000,
            "web_max_pages": 20,
            "max_alert_age": 10.0**9,
        }
    )


async def test_poison_posts_are_skipped_recorded_once_and_never_stop_the_channel(
    http: HTTPServer, web_settings: Settings, client, pipeline
) -> None:
    sink = Recording(pipeline.ingest)
    # The starting point: cursor 6. Post 4 was deleted, so it is not on the page.
    serve(http, {None: page_html([(i, text_of(i)) for i in (2, 3, 5, 6)])})
    source = WebSource(sink, client, web_settings, channels=[Entry(CHANNEL)])
    await source.poll_once(CHANNEL)
    before = {r: rejected_total(r) for r in ("bad_id", "id_range", "out_of_sequence")}
    behind = dropped_total("behind_cursor")

    poison = [
        with_markup(7, "BRICS deep: " + nested(2000, "still read")),
        with_markup(2**63, "BRICS beyond int64"),
        with_markup(10**15, "BRICS absurdly far ahead"),
        with_markup(4, "BRICS going backwards"),  # below the cursor, and not on the last page
        with_markup(9, "BRICS bad id").replace(f'data-post="{CHANNEL}/9"', f'data-post="{CHANNEL}/9x"'),
    ]
    serve(http, {None: page_with([(5, text_of(5)), (6, text_of(6)), (8, "BRICS after the poison")], poison)})
    result = await source.poll_once(CHANNEL)

    assert result.new == 2
    assert stored_ids(pipeline.store) == [2, 3, 5, 6, 7, 8]
    assert alerted_posts(pipeline) == [7, 8]
    assert await sink.cursor(ChannelRef(tg_id=TG_ID)) == 8
    assert sorted(rejected_rows(pipeline.store)) == sorted(
        [(KEY, "9x", "bad_id"), (KEY, str(2**63), "id_range"), (KEY, str(10**15), "out_of_sequence")]
    )
    counted = {r: rejected_total(r) - before[r] for r in before}
    assert counted == {"bad_id": 1, "id_range": 1, "out_of_sequence": 1}
    assert dropped_total("behind_cursor") == behind + 1

    # The same page again, then, after a restart (a new source: nothing remembered but the store),
    # the channel moves on: nothing recorded twice, and the cursor was not poisoned.
    await source.poll_once(CHANNEL)
    serve(http, {None: page_with([(8, "BRICS after the poison"), (10, "BRICS later still")], poison[1:3])})
    restarted = WebSource(sink, client, web_settings, channels=[Entry(CHANNEL)])
    later = await restarted.poll_once(CHANNEL)
    assert later.new == 1 and alerted_posts(pipeline) == [7, 8, 10]
    assert await sink.cursor(ChannelRef(tg_id=TG_ID)) == 10
    assert len(rejected_rows(pipeline.store)) == 3
    assert {r: rejected_total(r) - before[r] for r in before} == counted


async def test_a_channel_whose_page_never_answers_holds_up_no_other(
    http: HTTPServer, web_settings: Settings, pipeline
) -> None:
    loop = asyncio.get_running_loop()
    release = threading.Event()
    hanging = asyncio.Event()
    polled: dict[str, int] = {"chan_a": 0, "chan_b": 0}
    rounds = asyncio.Event()

    def hang(request: Request) -> Response:
        loop.call_soon_threadsafe(hanging.set)
        release.wait(30)  # until the test ends: longer than the test would wait for the others
        return Response("late", status=503)

    def answer(request: Request) -> Response:
        name = request.path.rsplit("/", 1)[1]
        polled[name] += 1
        if min(polled.values()) >= 3:
            loop.call_soon_threadsafe(rounds.set)
        return Response(own_page(name, [(1, text_of(1))]), content_type="text/html; charset=utf-8")

    http.expect_request("/s/chan_hang").respond_with_handler(hang)
    http.expect_request("/s/chan_a").respond_with_handler(answer)
    http.expect_request("/s/chan_b").respond_with_handler(answer)
    settings = web_settings.model_copy(update={"web_interval": 0.05, "web_rpm": 6000})
    entries = [Entry("chan_hang"), Entry("chan_a"), Entry("chan_b")]
    async with httpx.AsyncClient(timeout=60.0) as client:
        source = WebSource(Recording(pipeline.ingest), client, settings, channels=entries)
        task = asyncio.create_task(source.run())
        try:
            await asyncio.wait_for(hanging.wait(), timeout=10)
            # Three rounds of the others while the first request still hangs (its timeout is 60 s).
            await asyncio.wait_for(rounds.wait(), timeout=10)
            assert not release.is_set()
        finally:
            release.set()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert await pipeline.ingest.cursor(ChannelRef(username="chan_a")) == 1
