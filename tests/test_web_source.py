"""The web-preview poller against a real HTTP server on 127.0.0.1, writing to the real ingest path."""

from __future__ import annotations

import asyncio
import base64
import html
import io
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import REGISTRY
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug import Request, Response

from bot.health import Health
from bot.redact import endpoint
from bot.settings import Settings
from bot.sources.model import ChannelRef, Incoming, IngestResult
from bot.sources.web import USER_AGENT, WebError, WebSource
from bot.store.models import Alert, Message

CHANNEL = "KvartalNews"
KEY = "kvartalnews"
TG_ID = 1115678342
RULES = """
rules:
  - id: brics
    match:
      any: ["BRICS"]
"""


def post_html(channel: str, mid: int, text: str, tg_id: int = TG_ID) -> str:
    """One post in the preview's markup (see tests/fixtures/web/channel_page.html)."""
    view = base64.urlsafe_b64encode(f'{{"c":-{tg_id},"p":{mid}}}'.encode()).decode().rstrip("=")
    when = datetime.now(UTC).replace(microsecond=0).isoformat()
    return (
        '<div class="tgme_widget_message_wrap js-widget_message_wrap">'
        '<div class="tgme_widget_message text_not_supported_wrap js-widget_message"'
        f' data-post="{channel}/{mid}"'
        f' data-view="{view}"><div class="tgme_widget_message_bubble">'
        '<div class="tgme_widget_message_author accent_color"><a class="tgme_widget_message_owner_name" '
        f'href="https://t.me/{channel}"><span dir="auto">Квартал</span></a></div>'
        f'<div class="tgme_widget_message_text js-message_text" dir="auto">{html.escape(text)}</div>'
        '<div class="tgme_widget_message_footer compact js-message_footer">'
        '<div class="tgme_widget_message_info">'
        '<span class="tgme_widget_message_views">1.2K</span><span class="tgme_widget_message_meta">'
        f'<a class="tgme_widget_message_date" href="https://t.me/{channel}/{mid}">'
        f'<time datetime="{when}" class="time">12:00</time></a></span></div></div></div></div></div>'
    )


def page_html(
    posts: Sequence[tuple[int, str]], before: int | None = None, channel: str = CHANNEL, tg_id: int = TG_ID
) -> str:
    more = (
        '<div class="tgme_widget_message_centered js-messages_more_wrap">'
        f'<a href="/s/{channel}?before={before}" class="tme_messages_more js-messages_more"'
        f' data-before="{before}"></a></div>'
        if before is not None
        else ""
    )
    body = "".join(post_html(channel, mid, text, tg_id) for mid, text in sorted(posts))
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><div class="tgme_channel_info">'
        '<div class="tgme_channel_info_header"><div class="tgme_channel_info_header_title">'
        '<span dir="auto">Квартал</span></div></div></div>'
        f'<section class="tgme_channel_history js-message_history">{more}{body}</section></body></html>'
    )


def text_of(mid: int) -> str:
    return f"Сообщение {mid}: обычные новости"


