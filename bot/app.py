"""Wiring: the store, the pipeline stages, the scheduler, sources and the process lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.alerts.outbox import Outbox, OutboxSettings, RulePolicy, ops_notice, release_held
from bot.alerts.senders import Sender, build_sender
from bot.alerts.worker import RetryPolicy, Worker, counts
from bot.config import Config, load_config
from bot.errors import InputError
from bot.ingest import Ingest, batched
from bot.rules.engine import Engine as RuleEngine
from bot.settings import Settings
from bot.sources.model import ChannelRef, Forward, Incoming
from bot.store.db import make_engine, release, run_sync, safe_url
from bot.store.migrate import upgrade
from bot.store.models import Channel, Message

log = logging.getLogger("tgsentinel")


def open_store(url: str) -> Engine:
    """An engine on an up-to-date schema; a bad URL or an unreachable server is one line, exit 2."""
    engine = make_engine(url)
    try:
        upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise InputError(f"cannot upgrade database {safe_url(url)}: {reason}") from None
    return engine


@dataclass
class RuleSet:
    """The rules in force. Swapped whole on a hot reload, so a batch never sees half a rule set."""

    config: Config
    engine: RuleEngine
    policies: dict[str, RulePolicy]

    @classmethod
    def build(cls, config: Config, engine: RuleEngine | None = None) -> RuleSet:
        policies = {r.id: RulePolicy(throttle=r.throttle, digest=r.digest) for r in config.rules}
        engine = engine if engine is not None else RuleEngine(config.rules)
        return cls(config=config, engine=engine, policies=policies)


def http_client() -> httpx.AsyncClient:
    """The one HTTP client of the process (senders and the web source share its pool).

    TCP_NODELAY: httpx writes a request's headers and body separately, and Nagle's algorithm meeting
    the receiver's delayed ACK adds 40 ms to every alert otherwise.
    """
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False, transport=transport)


class Pipeline:
    """The stages after a source: ingest (normalise, store, match, outbox) and delivery."""

    def __init__(
        self,
        settings: Settings,
        store: Engine,
        config: Config,
        *,
        engine: RuleEngine | None = None,
        console: TextIO | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.console = console or sys.stdout
        self.rules = RuleSet.build(config, engine)
        self.client = http_client()
        self.senders: dict[str, Sender] = {}
        self._destinations: dict[str, Any] = {}
        self._build_senders(config)
        self.outbox = Outbox(
            OutboxSettings(dedup_window=settings.dedup_window, max_alert_age=settings.max_alert_age),
            policies=lambda: self.rules.policies,
        )
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
            store, matcher=lambda: self.rules.engine, alerts=self.outbox, on_commit=self.worker.wake
        )

    @property
    def ops_destination(self) -> str:
        return self.rules.config.ops or self.settings.ops_destination

    def _build_senders(self, config: Config) -> None:
        # A sender whose destination did not change is kept: it remembers things (a Telegram chat's
        # migration to a supergroup) that a fresh one would have to learn again from a failed send.
        fresh = {
            name: self.senders[name]
            if name in self.senders and self._destinations.get(name) == dest
            else build_sender(dest, self.client, console=self.console)
            for name, dest in config.destinations.items()
        }
        self._destinations = dict(config.destinations)
        # In place: the worker holds this mapping.
        self.senders.clear()
        self.senders.update(fresh)

    def reload(self, config: Config, engine: RuleEngine | None = None) -> None:
        self.rules = RuleSet.build(config, engine)
        self._build_senders(config)
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
        while True:
            await self.release_held()
            handled = await self.worker.run_once()
            tally = await run_sync(self.store, self._tally, since)
            if not tally.get("pending") or time.monotonic() >= deadline:
                return tally
            if not handled:
                # Something waits for its backoff or Retry-After: look again shortly.
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _tally(self, since: datetime) -> dict[str, int]:
        from bot.store.models import Delivery

        with Session(self.store) as session:
            ids = list(session.scalars(select(Delivery.id).where(Delivery.created_at >= since)))
            return counts(session, ids) if ids else {}

    async def aclose(self) -> None:
        await self.client.aclose()


def load_rules(settings: Settings) -> Config:
    return load_config(settings.rules_dir)


def dump_items(text: str, channel: str) -> list[Incoming]:
    """A dump's posts as incoming posts of channel dump:NAME, with their 1-based position as id."""
    from bot.parse import parse_dump

    ref = ChannelRef(dump=channel, title=f"dump:{channel}")
    return [
        Incoming(
            channel=ref,
            message_id=post.index + 1,
            text=post.content.text,
            media=list(post.content.media),
            content=post.content,
            forward=Forward(name=post.forwarded_from) if post.forwarded_from else None,
        )
        for post in parse_dump(text)
    ]


