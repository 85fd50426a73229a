"""Filter: history never alerts. A source marks a new channel's first page, a backfill or an import
as baseline: stored and matched, so `rules test --db` sees it, but nobody is paged for it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot.pipeline.batch import Batch


class Baseline:
    def run(self, session: Session, batch: Batch) -> None:
        batch.keep("baseline", lambda c: c.post.item.alert)
