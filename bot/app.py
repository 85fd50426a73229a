"""The process: the pipeline wired to its delivery worker, and the monitor's lifecycle (`run`).

What happens to a post is in `bot.pipeline`; here are only the parts that live as long as the
process: the HTTP pool, the senders, the worker, the scheduler, the sources, the health server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot.alerts.model import Sender
from bot.alerts.outbox import ops_notice, release_held
from bot.alerts.senders import build_sender
from bot.alerts.worker import RetryPolicy, Worker, counts
from bot.backoff import Backoff
from bot.config import ChannelEntry
from bot.config.ruleset import RuleSet
from bot.database_url import parse
from bot.errors import InputError, first_line
from bot.pipeline.compose import PRUNED, Windows
from bot.pipeline.ingest import Ingest
from bot.pipeline.match import Matcher
from bot.rules.engine import Limits
from bot.settings import Settings
from bot.store.db import is_outage, observe, release, run_sync
from bot.store.keeper import LeaseKeeper, me
from bot.store.migrate import open_store

if TYPE_CHECKING:
    from bot.sources.telegram import ChannelEntryLike
    from bot.web.server import Served

log = logging.getLogger("tgsentinel")


def http_client() -> httpx.AsyncClient:
    """The one HTTP client of the process (senders and the web source share its pool).

    TCP_NODELAY: httpx writes a request's headers and body separately, and Nagle's algorithm meeting
    the receiver's delayed ACK adds 40 ms to every alert otherwise.
    """
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False, transport=transport)


class Pipeline:
    """The pipeline (`bot.pipeline`: normalise, store, match, alert filters, fan-out) and the delivery
    worker it feeds, with the senders and the rule set in force."""

    def __init__(
        self,
        settings: Settings,
        store: Engine,
        rules: RuleSet,
        *,
        console: TextIO | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.console = console or sys.stdout
        self.rules = rules
        self.client = http_client()
        self.senders: dict[str, Sender] = {}
        self._destinations: dict[str, Any] = dict(rules.config.destinations)
        self.senders.update(self._build_senders(rules))
        self.worker = Worker(
            store,
            self.senders,
            retry=RetryPolicy(
                settings.retry_base, settings.retry_cap, settings.max_attempts, settings.max_age
            ),
            lease=settings.lease,
            poll_interval=settings.poll_interval,
            ops_destination=self.ops_destination,
        )
        self.ingest = Ingest(
            store,
            rules=lambda: self.rules,
            windows=Windows.of(settings),
            on_commit=self.worker.wake,
            matcher=Matcher(
                Limits(
                    post=settings.match_post_budget,
                    batch=settings.match_batch_budget,
                    disable_after=settings.regex_disable_after,
                ),
                ops=self.ops,
            ),
        )

    @property
    def ops_destination(self) -> str:
        return self.rules.config.ops or self.settings.ops_destination

    def _build_senders(self, rules: RuleSet) -> dict[str, Sender]:
        """Every sender the rules need, built before anything is swapped: a sender that refuses its
        destination must leave the running set whole."""
        # A sender whose destination did not change is kept: it remembers things (a Telegram chat's
        # migration to a supergroup) that a fresh one would have to learn again from a failed send.
        return {
            name: self.senders[name]
            if name in self.senders and self._destinations.get(name) == dest
            else build_sender(dest, self.client, console=self.console)
            for name, dest in rules.config.destinations.items()
        }

    def reload(self, rules: RuleSet) -> None:
        """Put `rules` in force with their senders, or raise and change nothing."""
        fresh = self._build_senders(rules)
        # No await from here on: the worker never sees new rules with old senders, or the reverse.
        self.rules = rules
        self._destinations = dict(rules.config.destinations)
        # In place: the worker holds this mapping.
        self.senders.clear()
        self.senders.update(fresh)
        self.worker.ops_destination = self.ops_destination

    async def ops(self, kind: str, summary: str) -> None:
        """Tell the ops destination about an operational problem (through the outbox)."""
        log.warning("ops: %s", summary)

        def write() -> int:
            with Session(self.store) as session, session.begin():
                return ops_notice(session, self.ops_destination, summary, kind)

        await run_sync(self.store, write)
        self.worker.wake()

    async def release_held(self) -> int:
        def work() -> list[int]:
            with Session(self.store) as session, session.begin():
                return release_held(session)

        ids = await run_sync(self.store, work)
        if ids:
            self.worker.wake()
        return len(ids)

    async def drain(self, since: datetime, timeout: float) -> dict[str, int]:
        """Deliver until nothing created since `since` is pending, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        # The worker's own lanes, as in the monitor: a destination that hangs holds up only itself.
        # A monitor dying for a reason drains with its worker still running: then only watch it.
        lanes = None if self.worker.running else asyncio.create_task(self.worker.run(), name="drain")
        try:
            while True:
                await self.release_held()
                tally = await run_sync(self.store, self._tally, since)
                if (not tally.get("pending") and self.worker.idle) or time.monotonic() >= deadline:
                    return tally
                # The lanes run on their own; this only decides when to stop looking.
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        finally:
            if lanes is not None:
                lanes.cancel()
                await asyncio.gather(lanes, return_exceptions=True)

    def _tally(self, since: datetime) -> dict[str, int]:
        from bot.store.models import Delivery

        with Session(self.store) as session:
            ids = list(session.scalars(select(Delivery.id).where(Delivery.created_at >= since)))
            return counts(session, ids) if ids else {}

    async def aclose(self) -> None:
        await self.client.aclose()


