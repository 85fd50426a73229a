"""What `/healthz` reports: per source, whether it reaches its service; per channel, whether it is up
to date; and which channels cannot be watched at all.

The rules (README, "Operations"):

- A channel is *up to date* once a poll or sweep of it succeeded since the process started, for as
  long as its last success is within the lag threshold, with no gap a catch-up could not close and no
  problem. Its state is one of:
  - `starting`: not tried yet;
  - `ok`: up to date, and its last try succeeded;
  - `retrying`: up to date, but its last try failed (a transient error, within the lag threshold);
  - `failing`: nothing succeeded since start, and its last try failed (or its source could not connect);
  - `lagging`: its last success is older than the lag threshold;
  - `gap`: a catch-up stopped short, posts may be missing;
  - `problem`: it cannot be watched (no such channel, not public, private), reported once.
- `healthy` (HTTP 200) when every channel is `ok` or `retrying`; otherwise 503, with `status`
  `starting` when only channels not tried yet stand in the way, else `unhealthy`.
- Each source says whether it is connected: the web source when its last request reached t.me, the
  Telegram source when its client is connected. A channel's lag is measured from its last success,
  not its last post, so quiet channels stay healthy.
- A source failing (a channel failing, or the source disconnected) for longer than the outage notice
  time is one ops notice, and its recovery one more (`outages`).
- The store is unhealthy after `store_failures` consecutive failed pieces of work that say it is
  unavailable (server gone, disk full, read-only), and healthy again at the first success. A store
  outage is not a channel's failure. An outage longer than the notice time is told to ops on
  recovery: the notice has to be stored, so it cannot go out before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot import metrics
from bot.errors import first_line

log = logging.getLogger(__name__)

Ops = Callable[[str, str], Awaitable[None]]
"""How a source tells the ops destination something: `await ops(kind, summary)` (`Pipeline.ops`)."""

STARTING, OK, RETRYING, FAILING, LAGGING, GAP, PROBLEM = (
    "starting",
    "ok",
    "retrying",
    "failing",
    "lagging",
    "gap",
    "problem",
)
UP_TO_DATE = frozenset({OK, RETRYING})


@dataclass(slots=True)
class ChannelHealth:
    source: str
    last_post: datetime | None = None
    last_sweep: float | None = None  # wall clock of the last successful poll or sweep
    last_attempt: float | None = None  # wall clock of the last try, successful or not
    last_error: str | None = None  # of the last try; None when it succeeded
    failing_since: float | None = None  # the first failed try since the last success
    flood_wait_until: float | None = None
    gap: int = 0  # posts a catch-up could not reach
    problem: str | None = None  # "FILE:LINE: why it cannot be watched"
    problem_kind: str | None = None  # not_public, not_found, private, not_a_channel, unknown_id


@dataclass(slots=True)
class SourceHealth:
    connected: bool | None = None  # None: it has not tried yet
    since: float | None = None  # when `connected` last changed
    last_error: str | None = None  # why it is not connected
    outage_since: float | None = None  # set while an outage notice stands unanswered by a recovery


@dataclass(slots=True)
class StoreHealth:
    threshold: int = 3
    failures: int = 0  # in a row
    failing_since: float | None = None
    last_error: str | None = None
    noted: bool = False  # the outage lasted past the notice time: its recovery is told

    def result(self, exc: BaseException | None) -> None:
        """How one piece of store work went (`bot.store.db.observe`): None, or the outage."""
        if exc is None:
            if self.failures:
                log.info("store available again after %d failed tries", self.failures)
                self.failures = 0
                metrics.STORE_FAILURES.set(0)
            return
        self.failures += 1
        self.last_error = first_line(exc)
        if self.failures == 1:
            log.warning("store unavailable (%s); work waits for it and retries", self.last_error)
        if self.failing_since is None:
            self.failing_since = time.time()
        metrics.STORE_FAILURES.set(self.failures)

    @property
    def down(self) -> bool:
        return self.failures >= self.threshold


@dataclass(frozen=True, slots=True)
class Notice:
    """An ops notice about a source: `outage` or `recovered`."""

    source: str
    kind: str
    text: str


class Health:
    def __init__(self, lag_threshold: float, store_failures: int = 3) -> None:
        self.lag_threshold = lag_threshold
        self.store = StoreHealth(threshold=store_failures)
        self.started = time.time()
        self.channels: dict[str, ChannelHealth] = {}
        self.sources: dict[str, SourceHealth] = {}
        self.flood_wait_until: float | None = None
        # channel key -> "FILE:LINE" of the rules that list it (Config.listed_at), for problems
        self.listed_at: dict[str, str] = {}
        # Scale-out on PostgreSQL: who holds which channel, and each worker's heartbeat.
        self.leases: Callable[[], dict[str, Any]] | None = None

    # -- what sources tell -------------------------------------------------------------------------

    def source(self, name: str) -> SourceHealth:
        return self.sources.setdefault(name, SourceHealth())

    def set_connected(self, source: str, connected: bool, error: str | None = None) -> None:
        s = self.source(source)
        if s.connected is not connected:
            s.connected, s.since = connected, time.time()
            metrics.SOURCE_CONNECTED.labels(source).set(1 if connected else 0)
        s.last_error = None if connected else error

    @property
    def connected(self) -> bool | None:
        """False when any source is disconnected, True when every one that tried is, None before any try."""
        known = [s.connected for s in self.sources.values() if s.connected is not None]
        return all(known) if known else None

    def watch(self, channel: str, source: str) -> None:
        self.source(source)
        # A channel moving to another source (account, or the web preview) keeps its history.
        self.channels.setdefault(channel, ChannelHealth(source=source)).source = source

    def forget(self, channel: str, source: str | None = None) -> None:
        """The channel is no longer watched (by `source`: not when another source has it now)."""
        ch = self.channels.get(channel)
        if ch is not None and (source is None or ch.source == source):
            del self.channels[channel]
            self._drop_problem(channel, ch)

    def swept(self, channel: str, ok: bool = True, error: str | None = None, gap: int = 0) -> None:
        """A poll or sweep of the channel ended: successfully, or failing with `error` (transient)."""
        ch = self.channels.setdefault(channel, ChannelHealth(source="?"))
        stamp = time.time()
        ch.last_attempt = stamp
        if ok:
            ch.last_sweep = stamp
            ch.last_error = None
            ch.failing_since = None
            ch.gap = gap
            self._drop_problem(channel, ch)
        else:
            ch.last_error = error or "failed"
            if ch.failing_since is None and ch.problem is None:
                ch.failing_since = stamp

    def problem(self, channel: str, kind: str, message: str) -> str | None:
        """The channel cannot be watched until the rules change. Returns the line to report, naming
        the rules file and line that list the channel, the first time; None when already reported."""
        ch = self.channels.setdefault(channel, ChannelHealth(source="?"))
        where = self.listed_at.get(channel)
        text = f"{where}: {message}" if where else message
        new = ch.problem_kind != kind
        if new and ch.problem_kind is not None:
            metrics.CHANNEL_PROBLEMS.remove(channel, ch.problem_kind)
        ch.problem, ch.problem_kind = text, kind
        ch.last_attempt = time.time()
        ch.last_error = message
        ch.failing_since = None  # not an outage: retrying cannot help
        metrics.CHANNEL_PROBLEMS.labels(channel, kind).set(1)
        return text if new else None

    async def report(self, ops: Ops | None, channel: str, kind: str, message: str) -> None:
        """A channel that cannot be watched: in health and metrics, and told to ops once."""
        line = self.problem(channel, kind, message)
        if line is None:
            return
        source = self.channels[channel].source
        if ops is None:
            log.warning("%s", line)
        else:
            await tell(ops, f"{source}.{kind}", line)

    def _drop_problem(self, channel: str, ch: ChannelHealth) -> None:
        if ch.problem_kind is not None:
            metrics.CHANNEL_PROBLEMS.remove(channel, ch.problem_kind)
        ch.problem = ch.problem_kind = None

    def posted(self, channel: str, date: datetime | None) -> None:
        ch = self.channels.get(channel)
        if ch is not None and date is not None and (ch.last_post is None or date > ch.last_post):
            ch.last_post = date

    def flood_wait(self, seconds: float, channel: str | None = None) -> None:
        until = time.time() + seconds
        self.flood_wait_until = until
        if channel in self.channels:
            self.channels[channel].flood_wait_until = until

    # -- the verdict -------------------------------------------------------------------------------

    def lag(self, channel: str, now: float | None = None) -> float:
        now = time.time() if now is None else now
        ch = self.channels[channel]
        return now - (ch.last_sweep if ch.last_sweep is not None else self.started)

    def state(self, channel: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        ch = self.channels[channel]
        if ch.problem is not None:
            return PROBLEM
        if ch.last_sweep is None:
            if ch.last_attempt is not None or self.sources.get(ch.source, SourceHealth()).connected is False:
                return FAILING
            return STARTING
        if ch.gap:
            return GAP
        if now - ch.last_sweep > self.lag_threshold:
            return LAGGING
        return RETRYING if ch.last_error else OK

    def healthy(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return not self.store.down and all(self.state(name, now) in UP_TO_DATE for name in self.channels)

    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.store.down:
            return "unhealthy"
        states = {self.state(name, now) for name in self.channels}
        if states <= UP_TO_DATE:
            return "ok"
        return "starting" if states - UP_TO_DATE == {STARTING} else "unhealthy"

    def up_to_date(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return sum(self.state(name, now) in UP_TO_DATE for name in self.channels)

    def troubles(self, now: float | None = None) -> list[str]:
        """One phrase per channel that is not up to date, for a log line."""
        now = time.time() if now is None else now
        out = []
        for name, ch in sorted(self.channels.items()):
            state = self.state(name, now)
            if state in UP_TO_DATE:
                continue
            why = ch.problem or ch.last_error or self._source_error(ch.source)
            out.append(f"{name} ({state}{': ' + why if why and state != STARTING else ''})")
        if self.store.down:
            out.insert(0, f"store (unavailable: {self.store.last_error})")
        return out

    def _source_error(self, source: str) -> str | None:
        s = self.sources.get(source)
        return s.last_error if s is not None and s.connected is False else None

    # -- outages -----------------------------------------------------------------------------------

    def failing_since(self, source: str) -> float | None:
        """Since when the source has been failing: a channel of it failing, or the source disconnected."""
        times = [
            ch.failing_since
            for ch in self.channels.values()
            if ch.source == source and ch.failing_since is not None
        ]
        s = self.sources.get(source)
        if s is not None and s.connected is False and s.since is not None:
            times.append(s.since)
        return min(times, default=None)

    def outages(self, after: float, now: float | None = None) -> list[Notice]:
        """The notices due now: a source failing for `after` seconds (once), and its recovery (once)."""
        now = time.time() if now is None else now
        out: list[Notice] = []
        for name, s in sorted(self.sources.items()):
            since = self.failing_since(name)
            if since is not None and s.outage_since is None and now - since >= after:
                s.outage_since = since
                out.append(Notice(name, "outage", self._outage_text(name, since, now)))
            elif since is None and s.outage_since is not None:
                text = (
                    f"{name} source recovered after {span(now - s.outage_since)} "
                    f"(failing since {clock(s.outage_since)})"
                )
                s.outage_since = None
                out.append(Notice(name, "recovered", text))
        st = self.store
        if st.failures and st.failing_since is not None and now - st.failing_since >= after:
            st.noted = True
        elif not st.failures and st.failing_since is not None:
            if st.noted:
                text = (
                    f"store was unavailable for {span(now - st.failing_since)} "
                    f"(since {clock(st.failing_since)}): {st.last_error}"
                )
                out.append(Notice("store", "recovered", text))
            st.failing_since, st.noted = None, False
        return out

    def _outage_text(self, source: str, since: float, now: float) -> str:
        s = self.sources[source]
        mine = sorted((k, ch) for k, ch in self.channels.items() if ch.source == source)
        failing = [(k, ch) for k, ch in mine if ch.failing_since is not None or ch.last_sweep is None]
        failing = [(k, ch) for k, ch in failing if ch.problem is None]
        head = f"{source} source failing for {span(now - since)} (since {clock(since)})"
        parts = []
        if s.connected is False:
            parts.append(f"cannot reach its service: {s.last_error}" if s.last_error else "not connected")
        if failing:
            shown = "; ".join(f"{k}: {ch.last_error or 'not tried yet'}" for k, ch in failing[:5])
            more = f" and {len(failing) - 5} more" if len(failing) > 5 else ""
            parts.append(f"{len(failing)} of {len(mine)} channel(s) not updated: {shown}{more}")
        return head + (": " + ", ".join(parts) if parts else "")

    # -- the answer --------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        return {
            "healthy": self.healthy(now),
            "status": self.status(now),
            "connected": self.connected,
            "started": _iso(self.started),
            "lag_threshold": self.lag_threshold,
            "flood_wait_remaining": max(0.0, (self.flood_wait_until or 0) - now),
            "store": {
                "available": not self.store.failures,
                "consecutive_failures": self.store.failures,
                "failing_since": _iso(self.store.failing_since) if self.store.failures else None,
                "last_error": self.store.last_error if self.store.failures else None,
            },
            "sources": {
                name: {
                    "connected": s.connected,
                    "since": _iso(s.since),
                    "last_error": s.last_error,
                    "failing_since": _iso(self.failing_since(name)),
                    "channels": sum(1 for ch in self.channels.values() if ch.source == name),
                }
                for name, s in sorted(self.sources.items())
            },
            "channels": {
                name: {
                    "source": ch.source,
                    "state": self.state(name, now),
                    "last_post": ch.last_post.isoformat() if ch.last_post else None,
                    "lag_seconds": round(self.lag(name, now), 1),
                    "last_sweep": _iso(ch.last_sweep),
                    "last_attempt": _iso(ch.last_attempt),
                    "last_error": ch.last_error,
                    "failing_since": _iso(ch.failing_since),
                    "problem": ch.problem,
                    "gap": ch.gap,
                    "flood_wait_remaining": max(0.0, (ch.flood_wait_until or 0) - now),
                }
                for name, ch in self.channels.items()
            },
            **({"leases": self.leases()} if self.leases is not None else {}),
        }


async def tell(ops: Ops | None, kind: str, text: str) -> None:
    """An ops notice that never raises: a failure to queue it is logged, the caller carries on."""
    if ops is None:
        return
    try:
        await ops(kind, text)
    except Exception as exc:
        # Most often the store is down, and the notice cannot be queued: one line, not a traceback.
        log.warning("ops notice not sent (%s: %s): %s", type(exc).__name__, first_line(exc), text)


def _iso(stamp: float | None) -> str | None:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds") if stamp is not None else None


def clock(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%H:%M:%S UTC")


def span(seconds: float) -> str:
    """A duration for a person: 45s, 18m, 2h 5m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        m, s = divmod(seconds, 60)
        return f"{m}m {s}s" if s and m < 10 else f"{m}m"
    h, rest = divmod(seconds, 3600)
    return f"{h}h {rest // 60}m" if rest >= 60 else f"{h}h"
