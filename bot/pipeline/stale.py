"""Filter: a post older than `max_age` seconds does not alert (a catch-up after a long outage finds
last week's posts: they are stored and matched, but paging for them now helps nobody). A post with no
date (a text dump) is never stale."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from bot.pipeline.batch import Batch, Candidate


@dataclass(frozen=True, slots=True)
class Stale:
    max_age: float

    def run(self, session: Session, batch: Batch) -> None:
        def fresh(c: Candidate) -> bool:
            date = c.post.item.date
            return date is None or (batch.stamp - date).total_seconds() <= self.max_age

        batch.keep("stale", fresh)