def activity(store: Engine, since: datetime) -> tuple[int, int]:
    """Posts stored and alerts sent (ops notices not counted) since `since`, for the heartbeat."""
    from sqlalchemy import func

    from bot.store.models import Alert, Delivery, Message

    with Session(store) as session:
        stored = session.scalar(select(func.count()).select_from(Message).where(Message.created_at >= since))
        sent = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .join(Alert, Alert.id == Delivery.alert_id)
            .where(Delivery.status == "sent", Delivery.sent_at >= since, Alert.kind != "ops")
        )
    return stored or 0, sent or 0


def guarded(job: Callable[[], Awaitable[Any]], name: str) -> Callable[[], Awaitable[None]]:
    """A scheduled job that fails in one log line, not APScheduler's 60-line traceback on every run
    (every 2 s through a database outage).

    A store outage is expected and passes: said once, the job keeps its schedule, so it runs on
    time once the store is back. Anything else is a bug: its traceback once, then runs are skipped
    for a growing backoff.
    """
    wait = Backoff(2.0, 300.0, (0.5, 1.0))
    failures, until = 0, 0.0

    async def run() -> None:
        nonlocal failures, until
        if time.monotonic() < until:
            return
        try:
            await job()
        except Exception as exc:
            failures += 1
            if is_outage(exc):
                if failures == 1:
                    log.warning("%s: store unavailable (%s); retrying on schedule", name, first_line(exc))
                return
            delay = wait.delay(failures)
            until = time.monotonic() + delay
            log.warning(
                "%s: failed (%s); next try in %.0fs", name, first_line(exc), delay, exc_info=failures == 1
            )
            return
        if failures:
            log.info("%s: running again after %d failed tries", name, failures)
            failures = 0

    return run


def telegram_accounts(settings: Settings) -> list[str]:
    """The accounts `run` watches through (none without the API id and hash: the web preview)."""
    if not (settings.api_id and settings.api_hash):
        return []
    from bot.sources.login import accounts

    return accounts(settings)