async def replay(
    settings: Settings,
    text: str,
    channel: str,
    *,
    drain_timeout: float = 60.0,
    show: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> dict[str, int]:
    """`tgsentinel replay`: a dump through the whole pipeline, then deliver and report."""
    out = out or sys.stdout
    err = err or sys.stderr
    config = load_rules(settings)
    store = open_store(settings.database_url)
    # stdout carries the JSON lines of new matches; console alerts go to stderr beside the summary.
    pipeline = Pipeline(settings, store, config, console=err)
    started = datetime.now().astimezone()
    items = dump_items(text, channel)
    totals = dict.fromkeys(("read", "new", "unchanged", "duplicates", "matches"), 0)
    try:
        with _progress(len(items), err) as advance:
            for batch in batched(items, 1000):
                result = await pipeline.ingest.ingest(batch)
                for key in totals:
                    totals[key] += getattr(result, key)
                for msg_id, rule, terms in result.new_matches:
                    content = items[msg_id - 1].content
                    title = content.title if content else ""
                    out.write(
                        json.dumps(
                            {"index": msg_id - 1, "rule": rule, "terms": list(terms), "title": title},
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
                advance(len(batch))
        out.flush()
        delivered = await pipeline.drain(started, drain_timeout)
        if show:
            _show(store, channel, err)
    finally:
        await pipeline.aclose()
        release(store)
    print(
        f"replay {channel}: {totals['read']} posts read, {totals['new']} new, "
        f"{totals['unchanged']} unchanged, "
        f"{totals['duplicates']} duplicates by fingerprint, {totals['matches']} matches; deliveries: "
        + ", ".join(f"{delivered.get(s, 0)} {s}" for s in ("sent", "pending", "held", "dead")),
        file=err,
    )
    return {**totals, **{f"deliveries_{k}": v for k, v in delivered.items()}}


class _progress:
    """A progress bar on a terminal; nothing when piped."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.stream.isatty():
            return lambda n: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(file=self.stream), transient=True)
        self._bar.start()
        task = self._bar.add_task("replaying", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _show(store: Engine, channel: str, stream: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    with Session(store) as session:
        rows = session.execute(
            select(Message.msg_id, Message.title, Message.hashtags, Message.media, Message.forwarded_from)
            .join(Channel, Channel.id == Message.channel_id)
            .where(Channel.dump == f"dump:{channel}")
            .order_by(Message.msg_id)
        ).all()
    table = Table(title=f"dump:{channel}: {len(rows)} posts stored")
    table.add_column("id", justify="right", min_width=2)
    for name, width in (("title", 60), ("hashtags", 30), ("media", 11), ("forwarded from", 16)):
        table.add_column(name, no_wrap=True, max_width=width, min_width=min(width, 11), overflow="ellipsis")
    for msg_id, title, hashtags, media, fwd in rows:
        table.add_row(str(msg_id), title, " ".join(f"#{h}" for h in hashtags), ",".join(media), fwd or "")
    Console(file=stream, width=None if stream.isatty() else 130).print(table)


def has_credentials(settings: Settings) -> bool:
    if not (settings.api_id and settings.api_hash):
        return False
    from bot.sources.login import session_path

    return bool(settings.session) or session_path(settings).exists()


class Monitor:
    """`tgsentinel run`: sources, pipeline, scheduler, health server; stops cleanly on SIGTERM."""

    def __init__(self, settings: Settings) -> None:
        from bot.health import Health
        from bot.rules.watch import RulesWatcher

        self.settings = settings
        self.watcher = RulesWatcher(settings.rules_dir, on_reload=self._reloaded)
        self.store = open_store(settings.database_url)
        self.pipeline = Pipeline(settings, self.store, self.watcher.config, engine=self.watcher.engine)
        self.health = Health(settings.lag_threshold)
        self.web: Any = None
        self.telegram: Any = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.scheduler: Any = None
        self.server: asyncio.Server | None = None

    def _split(self, config: Config) -> tuple[list[Any], list[Any]]:
        """Which channels the Telegram source watches and which the web preview watches."""
        live = self.telegram is not None
        by_web = [c for c in config.channels if c.via == "web" or not live]
        by_tg = [c for c in config.channels if live and c.via != "web"]
        return by_tg, by_web

    async def _reloaded(self, config: Config) -> None:
        self.pipeline.reload(config, engine=self.watcher.engine)
        by_tg, by_web = self._split(config)
        if self.telegram is not None:
            await self.telegram.update(by_tg)
        if self.web is not None:
            self.web.update(by_web)
        self._announce(by_tg, by_web)

    def _announce(self, by_tg: list[Any], by_web: list[Any]) -> None:
        for label, entries in (("telegram", by_tg), ("web preview", by_web)):
            if entries:
                names = ", ".join(c.name or f"id:{c.tg_id}" for c in entries)
                log.info("watching via %s: %s", label, names)

    async def start(self) -> None:
        from bot.health import serve
        from bot.sources.web import WebSource

        if has_credentials(self.settings):
            from bot.sources.login import make_client
            from bot.sources.telegram import TelegramSource

            client = make_client(self.settings)
            self.telegram = TelegramSource(
                client, self.pipeline.ingest, self.health, self.settings, self.pipeline.ops
            )
        else:
            log.info(
                "no Telegram credentials (TELEGRAM_API_ID, TELEGRAM_API_HASH and a session from "
                "`tgsentinel login`): watching every channel through the t.me/s web preview"
            )
        by_tg, by_web = self._split(self.watcher.config)
        self._announce(by_tg, by_web)
        self.web = WebSource(self.pipeline.ingest, self.pipeline.client, self.settings, self.health, by_web)
        host, port = self.settings.http_host, self.settings.http_port
        try:
            self.server = await serve(self.health, host, port)
        except OSError as exc:
            raise InputError(
                f"cannot serve /healthz on {host}:{port}: {exc.strerror} (set TGSENTINEL_HTTP_PORT)"
            ) from None
        self.scheduler = self._schedule()
        self.scheduler.start()
        self.tasks = [
            asyncio.create_task(self.pipeline.worker.run(), name="delivery"),
            asyncio.create_task(self.watcher.run(), name="rules-watch"),
            asyncio.create_task(self.web.run(), name="web-source"),
        ]
        if self.telegram is not None:
            await self.telegram.update(by_tg)
            self.tasks.append(asyncio.create_task(self.telegram.run(), name="telegram-source"))

    def _schedule(self) -> Any:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        scheduler = AsyncIOScheduler(timezone="UTC")
        scheduler.add_job(
            self.pipeline.release_held,
            "interval",
            seconds=2,
            id="release-held",
            max_instances=1,
            coalesce=True,
        )
        if self.telegram is not None:
            scheduler.add_job(
                self.telegram.sweep_all,
                "interval",
                seconds=self.settings.sweep_interval,
                jitter=max(1, int(self.settings.sweep_interval * 0.1)),
                id="sweep",
                max_instances=1,
                coalesce=True,
            )
        scheduler.add_job(
            self._housekeeping, "interval", seconds=60, id="housekeeping", max_instances=1, coalesce=True
        )
        scheduler.add_job(
            self._loop_lag, "interval", seconds=1, id="loop-lag", max_instances=1, coalesce=True
        )
        if self.settings.retention:
            scheduler.add_job(
                self._prune, "interval", hours=1, id="retention", max_instances=1, coalesce=True
            )
        return scheduler

    async def _loop_lag(self) -> None:
        from bot import metrics

        before = time.perf_counter()
        await asyncio.sleep(0)
        metrics.LOOP_LAG.set(time.perf_counter() - before)

    async def _housekeeping(self) -> None:
        from bot import metrics
        from bot.store.maintenance import database_size

        metrics.DB_SIZE.set(await run_sync(self.store, database_size, self.store))

    async def _prune(self) -> None:
        from bot.config import parse_duration
        from bot.store.maintenance import prune

        removed = await run_sync(self.store, prune, self.store, parse_duration(self.settings.retention))
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
        if self.telegram is not None:
            await asyncio.wait_for(self.telegram.stop(), timeout=3)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()
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
            # Dying for a reason (a revoked session): let the ops notice about it out first.
            with contextlib.suppress(Exception):
                await monitor.pipeline.drain(started, timeout=3)
            raise waiter.exception()  # type: ignore[misc]
        waiter.cancel()
    finally:
        log.info("stopping")
        await asyncio.wait_for(monitor.stop(), timeout=6)
        log.info("stopped")
