"""Stage: run the batch's rule set over new and edited posts, and record each match once.

A match is unique per rule and message, so an edit records only the rules that match anew.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import metrics
from bot.pipeline.batch import Batch, Candidate
from bot.rules.engine import MatchInput
from bot.store import channels as channel_rows
from bot.store.db import chunks
from bot.store.models import Match


class MatchRules:
    def run(self, session: Session, batch: Batch) -> None:
        if batch.rules is None or not batch.posts:
            return
        engine = batch.rules.engine
        edited = [p.message_id for p in batch.posts if p.is_edit]
        already: set[tuple[str, int]] = set()
        for chunk in chunks(edited):
            query = select(Match.rule_id, Match.message_id).where(Match.message_id.in_(chunk))
            already.update(session.execute(query).all())
        for post in batch.posts:
            found = engine.match(
                MatchInput(
                    text=post.content.text,
                    hashtags=post.content.hashtags,
                    channel_names=channel_rows.names(post.channel),
                    is_forward=post.item.forward is not None,
                    is_edit=post.is_edit,
                )
            )
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
        batch.counts["matches"] = len(batch.matched)
        batch.candidates = list(batch.matched)
        if batch.matched:
            session.flush()
