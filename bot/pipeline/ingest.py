"""The one ingest path every source calls (bot.sources.model.Sink): the stages of `compose`, one
transaction per batch, then the delivery worker woken for what it queued.

It is idempotent by channel and message id: feeding the same post twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bot.config.ruleset import RuleSet
from bot.pipeline import compose
from bot.pipeline.batch import Batch
from bot.sources.model import ChannelRef, Incoming, IngestResult
from bot.store import channels as channel_rows
from bot.store.channels import now
from bot.store.db import run_sync


class Ingest:
    def __init__(
        self,
        engine: Engine,
        *,
        rules: Callable[[], RuleSet | None] = lambda: None,
        windows: compose.Windows = compose.Windows(),
        on_commit: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.rules = rules  # a callable: a hot reload swaps the rule set between batches
        self.stages = compose.stages(windows)
        self.on_commit = on_commit  # wakes the delivery worker as soon as the rows are visible

    async def ingest(self, items: Sequence[Incoming]) -> IngestResult:
        if not items:
            return IngestResult()
        # The snapshot is taken here, once: every stage of this batch judges by the same rules.
        batch = await run_sync(self.engine, self.ingest_sync, items, self.rules())
        if batch.deliveries and self.on_commit is not None:
            self.on_commit(batch.deliveries)
        return result_of(batch)

    def ingest_sync(self, items: Sequence[Incoming], rules: RuleSet | None = None) -> Batch:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            return compose.run(session, Batch(items, rules, now()), self.stages)

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

        return await run_sync(self.engine, work)


def result_of(batch: Batch) -> IngestResult:
    counts = {k: batch.counts[k] for k in ("read", "new", "updated", "unchanged", "duplicates", "matches")}
    new_matches = tuple((c.post.item.message_id, c.rule.rule_id, c.rule.terms) for c in batch.matched)
    return IngestResult(**counts, new_matches=new_matches)