class Monitor:
    """`tgsentinel run`: sources, pipeline, scheduler, health server; stops cleanly on SIGTERM."""

    def __init__(self, settings: Settings) -> None:
        from bot.config.watch import RulesWatcher
        from bot.health import Health

        self.settings = settings
        self.role = settings.role
        postgres = parse(settings.database_url).get_backend_name() == "postgresql"
        if self.role != "all" and not postgres:
            raise InputError(
                f"--role {self.role} needs PostgreSQL (DATABASE_URL): on SQLite one process runs "
                "everything, with --role all"
            )
        self.watcher = RulesWatcher(settings.rules_dir, on_reload=self._reloaded, on_error=self._refused)
        self.store = open_store(settings.database_url)
        self.pipeline = Pipeline(settings, self.store, self.watcher.current)
        self.health = Health(settings.lag_threshold, settings.store_failures)
        observe(self.store, self.health.store.result)
        self.health.listed_at = dict(self.watcher.current.config.listed_at)
        self._beat_since = datetime.now(UTC)
        self.web: Any = None
        self.telegram: Any = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.scheduler: Any = None
        self.server: Served | None = None
        # Source workers on PostgreSQL share the channels through leases; alone on SQLite, all of them.
        self.sources = self.role in ("all", "source")
        self.delivers = self.role in ("all", "delivery")
        self.keeper: LeaseKeeper | None = None
        self._leasing = self.sources and postgres
        self._rewatch = asyncio.Event()  # the channels held or the accounts changed
        self._watch_lock = asyncio.Lock()

    def _split(self, rules: RuleSet) -> tuple[list[ChannelEntry], list[ChannelEntry]]:
        """Which channels the Telegram source watches and which the web preview watches: of the
        channels this worker holds a lease on, when it shares them."""
        live = self.telegram is not None
        mine = [
            c
            for c in rules.config.channels
            if self.sources and (self.keeper is None or c.key in self.keeper.held)
        ]
        by_web = [c for c in mine if c.via == "web" or not live]
        by_tg = [c for c in mine if live and c.via != "web"]
        return by_tg, by_web

    async def _watch(self, rules: RuleSet) -> None:
        """Hand each source its channels now: the accounts theirs, up to their join budgets, and the
        web preview the rest."""
        by_tg, by_web = self._split(rules)
        if self.telegram is not None:
            try:
                by_web = by_web + await self.telegram.update(by_tg)
            except Exception as exc:
                log.warning("the Telegram source's channels are not all updated: %s", exc)
            by_tg = [c for c in by_tg if c.key in self.telegram.of]
        if self.web is not None:
            self.web.update(by_web)
        self._announce(by_tg, by_web)

    def _leases_changed(self, held: frozenset[str]) -> None:
        self._rewatch.set()  # the lease round goes on: joining channels can take minutes

    async def _account_lost(self, left: list[ChannelEntryLike]) -> None:
        """Past the other accounts' budgets, an account's channels go to the web preview; past this
        worker's capacity, back to the other workers at a lease round now."""
        self._rewatch.set()
        if self.keeper is not None:
            self.keeper.wake()

    async def _watching(self) -> None:
        """Apply what the leases and accounts changed, one `_watch` at a time, from the state now."""
        while True:
            await self._rewatch.wait()
            self._rewatch.clear()
            async with self._watch_lock:
                await self._watch(self.watcher.current)

    def _capacity(self) -> int:
        """Channels this worker may hold: its live accounts' join budgets and what the web preview's
        request budget polls at its interval."""
        web = max(1, int(self.settings.web_rpm * self.settings.web_interval / 60))
        return web + (self.telegram.capacity if self.telegram is not None else 0)

    async def _reloaded(self, rules: RuleSet) -> None:
        """Senders first (they may refuse, and then nothing changed), then rules, then channels.

        Past the swap the new rules are in force whatever happens: a channel the Telegram source
        cannot subscribe to now is its problem to report and retry, not a refused reload."""
        self.pipeline.reload(rules)
        self.health.listed_at = dict(rules.config.listed_at)
        if self.keeper is not None:
            self.keeper.list(c.key for c in rules.config.channels)  # its next round moves the leases
        async with self._watch_lock:
            await self._watch(rules)

    async def _refused(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        summary = f"rules not reloaded, the last good rules keep running: {shown}"
        await self.pipeline.ops("rules.rejected", summary)

    def _announce(self, by_tg: list[ChannelEntry], by_web: list[ChannelEntry]) -> None:
        for label, entries in (("telegram", by_tg), ("web preview", by_web)):
            if entries:
                names = ", ".join(c.key for c in entries)
                log.info("watching via %s: %s", label, names)

    def _http_app(self) -> Any:
        """The probes, and the archive beside them when its sign-in token is set."""
        from starlette.applications import Starlette

        from bot.web import probes

        probe_routes = probes.routes(self.health, self.settings.http_token)
        if not self.settings.web_token:
            return Starlette(routes=probe_routes)
        from bot.web.app import create_app

        return create_app(
            self.store,
            token=self.settings.web_token,
            rules_dir=self.settings.rules_dir,
            health=self.health,
            https=self.settings.web_https,
            extra_routes=probe_routes,
        )

    async def start(self) -> None:
        from bot.sources.web import WebSource
        from bot.web.server import serve

        accounts = telegram_accounts(self.settings) if self.sources else []
        if accounts:
            from bot.sources.accounts import Accounts
            from bot.sources.login import make_client
            from bot.sources.telegram import TelegramSource

            self.telegram = Accounts(
                [
                    TelegramSource(
                        make_client(self.settings, name),
                        self.pipeline.ingest,
                        self.health,
                        self.settings,
                        self.pipeline.ops,
                        account=name,
                    )
                    for name in accounts
                ],
                self.settings.join_budget,
                self.pipeline.ops,
                on_lost=self._account_lost,
            )
        elif self.sources:
            log.info(
                "no Telegram credentials (TELEGRAM_API_ID, TELEGRAM_API_HASH and a session from "
                "`tgsentinel login`): watching every channel through the t.me/s web preview"
            )
        if self.sources:
            self.web = WebSource(
                self.pipeline.ingest, self.pipeline.client, self.settings, self.health, ops=self.pipeline.ops
            )
        if self._leasing:
            keeper = self.keeper = LeaseKeeper(
                self.store,
                me(self.role, self._capacity(), accounts),
                self.settings.channel_lease,
                self._leases_changed,
                capacity=self._capacity,
                accounts=lambda: self.telegram.of if self.telegram is not None else {},
            )
            keeper.list(c.key for c in self.watcher.current.config.channels)
            self.health.leases = lambda: keeper.snapshot
            await keeper.start()  # this worker's share, before any source starts
        self._rewatch.clear()
        async with self._watch_lock:
            await self._watch(self.watcher.current)
        host, port = self.settings.http_host, self.settings.http_port
        try:
            self.server = await serve(self._http_app(), host, port)
        except OSError as exc:
            raise InputError(
                f"cannot serve /healthz on {host}:{port}: {exc.strerror} (set TGSENTINEL_HTTP_PORT)"
            ) from None
        self.scheduler = self._schedule()
        self.scheduler.start()
        self.tasks = [
            asyncio.create_task(self.watcher.run(), name="rules-watch"),
            asyncio.create_task(self._watching(), name="channels"),
        ]
        if self.delivers:
            self.tasks.append(asyncio.create_task(self.pipeline.worker.run(), name="delivery"))
        if self.web is not None:
            self.tasks.append(asyncio.create_task(self.web.run(), name="web-source"))
        if self.keeper is not None:
            self.tasks.append(asyncio.create_task(self.keeper.run(), name="leases"))
        if self.telegram is not None:
            self.tasks.append(asyncio.create_task(self.telegram.run(), name="telegram-source"))

    def _schedule(self) -> Any:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        scheduler = AsyncIOScheduler(timezone="UTC")

        def every(job: Callable[[], Awaitable[Any]], name: str, **trigger: Any) -> None:
            scheduler.add_job(
                guarded(job, name), "interval", id=name, max_instances=1, coalesce=True, **trigger
            )

        if self.delivers:
            every(self.pipeline.release_held, "release-held", seconds=2)
        if self.telegram is not None:
            interval = self.settings.sweep_interval
            every(self.telegram.sweep_all, "sweep", seconds=interval, jitter=max(1, int(interval * 0.1)))
        every(self._housekeeping, "housekeeping", seconds=60)
        every(self._loop_lag, "loop-lag", seconds=1)
        every(self._outages, "outages", seconds=1)
        if self.settings.heartbeat:
            every(self._heartbeat, "heartbeat", seconds=self.settings.heartbeat)
        if self.settings.retention:
            every(self._prune, "retention", hours=1)
        return scheduler

    async def _loop_lag(self) -> None:
        from bot import metrics

        before = time.perf_counter()
        await asyncio.sleep(0)
        metrics.LOOP_LAG.set(time.perf_counter() - before)

    async def _outages(self) -> None:
        """A source failing for `outage_notice` seconds is one ops notice; its recovery is one more."""
        from bot.health import tell

        for notice in self.health.outages(self.settings.outage_notice):
            await tell(self.pipeline.ops, f"{notice.source}.{notice.kind}", notice.text)

    async def _heartbeat(self) -> None:
        """One line of what the monitor did since the last one: the sign that it is alive."""
        from bot.health import span

        since, self._beat_since = self._beat_since, datetime.now(UTC)
        stored, sent = await run_sync(self.store, activity, self.store, since)
        total = len(self.health.channels)
        troubles = self.health.troubles()
        log.info(
            "heartbeat: %d/%d channels up to date; in the last %s: %d post%s stored, %d alert%s sent; %s",
            self.health.up_to_date(),
            total,
            span((self._beat_since - since).total_seconds()),
            stored,
            "" if stored == 1 else "s",
            sent,
            "" if sent == 1 else "s",
            f"problems: {', '.join(troubles)}" if troubles else "no problems",
        )

    async def _housekeeping(self) -> None:
        from bot import metrics
        from bot.store.maintenance import database_size

        metrics.DB_SIZE.set(await run_sync(self.store, database_size, self.store))

    async def _prune(self) -> None:
        from bot.duration import parse_duration
        from bot.store.maintenance import prune_in_batches

        retention = parse_duration(self.settings.retention)
        removed = await prune_in_batches(self.store, retention, forget=PRUNED)
        if any(removed.values()):
            log.info("retention: pruned %s", removed)

    async def wait(self) -> None:
        """Until a task ends for good (a lost session) or SIGTERM cancels us."""
        done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def stop(self) -> None:
        self.watcher.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        try:
            for task in self.tasks:  # no lease round or re-watch from here on
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.telegram is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.telegram.stop(), timeout=3)
        finally:
            if self.keeper is not None:
                await self.keeper.stop()  # the sources have stopped: the channels are free for others
        if self.server is not None:
            await self.server.close()
        await self.pipeline.aclose()
        release(self.store)


async def run_monitor(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT; finish the post in hand and stop within 10 s."""
    from bot.sources.telegram import SessionError

    try:
        await _run(settings)
    except SessionError as exc:
        # A revoked or missing session: say how to log in, and exit non-zero instead of idling.
        raise InputError(str(exc)) from None


async def _run(settings: Settings) -> None:
    import signal

    monitor = Monitor(settings)
    started = datetime.now().astimezone()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await monitor.start()
        waiter = asyncio.create_task(monitor.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if waiter.done() and waiter.exception() is not None:
            # Dying for a reason (a revoked session): let the ops notice about it out first, when
            # this process is one that delivers.
            if monitor.delivers:
                with contextlib.suppress(Exception):
                    await monitor.pipeline.drain(started, timeout=3)
            raise waiter.exception()  # type: ignore[misc]
        waiter.cancel()
    finally:
        log.info("stopping")
        await asyncio.wait_for(monitor.stop(), timeout=6)
        log.info("stopped")