class Recording:
    """The real sink, with a note of each batch and an event per ingest call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.batches: list[list[Incoming]] = []
        self.ingested = asyncio.Event()

    async def ingest(self, items: Sequence[Incoming]) -> IngestResult:
        self.batches.append(list(items))
        result = await self.inner.ingest(items)
        self.ingested.set()
        return result

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@dataclass
class Entry:
    name: str
    interval: float | None = None
    backfill: int = 0


@pytest.fixture
def web_settings(settings: Settings, httpserver: HTTPServer) -> Settings:
    return settings.model_copy(
        update={
            "web_base": httpserver.url_for("/").rstrip("/"),
            "web_interval": 0.01,
            "web_rpm": 60_000,
            "web_max_pages": 20,
            "max_alert_age": 10.0**9,
        }
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


@pytest.fixture
def pipeline(make_pipeline: Callable[..., object]):
    return make_pipeline(RULES, console=io.StringIO(), max_alert_age=10.0**9)


@pytest.fixture
def sink(pipeline) -> Recording:
    return Recording(pipeline.ingest)


def serve(httpserver: HTTPServer, pages: dict[int | None, str]) -> None:
    """Serve /s/CHANNEL (key None) and /s/CHANNEL?before=N, replacing what was served before."""
    httpserver.clear()
    for before, body in pages.items():
        query = {"before": str(before)} if before is not None else ""
        httpserver.expect_request(f"/s/{CHANNEL}", query_string=query).respond_with_data(
            body, content_type="text/html; charset=utf-8"
        )


def alerted_posts(pipeline) -> list[int]:
    """Message ids of the posts that got a match alert queued in the outbox."""
    with Session(pipeline.store) as session:
        query = select(Message.msg_id).join(Alert, Alert.message_id == Message.id)
        query = query.where(Alert.kind == "match")
        return sorted(session.scalars(query))


async def test_first_poll_is_the_starting_point_and_only_later_posts_alert(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording, pipeline
) -> None:
    since = datetime.now(UTC)
    serve(httpserver, {None: page_html([(1, "Старый пост про BRICS"), (2, text_of(2)), (3, text_of(3))])})
    source = WebSource(sink, client, web_settings, channels=[Entry(CHANNEL)])

    first = await source.poll_once(CHANNEL)
    assert (first.new, first.matches) == (3, 1)
    assert [i.alert for i in sink.batches[0]] == [False, False, False]
    assert alerted_posts(pipeline) == []

    serve(httpserver, {None: page_html([(i, text_of(i)) for i in (2, 3, 4)] + [(5, "Новый саммит BRICS")])})
    second = await source.poll_once(CHANNEL)
    assert (second.new, second.matches) == (2, 1)
    assert [i.message_id for i in sink.batches[1]] == [4, 5]
    assert alerted_posts(pipeline) == [5]
    tally = await pipeline.drain(since, timeout=5)
    assert tally == {"sent": 1}
    shown = pipeline.console.getvalue()
    assert "Новый саммит BRICS" in shown and "Старый пост" not in shown
    assert await sink.cursor(ChannelRef(tg_id=TG_ID)) == 5


async def test_a_poll_of_an_unchanged_page_stores_and_alerts_nothing(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording, pipeline
) -> None:
    serve(httpserver, {None: page_html([(1, text_of(1)), (2, "BRICS")])})
    source = WebSource(sink, client, web_settings, channels=[Entry(CHANNEL)])
    await source.poll_once(CHANNEL)

    again = await source.poll_once(CHANNEL)
    assert again == IngestResult()
    assert len(sink.batches) == 1  # nothing was sent to the sink the second time
    assert alerted_posts(pipeline) == []
    assert len(httpserver.log) == 2


async def test_an_edited_post_on_the_page_is_sent_again(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording
) -> None:
    serve(httpserver, {None: page_html([(1, text_of(1)), (2, text_of(2))])})
    source = WebSource(sink, client, web_settings, channels=[Entry(CHANNEL)])
    await source.poll_once(CHANNEL)
    serve(httpserver, {None: page_html([(1, text_of(1)), (2, "Исправлено: встреча отменена")])})
    result = await source.poll_once(CHANNEL)
    assert (result.new, result.updated) == (0, 1)
    assert [i.message_id for i in sink.batches[1]] == [2]


def history(newest: int, oldest: int, per_page: int = 10) -> dict[int | None, str]:
    """Pages of `per_page` posts, newest first, each with a "load more" link to the next."""
    pages: dict[int | None, str] = {}
    key: int | None = None
    top = newest
    while top >= oldest:
        ids = list(range(max(oldest, top - per_page + 1), top + 1))
        before = ids[0] if ids[0] > 1 else None
        pages[key] = page_html([(i, text_of(i)) for i in ids], before=before)
        key, top = ids[0], ids[0] - 1
    return pages


def requested_befores(httpserver: HTTPServer) -> list[str | None]:
    return [req.args.get("before") for req, _ in httpserver.log]


async def test_catch_up_follows_pages_back_to_the_last_stored_id(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording
) -> None:
    serve(httpserver, {None: page_html([(1, text_of(1)), (2, text_of(2)), (3, text_of(3))])})
    source = WebSource(sink, client, web_settings, channels=[Entry(CHANNEL)])
    await source.poll_once(CHANNEL)  # cursor: 3

    # 42 posts arrived while we were away: 36..45, 26..35, 16..25, 6..15, then 1..5 reaches the cursor.
    serve(httpserver, history(45, 1))
    result = await source.poll_once(CHANNEL)
    assert result.new == 42
    assert sorted(i.message_id for i in sink.batches[1]) == list(range(4, 46))
    assert all(i.alert for i in sink.batches[1])
    assert requested_befores(httpserver) == [None, "36", "26", "16", "6"]
    assert await sink.cursor(ChannelRef(tg_id=TG_ID)) == 45


async def test_catch_up_cut_short_by_max_pages_is_a_gap(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    health = Health(lag_threshold=900)
    settings = web_settings.model_copy(update={"web_max_pages": 2})
    serve(httpserver, {None: page_html([(1, text_of(1)), (2, text_of(2)), (3, text_of(3))])})
    source = WebSource(sink, client, settings, health=health, channels=[Entry(CHANNEL)])
    await source.poll_once(CHANNEL)
    gaps_before = REGISTRY.get_sample_value("tgsentinel_gaps_total", {"channel": KEY}) or 0.0

    serve(httpserver, history(45, 1))
    with caplog.at_level(logging.WARNING, logger="bot.sources.web"):
        result = await source.poll_once(CHANNEL)
    assert result.new == 20  # 26..45: two pages
    assert requested_befores(httpserver) == [None, "36"]
    # Ids 4..25 were not reached: 22 of them.
    assert health.channels[KEY].gap == 22
    assert not health.healthy()
    assert REGISTRY.get_sample_value("tgsentinel_gaps_total", {"channel": KEY}) == gaps_before + 1
    assert any("catch-up stopped" in r.getMessage() and "22" in r.getMessage() for r in caplog.records)


async def test_new_channel_backfill_reads_older_pages_without_alerting(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording
) -> None:
    serve(httpserver, history(30, 1))
    source = WebSource(sink, client, web_settings, channels=[Entry(CHANNEL, backfill=15)])
    result = await source.poll_once(CHANNEL)
    assert result.new == 20
    assert requested_befores(httpserver) == [None, "21"]
    assert not any(i.alert for i in sink.batches[0])


async def test_backs_off_on_5xx_and_429_honours_retry_after_then_succeeds(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    health = Health(lag_threshold=900)
    stamps: list[float] = []

    def stamped(response: Response) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            stamps.append(time.monotonic())
            return response

        return handler

    uri = f"/s/{CHANNEL}"
    httpserver.expect_ordered_request(uri).respond_with_handler(stamped(Response("busy", status=503)))
    httpserver.expect_ordered_request(uri).respond_with_handler(stamped(Response("oops", status=500)))
    httpserver.expect_ordered_request(uri).respond_with_handler(
        stamped(Response("slow down", status=429, headers={"Retry-After": "1"}))
    )
    httpserver.expect_ordered_request(uri).respond_with_handler(
        stamped(Response(page_html([(1, text_of(1))]), content_type="text/html; charset=utf-8"))
    )
    # A 50 ms interval: a backoff of 0.1 s, then 0.2 s, then the Retry-After's 1 s.
    settings = web_settings.model_copy(update={"web_interval": 0.05})
    source = WebSource(sink, client, settings, health=health, channels=[Entry(CHANNEL)])
    with caplog.at_level(logging.WARNING, logger="bot.sources.web"):
        task = asyncio.create_task(source.run())
        try:
            await asyncio.wait_for(sink.ingested.wait(), timeout=10)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    assert len(stamps) == 4
    assert stamps[3] - stamps[2] >= 1.0  # Retry-After: 1
    assert stamps[2] - stamps[1] > stamps[1] - stamps[0] > 0  # the backoff grows
    failures = [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
    assert len(failures) == 3
    assert "HTTP 503" in failures[0] and "HTTP 500" in failures[1] and "429" in failures[2]
    assert all(web_settings.web_base not in line for line in failures)
    assert health.channels[KEY].last_error is None and health.channels[KEY].last_sweep is not None
    assert await sink.cursor(ChannelRef(tg_id=TG_ID)) == 1


async def test_keeps_running_when_the_server_is_unreachable(
    web_settings: Settings, client, sink: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    health = Health(lag_threshold=900)
    # A port nobody listens on: connection refused, over and over.
    settings = web_settings.model_copy(update={"web_base": "http://user:secret@127.0.0.1:9"})
    source = WebSource(sink, client, settings, health=health, channels=[Entry(CHANNEL)])
    third_failure = asyncio.Event()

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            failures = sum("poll failed" in r.getMessage() for r in caplog.records)
            if failures >= 3:
                third_failure.set()

    counter = Count(level=logging.WARNING)
    logging.getLogger("bot.sources.web").addHandler(counter)
    try:
        with caplog.at_level(logging.WARNING, logger="bot.sources.web"):
            task = asyncio.create_task(source.run())
            await asyncio.wait_for(third_failure.wait(), timeout=10)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        logging.getLogger("bot.sources.web").removeHandler(counter)
    lines = [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
    assert len(lines) >= 3
    assert all("secret" not in line for line in lines)
    assert health.channels[KEY].last_error
    # Nothing ever succeeded: failing at once (not after the lag threshold), and not connected.
    assert health.state(KEY) == "failing" and health.status() == "unhealthy"
    assert health.sources["web"].connected is False
    assert "secret" not in (health.sources["web"].last_error or "")


async def test_a_name_that_is_no_public_channel_is_a_clear_error(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording
) -> None:
    httpserver.expect_request("/s/nobody_here").respond_with_data(
        "", status=302, headers={"Location": "/nobody_here"}
    )
    source = WebSource(sink, client, web_settings)
    with pytest.raises(WebError, match="not a public channel"):
        await source.poll_once("nobody_here")


async def test_a_name_t_me_redirects_is_reported_once_and_not_polled_again_until_a_reload(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    polled = {"nobody_here": 0, "chan_a": 0}
    arrived = asyncio.Event()

    def handler(request: Request) -> Response:
        name = request.path.rsplit("/", 1)[1]
        polled[name] += 1
        loop.call_soon_threadsafe(arrived.set)
        if name == "nobody_here":
            return Response("", status=302, headers={"Location": "https://t.me/nobody_here"})
        return Response(page_html([(1, text_of(1))], channel=name), content_type="text/html; charset=utf-8")

    httpserver.expect_request("/s/nobody_here").respond_with_handler(handler)
    httpserver.expect_request("/s/chan_a").respond_with_handler(handler)
    health = Health(lag_threshold=900)
    health.listed_at = {"nobody_here": "rules/watch.yaml:2"}
    told: list[tuple[str, str]] = []

    async def ops(kind: str, summary: str) -> None:
        told.append((kind, summary))

    entries = [Entry("nobody_here"), Entry("chan_a")]
    settings = web_settings.model_copy(update={"web_interval": 0.05})
    source = WebSource(sink, client, settings, health=health, channels=entries, ops=ops)

    async def until(predicate: Callable[[], bool]) -> None:
        while not predicate():
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), timeout=10)

    task = asyncio.create_task(source.run())
    try:
        with caplog.at_level(logging.INFO, logger="bot.sources.web"):
            await until(lambda: polled["chan_a"] >= 5)  # five rounds of the other channel
        assert polled["nobody_here"] == 1
        assert told == [
            (
                "web.not_public",
                f"rules/watch.yaml:2: not a public channel: {endpoint(settings.web_base)}/s/nobody_here "
                "redirects (HTTP 302); is the name right, and is the channel public?",
            )
        ]
        snap = health.snapshot()
        assert snap["channels"]["nobody_here"]["state"] == "problem"
        assert snap["channels"]["nobody_here"]["problem"] == told[0][1]
        assert snap["sources"]["web"]["connected"] is True  # t.me answered: it is no outage
        assert health.outages(after=0.0) == []
        assert snap["status"] == "unhealthy"
        labels = {"channel": "nobody_here", "kind": "not_public"}
        assert REGISTRY.get_sample_value("tgsentinel_channel_problems", labels) == 1.0
        # The other channel said how it started, once.
        started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("chan_a:")]
        assert started == [
            "chan_a: web preview every 0.05s; 1 post stored as the starting point, not alerted"
        ]

        # A reload that still lists it tries once more; still a redirect: not reported again.
        source.update(entries)
        await until(lambda: polled["nobody_here"] == 2)
        seen = polled["chan_a"]
        await until(lambda: polled["chan_a"] >= seen + 3)
        assert polled["nobody_here"] == 2 and len(told) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_global_rpm_cap_spaces_requests_across_channels(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording
) -> None:
    loop = asyncio.get_running_loop()
    enough = asyncio.Event()
    seen: list[tuple[float, str, str]] = []

    def handler(request: Request) -> Response:
        seen.append((time.monotonic(), request.path, request.headers.get("User-Agent", "")))
        if len(seen) >= 7:
            loop.call_soon_threadsafe(enough.set)
        name = request.path.rsplit("/", 1)[1]
        return Response(page_html([(1, text_of(1))], channel=name), content_type="text/html; charset=utf-8")

    httpserver.expect_request("/s/chan_a").respond_with_handler(handler)
    httpserver.expect_request("/s/chan_b").respond_with_handler(handler)
    httpserver.expect_request("/s/chan_c").respond_with_handler(handler)
    settings = web_settings.model_copy(update={"web_rpm": 600})  # one request per 0.1 s
    source = WebSource(sink, client, settings, channels=[Entry("chan_a"), Entry("chan_b"), Entry("chan_c")])
    # Three channels at 0.1 s apart: each is polled every 0.3 s, not every 0.01 s as configured.
    assert source.interval("chan_a") == pytest.approx(0.3)

    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(enough.wait(), timeout=10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    times = [t for t, _, _ in seen]
    # Measured where the requests arrive: on a loaded machine one request can reach the server late
    # and the next on time, so a single gap may be short. The rate cannot: over the run, and over
    # any three requests in a row, the spacing holds within one interval's worth of scheduling lag.
    assert times[-1] - times[0] >= (len(times) - 1) * 0.1 - 0.05
    assert min(c - a for a, c in zip(times, times[2:], strict=False)) >= 0.1
    assert {p for _, p, _ in seen} == {"/s/chan_a", "/s/chan_b", "/s/chan_c"}
    assert all(ua == USER_AGENT for _, _, ua in seen)
    assert USER_AGENT.startswith("tgsentinel/") and "public channel monitor" in USER_AGENT


async def test_update_starts_watching_new_channels_and_forgets_removed_ones(
    httpserver: HTTPServer, web_settings: Settings, client, sink: Recording
) -> None:
    loop = asyncio.get_running_loop()
    polled_b = asyncio.Event()

    def handler(request: Request) -> Response:
        name = request.path.rsplit("/", 1)[1]
        if name == "chan_b":
            loop.call_soon_threadsafe(polled_b.set)
        return Response(page_html([(1, text_of(1))], channel=name), content_type="text/html; charset=utf-8")

    httpserver.expect_request("/s/chan_a").respond_with_handler(handler)
    httpserver.expect_request("/s/chan_b").respond_with_handler(handler)
    health = Health(lag_threshold=900)
    settings = web_settings.model_copy(update={"web_interval": 3600.0})
    source = WebSource(sink, client, settings, health=health, channels=[Entry("chan_a")])
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(sink.ingested.wait(), timeout=5)  # chan_a's first poll
        source.update([Entry("chan_b", interval=3600.0)])
        await asyncio.wait_for(polled_b.wait(), timeout=5)  # polled at once, not after the hour
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert source.channels == ["chan_b"]
    assert set(health.channels) == {"chan_b"}
    assert health.channels["chan_b"].source == "web"
