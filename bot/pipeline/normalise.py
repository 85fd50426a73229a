"""Stage: every post's Content, from the one normaliser (a dump's posts arrive with theirs)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot.parse import normalise
from bot.pipeline.batch import Batch


class Normalise:
    def run(self, session: Session, batch: Batch) -> None:
        batch.prepared = [
            (item, item.content or normalise(item.text, item.entities, item.media)) for item in batch.items
        ]
        batch.counts["read"] = len(batch.prepared)
