"""The t.me/s web preview as a live source: no account, no API id, no login.

Each watched channel's page (`{web_base}/s/{username}`) is polled on an interval. Posts newer than the
channel's cursor (the highest id stored) go to the sink; a new channel's first page is its starting
point and is stored without alerting. When every post on the page is new, the "load more" link is
followed back to the cursor, at most `web_max_pages` pages; a catch-up the bound stops short is a gap:
logged, counted and shown in health.

Health: the source is connected when its last request reached t.me. A failed poll is retried with
backoff; a name t.me redirects (no such channel, or not public) is a problem, reported once (health,
metrics, ops) and not polled again until a reload of the rules.

Politeness: one global requests-per-minute cap (`web_rpm`) spaces every request, paging included, so
many channels stretch their intervals instead of hammering t.me; errors and 429s back off (a 429's
Retry-After holds every channel, since t.me limits by client, not by page); the User-Agent says who
we are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot import __version__, backoff, metrics
from bot.channel import key as channel_key
from bot.errors import first_line
from bot.health import Health, Ops, tell
from bot.pacer import Pacer
from bot.redact import endpoint
from bot.settings import Settings
from bot.sources.model import Incoming, IngestResult, Revision, Sink
from bot.sources.webpage import NotAChannelPage, Page, parse_page

log = logging.getLogger(__name__)

# Honest: says what we are, so t.me's operators can tell a monitor from a browser.
USER_AGENT = f"tgsentinel/{__version__} (public channel monitor; polls t.me/s previews)"

SOURCE = "web"
_BACKOFF_CAP = 900.0  # seconds: the longest an erroring channel waits between tries
_JITTER = (0.85, 1.15)


class WebError(Exception):
    """One fetch failed. The message is safe to log: no URL beyond the channel name, no secrets."""


class NotPublic(WebError):
    """t.me redirects the preview to the contact page: no such channel, a private one, or a user.

    Polling it again cannot help, so it is reported once and parked until the rules are reloaded."""


class RateLimited(WebError):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__("HTTP 429" + (f", Retry-After {retry_after:g}s" if retry_after is not None else ""))
        self.retry_after = retry_after


@dataclass(slots=True)
class _Watch:
    """A channel on the schedule."""

    name: str  # as configured, used in the URL
    key: str
    interval: float | None
    backfill: int
    due: float
    failures: int = 0
    parked: bool = False  # not a public channel: not polled again until the rules are reloaded


@dataclass(slots=True)
class _State:
    """What one channel's polls remember between polls."""

    started: bool = False  # its first page was taken as the starting point (matters while it is empty)
    announced: bool = False  # its first successful poll was logged
    seen: dict[int, Revision] = field(default_factory=dict)  # message id -> revision, last pages read


