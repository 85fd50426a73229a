"""Stage: run the batch's rule set over new and edited posts, and record each match once.

A match is unique per rule and message, so an edit records only the rules that match anew.

The matching itself is done before the batch's transaction, in a thread of its own (`Matcher`): on
SQLite every write goes through one thread, and a rule that is slow to match must hold up neither the
storing of other posts nor the delivery of alerts. The stage then only looks the results up; a post
whose input turned out different from what was guessed ahead (an edit, under a rule that ignores
edits) is matched here, on the same budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import channel, metrics
from bot.config.ruleset import RuleSet
from bot.parse import normalise
from bot.parse.model import Content
from bot.pipeline.batch import Batch, Candidate, Preparing, Ready
from bot.rules.engine import BATCH_BUDGET, POST_BUDGET, Ahead, Budget, Limits, MatchInput
from bot.sources.model import ChannelRef, Incoming
from bot.store import channels as channel_rows
from bot.store.db import chunks
from bot.store.models import Match

log = logging.getLogger(__name__)

# One thread: matching is CPU work, and batches matched one after another each get their whole budget.
_executor: ThreadPoolExecutor | None = None


def _thread() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tgsentinel-match")
    return _executor


def _prepared(stage: Preparing, contents: Sequence[Content]) -> dict[int, object]:
    done = {}
    for content in contents:
        try:
            done[id(content)] = stage.prepare(content)
        except Exception:
            continue  # its stage meets the post again, in the transaction
    return done


class Matcher:
    """Matches a batch ahead of its transaction, off the event loop and off the store's thread, and
    tells ops (once per batch) about regex terms the engine disabled for timing out."""

    def __init__(
        self, limits: Limits = Limits(), ops: Callable[[str, str], Awaitable[None]] | None = None
    ) -> None:
        self.limits = limits
        self.ops = ops

    async def ahead(
        self, items: Sequence[Incoming], rules: RuleSet | None, stages: Sequence[Preparing] = ()
    ) -> tuple[Ahead | None, Ready]:
        """The batch's matches, and each stage's `prepare` of every post, in the match thread."""
        if not items or (rules is None and not stages):
            return None, {}
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(_thread(), self.ahead_sync, items, rules, stages)
        if rules is not None:
            await self.tell(rules)
        return found

    def ahead_sync(
        self, items: Sequence[Incoming], rules: RuleSet | None, stages: Sequence[Preparing] = ()
    ) -> tuple[Ahead | None, Ready]:
        contents = []
        for item in items:
            if item.content is None:
                try:
                    # Kept on the item: the normalise stage uses a content the source set.
                    item.content = normalise(item.text, item.entities, item.media)
                except Exception:
                    continue  # the normalise stage meets it again, and rejects the post
            contents.append(item.content)
        ahead = None if rules is None else self._match(items, rules)
        # Stage by stage over the whole batch, rather than post by post between the rules: each
        # stage's tables (the stems, say) stay in the processor's cache while it runs.
        return ahead, {stage: _prepared(stage, contents) for stage in stages}

    def _match(self, items: Sequence[Incoming], rules: RuleSet) -> Ahead:
        engine = rules.engine
        ahead = Ahead(engine, Budget(self.limits, len(items)))
        for item in items:
            if item.content is None:
                continue
            # As the stage will see it, as far as can be known before storing: most posts are new.
            post = engine.key(
                MatchInput(
                    text=item.content.text,
                    hashtags=item.content.hashtags,
                    channel_names=_names(item.channel),
                    is_forward=item.forward is not None,
                    is_edit=False,
                )
            )
            if post not in ahead.found:
                try:
                    ahead.found[post] = engine.match(post, ahead.budget)
                except Exception:
                    continue  # matched again in the transaction, where a post that fails is rejected alone
        return ahead

    async def tell(self, rules: RuleSet) -> None:
        disabled = rules.engine.take_disabled()
        if not disabled:
            return
        metrics.REGEX_DISABLED.inc(len(disabled))
        where = rules.config.rules_at
        parts = []
        for d in disabled:
            owners = ", ".join(f"{rid} ({where[rid]})" if rid in where else rid for rid in d.rule_ids)
            log.warning(
                "regex term %r of rule %s timed out %d times in a row: disabled until the rules are reloaded",
                d.term,
                owners,
                d.timeouts,
            )
            parts.append(f"{d.term!r} of rule {owners}")
        if self.ops is not None:
            summary = (
                f"{len(disabled)} regex term(s) disabled until the rules are reloaded, for timing out "
                f"{self.limits.disable_after} times in a row: " + "; ".join(parts)
            )
            try:
                await self.ops("rules.regex_disabled", summary)
            except Exception as exc:  # a notice lost to an outage must not fail the batch
                log.warning("could not queue the ops notice about disabled regex terms: %s", exc)


def _names(ref: ChannelRef) -> frozenset[str]:
    """The names the channel's row will have, as far as the source knows them."""
    if ref.dump:
        return channel.names(dump=ref.key)
    return channel.names(username=ref.username.lower() if ref.username else None, tg_id=ref.tg_id)


class MatchRules:
    def run(self, session: Session, batch: Batch) -> None:
        if batch.rules is None or not batch.posts:
            return
        engine = batch.rules.engine
        ahead = batch.ahead
        budget = ahead.budget if ahead is not None else Budget()
        edited = [p.message_id for p in batch.posts if p.is_edit]
        already: set[tuple[str, int]] = set()
        for chunk in chunks(edited):
            query = select(Match.rule_id, Match.message_id).where(Match.message_id.in_(chunk))
            already.update(session.execute(query).all())
        for post in batch.posts:
            looked_at = MatchInput(
                text=post.content.text,
                hashtags=post.content.hashtags,
                channel_names=channel_rows.names(post.channel),
                is_forward=post.item.forward is not None,
                is_edit=post.is_edit,
            )
            found = ahead.get(engine, looked_at) if ahead is not None else None
            if found is None:
                found = engine.match(looked_at, budget)
            for rm in found:
                if (rm.rule_id, post.message_id) in already:
                    continue
                row = Match(
                    rule_id=rm.rule_id,
                    message_id=post.message_id,
                    channel_id=post.channel.id,
                    terms=list(rm.terms),
                    hits=[[h.term, h.start, h.end] for h in rm.hits],
                    created_at=batch.stamp,
                )
                session.add(row)
                batch.matched.append(Candidate(post, rm, row))
                metrics.MATCHES.labels(rm.rule_id).inc()
        _budget_spent(budget, len(batch.posts))
        batch.counts["matches"] = len(batch.matched)
        batch.candidates = list(batch.matched)
        if batch.matched:
            session.flush()


def _budget_spent(budget: Budget, posts: int) -> None:
    skipped = budget.skipped[POST_BUDGET] + budget.skipped[BATCH_BUDGET]
    if skipped:
        log.warning(
            "regex budget spent (%.2fs per post, %.2fs per batch): %d regex term run(s) skipped over %d "
            "post(s), counted as no hit (tgsentinel_regex_skipped_total)",
            budget.limits.post,
            budget.limits.batch,
            skipped,
            posts,
        )
