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
we are. Channels are polled concurrently, each at most one poll at a time, all through that one
pacer: the cap is the pacer's, and a channel whose page hangs holds only itself up.

Bad input costs one post, never the channel: a message the page parser cannot read, an id the store
cannot hold (beyond int64) or one wildly out of sequence (far above the page's other ids and the
cursor: a hostile page's way to push the cursor past every post to come) is rejected through the
sink (logged, counted, kept in `rejected_posts`), and the rest of the page is taken. An unreadable
post with a sound id moves the cursor past it, so catch-up does not stop at it on every poll; an
out-of-range or out-of-sequence id never moves it. What is passed over as expected (ids at or below
the cursor that the last poll did not show, duplicate ids, empty pages) is counted in
tgsentinel_posts_dropped_total and logged at debug level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from bot import __version__, backoff, metrics
from bot.channel import key as channel_key
from bot.errors import first_line
from bot.health import Health, Ops, tell
from bot.pacer import Pacer
from bot.redact import endpoint
from bot.settings import Settings
from bot.sources.model import (
    MAX_MESSAGE_ID,
    Incoming,
    IngestResult,
    Rejected,
    Revision,
    Sink,
    StoreUnavailable,
)
from bot.sources.webpage import NotAChannelPage, Page, parse_page

log = logging.getLogger(__name__)

# Honest: says what we are, so t.me's operators can tell a monitor from a browser.
USER_AGENT = f"tgsentinel/{__version__} (public channel monitor; polls t.me/s previews)"

SOURCE = "web"
_BACKOFF_CAP = 900.0  # seconds: the longest an erroring channel waits between tries
_JITTER = (0.85, 1.15)
# How far above the middle of a page's ids (and the cursor) a post's id may lie. A page shows the
# ~20 newest posts, whose ids run nearly consecutively (deleted posts leave gaps); an id further
# ahead would move the cursor past every post until the channel caught up with it.
MAX_AHEAD = 10_000


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
    rejected: set[tuple[str, str]] = field(default_factory=set)  # (ref, reason) rejected, last pages read


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
        self._held_until = 0.0  # monotonic: a 429's Retry-After, for requests already given a slot
        self._watches: dict[str, _Watch] = {}
        self._state: dict[str, _State] = {}
        self._polls: dict[str, asyncio.Task[None]] = {}  # channel key -> its poll in flight
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
            poll = self._polls.pop(gone, None)
            if poll is not None:
                poll.cancel()
            if self.health is not None:
                self.health.forget(gone, SOURCE)
        self._watches = watches
        self._wake.set()

    def interval(self, key: str) -> float:
        """Seconds between polls of a channel, before jitter: its own, stretched to fit the global cap."""
        watch = self._watches[key]
        own = watch.interval if watch.interval is not None else self.settings.web_interval
        return max(own, len(self._watches) * self._spacing)

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll every watched channel when it is due, until cancelled. Never raises for a failed poll.

        Each due channel's poll runs as a task of its own, so one that hangs until its timeout delays
        no other; the pacer, shared by all of them, keeps the global cap."""
        log.info(
            "web: watching %d channel(s) through %s/s/ (at most %d requests/min)",
            len(self._watches),
            self._safe_base,
            self.settings.web_rpm,
        )
        try:
            while True:
                self._wake.clear()
                now = time.monotonic()
                idle = [w for w in self._watches.values() if not w.parked and w.key not in self._polls]
                for watch in idle:
                    if watch.due <= now:
                        self._start(watch)
                later = [w.due for w in idle if w.due > now]
                # Woken early by `update` or by a poll ending (which sets its channel's next due time).
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
                # arrives as the event is set, and a poll ending sets it often.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(later) - now if later else None):
                        await self._wake.wait()
        finally:
            polls = list(self._polls.values())
            self._polls.clear()
            for poll in polls:
                poll.cancel()
            await asyncio.gather(*polls, return_exceptions=True)

    def _start(self, watch: _Watch) -> None:
        poll = asyncio.create_task(self._scheduled_poll(watch), name=f"web poll {watch.key}")
        self._polls[watch.key] = poll

        def ended(task: asyncio.Task[None]) -> None:
            if self._polls.get(watch.key) is task:
                del self._polls[watch.key]
            self._wake.set()

        poll.add_done_callback(ended)

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
            self._held_until = max(self._held_until, time.monotonic() + wait)
            if self.health is not None and wait:
                self.health.flood_wait(wait, watch.key)
            self._failed(watch, interval, str(exc), at_least=wait)
        except StoreUnavailable as exc:
            # t.me answered; the store did not. The channel is not failing and is not backed off:
            # nothing moved its cursor, so the next poll, at its interval, takes the same posts.
            watch.due = time.monotonic() + interval
            log.debug("web %s: poll not stored, the store is unavailable (%s)", watch.key, exc)
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
        screen = _Screen(key, cursor)
        page = screen(page)
        if baseline:
            pages, gap = await self._follow(name, page, screen, want=backfill)
            items = screen.unique(pages)
            for item in items:
                item.alert = False  # the starting point: stored and matched, never alerted
            recovered = 0
        else:
            floor = cursor or 0
            pages, gap = await self._follow(name, page, screen, floor=floor)
            items = screen.fresh(state, pages, floor)
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
        # Only once the sink has the posts: a failed ingest must leave the next poll the same work, and
        # a rejection that moves the cursor must not move it past posts not yet stored.
        rejected = [r for r in screen.rejected if (r.ref, r.reason) not in state.rejected]
        if rejected:
            await self.sink.reject(rejected)
        state.started = True
        state.seen = {p.message_id: p.revision for pg in pages for p in pg.posts}
        state.rejected = {(r.ref, r.reason) for r in screen.rejected}
        screen.told()
        if recovered:
            metrics.POSTS_RECOVERED.labels(key).inc(recovered)
        if self.health is not None:
            self.health.swept(key, ok=True, gap=gap)
            self.health.posted(key, max((p.date for p in items if p.date), default=None))
        return result, baseline, cursor

    async def _follow(
        self, name: str, page: Page, screen: _Screen, *, floor: int | None = None, want: int = 0
    ) -> tuple[list[Page], int]:
        """Pages from `page` back through "load more": to the post after `floor` (a catch-up), or
        until `want` posts are read (a new channel's backfill); never more than `web_max_pages`.
        Each older page goes through `screen` as it arrives, as `page` did.

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
            older = screen(await self._fetch(name, before=pages[-1].before))
            if not older.posts:
                break
            pages.append(older)
        return pages, 0

    async def _fetch(self, name: str, before: int | None = None) -> Page:
        await self._pacer.acquire()
        while time.monotonic() < self._held_until:  # a 429 came while this one waited for its slot
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


# --- what a poll takes from its pages ---------------------------------------------------------------


def id_problems(ids: Iterable[int], cursor: int | None) -> dict[int, str]:
    """The ids among one page's that must not be taken, with why: "id_range" for one the store cannot
    hold, "out_of_sequence" for one more than MAX_AHEAD above the page's middle id (the cursor counted
    among the page's ids, so a page of one absurd post cannot vouch for itself)."""
    problems = {i: "id_range" for i in set(ids) if not 0 < i <= MAX_MESSAGE_ID}
    sound = sorted(i for i in set(ids) if i not in problems)
    samples = sorted(sound + ([cursor] if cursor is not None else []))
    if samples:
        # The lower median: a hostile minority of ids, however high, cannot move it.
        middle = samples[(len(samples) - 1) // 2]
        problems.update({i: "out_of_sequence" for i in sound if i > middle + MAX_AHEAD})
    return problems


class _Screen:
    """One poll's judgement of its pages: the posts it may take, the rejected, the dropped."""

    def __init__(self, key: str, cursor: int | None) -> None:
        self.key = key
        self.cursor = cursor
        self.rejected: list[Rejected] = []
        self.dropped: Counter[str] = Counter()
        self._dropped_ids: dict[str, list[int]] = {}

    def __call__(self, page: Page) -> Page:
        """The page without the posts whose ids must not be taken; those, and the page's unreadable
        posts, are noted as rejected."""
        if not page.posts and not page.rejected:
            self.drop("empty_page", [])
        sound = [r.message_id for r in page.rejected if r.message_id is not None]
        problems = id_problems([p.message_id for p in page.posts] + sound, self.cursor)
        for r in page.rejected:
            if r.message_id is not None and r.message_id in problems:
                r = replace(r, message_id=None)  # an unreadable post with a bad id: never the cursor's
            elif r.message_id is not None and self.cursor is not None and r.message_id <= self.cursor:
                continue  # the cursor is past it already: recorded when it was
            self.rejected.append(r)
        kept = []
        for post in page.posts:
            reason = problems.get(post.message_id)
            if reason is None:
                kept.append(post)
                continue
            detail = f"id {post.message_id} " + (
                f"is beyond {MAX_MESSAGE_ID}, the highest the store holds"
                if reason == "id_range"
                else f"is more than {MAX_AHEAD} above the page's other ids and the cursor ({self.cursor})"
            )
            self.rejected.append(Rejected(page.channel, str(post.message_id), reason, detail))
        return replace(page, posts=kept, rejected=[])

    def unique(self, pages: list[Page]) -> list[Incoming]:
        """Every post of the pages, each id once, oldest first (a new channel's starting point)."""
        out: dict[int, Incoming] = {}
        for page in pages:
            for post in page.posts:
                if post.message_id in out:
                    self.drop("duplicate", [post.message_id])
                else:
                    out[post.message_id] = post
        return [out[i] for i in sorted(out)]

    def fresh(self, state: _State, pages: list[Page], cursor: int) -> list[Incoming]:
        """Posts newer than the cursor, and older ones whose content changed since the last poll (edits).

        An older id the last poll did not show is dropped, counted: it went backwards, or the poll
        before was another process's."""
        out: dict[int, Incoming] = {}
        read: set[int] = set()
        for page in pages:
            for post in page.posts:
                known = state.seen.get(post.message_id)
                edited = known is not None and known.edited(post.revision)
                if post.message_id in read:
                    self.drop("duplicate", [post.message_id])
                    continue
                read.add(post.message_id)
                if post.message_id > cursor or edited:
                    out[post.message_id] = post
                elif known is None:
                    self.drop("behind_cursor", [post.message_id])
        return [out[i] for i in sorted(out)]

    def drop(self, reason: str, ids: list[int]) -> None:
        self.dropped[reason] += 1 if not ids else len(ids)
        self._dropped_ids.setdefault(reason, []).extend(ids)

    def told(self) -> None:
        """Count and log what was dropped, once the poll has done its work."""
        for reason, n in self.dropped.items():
            metrics.POSTS_DROPPED.labels(reason).inc(n)
            ids = self._dropped_ids.get(reason) or []
            shown = f": ids {', '.join(map(str, ids[:10]))}{' ...' if len(ids) > 10 else ''}" if ids else ""
            log.debug("web %s: dropped %d (%s, cursor %s)%s", self.key, n, reason, self.cursor, shown)


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
