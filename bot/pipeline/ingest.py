"""The one ingest path every source calls (bot.sources.model.Sink): the stages of `compose`, one
transaction per batch, then the delivery worker woken for what it queued.

It is idempotent by channel and message id: feeding the same post twice changes nothing.

A batch fails per post, not whole: when its transaction fails for anything but a store outage, the
batch is run again one post per transaction, and a post that fails alone is rejected (logged,
counted in tgsentinel_posts_rejected_total, kept in `rejected_posts`) while the others are stored and
alerted. An outage (server gone, disk full, database locked) is no post's fault: it is raised, and the
source tries the same posts again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bot import metrics
from bot.config.ruleset import RuleSet
from bot.errors import first_line
from bot.pipeline import compose
from bot.pipeline.batch import Batch, Ready
from bot.pipeline.match import Matcher
from bot.rules.engine import Ahead
from bot.sources.model import MAX_MESSAGE_ID, ChannelRef, Incoming, IngestResult, Rejected, StoreUnavailable
from bot.store import channels as channel_rows
from bot.store import rejected as rejected_rows
from bot.store.channels import now
from bot.store.db import is_outage, one_writer, run_sync

log = logging.getLogger(__name__)

T = TypeVar("T")


class Ingest:
    def __init__(
        self,
        engine: Engine,
        *,
        rules: Callable[[], RuleSet | None] = lambda: None,
        windows: compose.Windows = compose.Windows(),
        on_commit: Callable[[list[int]], None] | None = None,
        matcher: Matcher | None = None,
    ) -> None:
        self.engine = engine
        self.rules = rules  # a callable: a hot reload swaps the rule set between batches
        self.stages = compose.stages(windows)
        self.on_commit = on_commit  # wakes the delivery worker as soon as the rows are visible
        self.matcher = matcher or Matcher()
        self._writing = asyncio.Lock()

    async def ingest(self, items: Sequence[Incoming]) -> IngestResult:
        if not items:
            return IngestResult()
        # The snapshot is taken here, once: every stage of this batch judges by the same rules.
        rules = self.rules()
        # Matched first, in the match thread: a slow rule must not hold up the store's one thread.
        ahead, ready = await self.matcher.ahead(items, rules, compose.preparing(self.stages))
        # One batch's transaction at a time, on every database: the duplicate and throttle stages
        # look before they insert, and two channels' polls carrying one story must not both miss
        # the other's uncommitted alert (on PostgreSQL the store's threads would run them together).
        # `one_writer` does the same between processes.
        async with self._writing:
            batch = await self._sync(self.ingest_sync, items, rules, ahead, ready)
        if batch.deliveries and self.on_commit is not None:
            self.on_commit(batch.deliveries)
        return result_of(batch)

    def ingest_sync(
        self,
        items: Sequence[Incoming],
        rules: RuleSet | None = None,
        ahead: Ahead | None = None,
        ready: Ready | None = None,
    ) -> Batch:
        stamp = now()
        try:
            batch = self._run(items, rules, stamp, ahead, ready)
        except Exception as exc:
            if is_outage(exc):
                raise
            batch = self._one_by_one(items, rules, stamp, exc, ahead, ready)
        _published(batch)
        return batch

    def _run(
        self,
        items: Sequence[Incoming],
        rules: RuleSet | None,
        stamp: datetime,
        ahead: Ahead | None = None,
        ready: Ready | None = None,
    ) -> Batch:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            one_writer(session)
            batch = compose.run(
                session, Batch(items, rules, stamp, ahead=ahead, ready=ready or {}), self.stages
            )
        for hook in batch.after_commit:
            hook()
        return batch

    def _one_by_one(
        self,
        items: Sequence[Incoming],
        rules: RuleSet | None,
        stamp: datetime,
        exc: Exception,
        ahead: Ahead | None = None,
        ready: Ready | None = None,
    ) -> Batch:
        """After the batch failed with `exc`: a transaction per post, rejecting a post that fails alone.

        A batch of one is tried once more too: what failed it may have been another writer's row
        committed in between (a unique key both inserted), which a second try finds and updates."""
        log.info(
            "ingest: a batch of %d post(s) failed (%s); storing them one by one", len(items), first_line(exc)
        )
        batch = Batch(items, rules, stamp)
        for item in items:
            try:
                batch.absorb(self._run([item], rules, stamp, ahead, ready))
            except Exception as failed:
                if is_outage(failed):
                    raise  # the posts stored so far stay stored: ingest is idempotent
                batch.rejected.append(_rejection(item, failed))
        if len(items) > 1 and len(batch.rejected) == len(items):
            # Every post failing alone is not bad data but a fault of ours or of the store (a
            # corrupt file, a bug in a stage): raised, so the cursor stays and the poll says why,
            # rather than every post of every batch skipped for good.
            raise exc
        batch.counts["read"] += len(batch.rejected)
        self._reject_sync(batch.rejected)
        return batch

    async def reject(self, rejected: Sequence[Rejected]) -> int:
        if not rejected:
            return 0
        return await self._sync(self._reject_sync, list(rejected))

    def _reject_sync(self, rejected: Sequence[Rejected]) -> int:
        if not rejected:
            return 0
        stamp = now()
        with Session(self.engine) as session, session.begin():
            new = [r for r in rejected if rejected_rows.record(session, r, stamp)]
        # Told once each, when first recorded: a page that keeps showing a bad post is one rejection.
        for r in new:
            metrics.POSTS_REJECTED.labels(r.reason).inc()
            log.warning("%s: post %s skipped (%s): %s", r.channel.key, r.ref[:64], r.reason, r.detail)
        return len(new)

    async def delete(self, channel: ChannelRef, message_ids: Sequence[int]) -> int:
        return await self._store(channel_rows.mark_deleted, channel, list(message_ids))

    async def cursor(self, channel: ChannelRef) -> int | None:
        return await self._store(channel_rows.cursor, channel)

    async def resolved(self, username: str) -> ChannelRef | None:
        return await self._store(channel_rows.resolved, username)

    async def remember(self, channel: ChannelRef) -> None:
        await self._store(channel_rows.remember, channel)

    async def _store(self, fn: Callable[..., object], *args: object):  # type: ignore[no-untyped-def]
        def work():  # type: ignore[no-untyped-def]
            with Session(self.engine) as session, session.begin():
                return fn(session, *args)

        return await self._sync(work)

    async def _sync(self, fn: Callable[..., T], *args: object) -> T:
        """Store work off the loop; an outage reaches the source as StoreUnavailable, one type it
        can tell from its own failures without knowing the store."""
        try:
            return await run_sync(self.engine, fn, *args)
        except Exception as exc:
            if is_outage(exc):
                raise StoreUnavailable(first_line(exc)) from exc
            raise


def _rejection(item: Incoming, exc: BaseException) -> Rejected:
    in_range = 0 < item.message_id <= MAX_MESSAGE_ID
    return Rejected(
        channel=item.channel,
        ref=str(item.message_id),
        reason="store_failed",
        detail=f"{type(exc).__name__}: {first_line(exc)}",
        message_id=item.message_id if in_range else None,  # past it, unless the id itself is the fault
    )


def _published(batch: Batch) -> None:
    """The batch's counts, as metrics: only for what was committed."""
    for channel, n in batch.ingested.items():
        metrics.POSTS_INGESTED.labels(channel).inc(n)
    for reason, n in batch.suppressed.items():
        metrics.ALERTS_SUPPRESSED.labels(reason).inc(n)
    for reason, n in batch.dropped.items():
        metrics.POSTS_DROPPED.labels(reason).inc(n)


def result_of(batch: Batch) -> IngestResult:
    counts = {k: batch.counts[k] for k in ("read", "new", "updated", "unchanged", "duplicates", "matches")}
    new_matches = tuple((c.post.item.message_id, c.rule.rule_id, c.rule.terms) for c in batch.matched)
    return IngestResult(**counts, new_matches=new_matches)