class WebSource:
    """Polls the web preview of a set of channels into a `Sink`. Hand it a new set with `update`."""

    def __init__(
        self,
        sink: Sink,
        client: httpx.AsyncClient,
        settings: Settings,
        health: Health | None = None,
        channels: Iterable[Any] = (),
        *,
        ops: Ops | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.sink = sink
        self.client = client
        self.settings = settings
        self.health = health
        self._ops = ops
        self.base = settings.web_base.rstrip("/")
        self._safe_base = endpoint(self.base)
        self._rng = rng or random.Random()
        self._spacing = 60.0 / max(settings.web_rpm, 1)
        self._pacer = Pacer(self._spacing)
        self._watches: dict[str, _Watch] = {}
        self._state: dict[str, _State] = {}
        self._wake = asyncio.Event()
        self.update(channels)

    # -- the channel set ---------------------------------------------------------------------------

    @property
    def channels(self) -> list[str]:
        return sorted(self._watches)

    def update(self, channels: Iterable[Any]) -> None:
        """Watch exactly these channels (objects with `name`, optional `interval` and `backfill`, or names).

        Channels kept keep their schedule and memory; new ones are polled at once, and so are parked
        ones (not a public channel when last tried) that are still listed: once per reload."""
        watches: dict[str, _Watch] = {}
        for entry in channels:
            name = entry if isinstance(entry, str) else getattr(entry, "name", None)
            if not name:
                log.warning("web: channel %s has no username; the web preview needs one", _describe(entry))
                continue
            name = name.strip().removeprefix("@")
            key = channel_key(username=name)
            interval = None if isinstance(entry, str) else getattr(entry, "interval", None)
            backfill = 0 if isinstance(entry, str) else int(getattr(entry, "backfill", 0) or 0)
            watch = self._watches.get(key) or watches.get(key)
            if watch is None:
                watch = _Watch(name=name, key=key, interval=interval, backfill=backfill, due=time.monotonic())
                if self.health is not None:
                    self.health.watch(key, SOURCE)
            else:
                watch.interval, watch.backfill = interval, backfill
                if watch.parked:
                    watch.parked, watch.due = False, time.monotonic()
            watches[key] = watch
        for gone in self._watches.keys() - watches.keys():
            self._state.pop(gone, None)
            if self.health is not None:
                self.health.forget(gone)
        self._watches = watches
        self._wake.set()

    def interval(self, key: str) -> float:
        """Seconds between polls of a channel, before jitter: its own, stretched to fit the global cap."""
        watch = self._watches[key]
        own = watch.interval if watch.interval is not None else self.settings.web_interval
        return max(own, len(self._watches) * self._spacing)

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll every watched channel when it is due, until cancelled. Never raises for a failed poll."""
        log.info(
            "web: watching %d channel(s) through %s/s/ (at most %d requests/min)",
            len(self._watches),
            self._safe_base,
            self.settings.web_rpm,
        )
        while True:
            self._wake.clear()
            active = (w for w in self._watches.values() if not w.parked)
            watch = min(active, key=lambda w: w.due, default=None)
            if watch is None:
                await self._wake.wait()
                continue
            delay = watch.due - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):  # woken early by `update`, or due now
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            await self._scheduled_poll(watch)

    async def _scheduled_poll(self, watch: _Watch) -> None:
        interval = self.interval(watch.key) if watch.key in self._watches else self.settings.web_interval
        try:
            result, baseline, cursor = await self._poll(watch.name)
        except NotPublic as exc:
            watch.parked = True
            log.info("web %s: not polled again until the rules are reloaded", watch.key)
            if self.health is not None:
                await self.health.report(self._ops, watch.key, "not_public", str(exc))
            else:
                await tell(self._ops, f"{SOURCE}.not_public", f"{watch.key}: {exc}")
        except RateLimited as exc:
            wait = exc.retry_after or 0.0
            self._pacer.hold(wait)
            if self.health is not None and wait:
                self.health.flood_wait(wait, watch.key)
            self._failed(watch, interval, str(exc), at_least=wait)
        except Exception as exc:  # a poll must never stop the others: record it and back off
            self._failed(watch, interval, _describe_error(exc, self.base, self._safe_base))
        else:
            watch.failures = 0
            watch.due = time.monotonic() + interval * self._rng.uniform(*_JITTER)
            state = self._state.get(watch.key)
            if state is not None and not state.announced:
                state.announced = True
                log.info("%s", _first_poll_line(watch.key, interval, result, baseline, cursor))

    def _failed(self, watch: _Watch, interval: float, reason: str, at_least: float = 0.0) -> None:
        watch.failures += 1
        # Twice the interval after the first failure, doubling to the cap.
        wait = backoff.Backoff(2 * interval, max(_BACKOFF_CAP, interval), _JITTER, self._rng)
        delay = max(wait.delay(watch.failures), at_least)
        watch.due = time.monotonic() + delay
        log.warning("web %s: poll failed (%s); retrying in %.1fs", watch.key, reason, delay)
        if self.health is not None:
            self.health.swept(watch.key, ok=False, error=reason)

    # -- one poll ----------------------------------------------------------------------------------

    async def poll_once(self, channel: Any) -> IngestResult:
        """Fetch a channel's page (and older pages when catching up) and ingest what is new.

        Raises `WebError` for a failed fetch (`NotPublic` for a name t.me redirects)."""
        return (await self._poll(channel))[0]

    async def _poll(self, channel: Any) -> tuple[IngestResult, bool, int | None]:
        """`poll_once`, also saying whether this poll was the channel's starting point, and the cursor."""
        name = (channel if isinstance(channel, str) else channel.name).strip().removeprefix("@")
        key = channel_key(username=name)
        watch = self._watches.get(key)
        backfill = watch.backfill if watch is not None else int(getattr(channel, "backfill", 0) or 0)
        state = self._state.setdefault(key, _State())

        page = await self._fetch(name)
        cursor = await self.sink.cursor(page.channel)
        baseline = cursor is None and not state.started
        if baseline:
            pages, gap = await self._follow(name, page, want=backfill)
            items = [p for pg in pages for p in pg.posts]
            for item in items:
                item.alert = False  # the starting point: stored and matched, never alerted
            recovered = 0
        else:
            floor = cursor or 0
            pages, gap = await self._follow(name, page, floor=floor)
            items = self._fresh(state, pages, floor)
            recovered = sum(1 for pg in pages[1:] for p in pg.posts if p.message_id > floor)
            if gap:
                newest_missing = min(p.message_id for pg in pages for p in pg.posts) - 1
                log.warning(
                    "web %s: catch-up stopped after %d pages; up to %d posts (ids %d..%d) were not fetched",
                    key,
                    len(pages),
                    gap,
                    floor + 1,
                    newest_missing,
                )
                metrics.GAPS.labels(key).inc()

        result = await self.sink.ingest(items) if items else IngestResult()
        # Only once the sink has the posts: a failed ingest must leave the next poll the same work.
        state.started = True
        state.seen = {p.message_id: p.revision for pg in pages for p in pg.posts}
        if recovered:
            metrics.POSTS_RECOVERED.labels(key).inc(recovered)
        if self.health is not None:
            self.health.swept(key, ok=True, gap=gap)
            self.health.posted(key, max((p.date for p in items if p.date), default=None))
        return result, baseline, cursor

    async def _follow(
        self, name: str, page: Page, *, floor: int | None = None, want: int = 0
    ) -> tuple[list[Page], int]:
        """Pages from `page` back through "load more": to the post after `floor` (a catch-up), or
        until `want` posts are read (a new channel's backfill); never more than `web_max_pages`.

        Returns the pages and the gap: 0, or for a catch-up cut short, how many ids lie between the
        floor and the oldest post reached (an upper bound on the posts missed)."""
        pages = [page]

        def enough() -> bool:
            if floor is None:
                return sum(len(p.posts) for p in pages) >= want
            return min(p.message_id for p in pages[-1].posts) <= floor + 1

        while pages[-1].posts and pages[-1].before is not None and not enough():
            if len(pages) >= self.settings.web_max_pages:
                oldest = min(p.message_id for p in pages[-1].posts)
                return pages, (oldest - floor - 1 if floor is not None else 0)
            older = await self._fetch(name, before=pages[-1].before)
            if not older.posts:
                break
            pages.append(older)
        return pages, 0

    def _fresh(self, state: _State, pages: list[Page], cursor: int) -> list[Incoming]:
        """Posts newer than the cursor, and older ones whose content changed since the last poll (edits)."""
        out: dict[int, Incoming] = {}
        for page in pages:
            for post in page.posts:
                known = state.seen.get(post.message_id)
                edited = known is not None and known.edited(post.revision)
                if post.message_id not in out and (post.message_id > cursor or edited):
                    out[post.message_id] = post
        return [out[i] for i in sorted(out)]

    async def _fetch(self, name: str, before: int | None = None) -> Page:
        await self._pacer.acquire()
        try:
            resp = await self.client.get(
                f"{self.base}/s/{name}",
                params={"before": before} if before is not None else None,
                headers={"User-Agent": USER_AGENT, "Accept": "text/html"},
                follow_redirects=False,
            )
        except httpx.TransportError as exc:
            reason = _describe_error(exc, self.base, self._safe_base)
            if self.health is not None:
                self.health.set_connected(SOURCE, False, reason)
            raise WebError(reason) from None
        if self.health is not None:
            self.health.set_connected(SOURCE, True)  # t.me answered, whatever it said
        if resp.status_code == 429:
            raise RateLimited(backoff.retry_after(resp.headers.get("Retry-After")))
        if resp.is_redirect:
            # t.me sends a name that is no public channel to its contact page
            raise NotPublic(
                f"not a public channel: {self._safe_base}/s/{name} redirects (HTTP {resp.status_code}); "
                "is the name right, and is the channel public?"
            )
        if resp.status_code != 200:
            raise WebError(f"HTTP {resp.status_code}")
        try:
            return parse_page(resp.text, username=name)
        except NotAChannelPage as exc:
            raise WebError(str(exc)) from None


# --- helpers ---------------------------------------------------------------------------------------


def _first_poll_line(
    key: str, interval: float, result: IngestResult, baseline: bool, cursor: int | None
) -> str:
    """What a channel's first successful poll did, said once: the sign that it is being watched."""
    head = f"{key}: web preview every {interval:g}s"
    if baseline:
        n = result.new
        return f"{head}; {n} post{'' if n == 1 else 's'} stored as the starting point, not alerted"
    n = result.new
    return f"{head}; resuming after message {cursor}, {n} new post{'' if n == 1 else 's'} since"


def _describe_error(exc: BaseException, base: str, safe_base: str) -> str:
    text = first_line(exc).replace(base, safe_base)
    if isinstance(exc, WebError) or text == type(exc).__name__:
        return text
    return f"{type(exc).__name__}: {text}"


def _describe(entry: Any) -> str:
    key = getattr(entry, "key", None)
    return str(key) if key is not None else repr(entry)
