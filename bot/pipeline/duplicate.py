"""Filter: the same post (by fingerprint) matching the same rule again within `window` seconds is
not alerted again: the first alert notes where else it was seen (`also_seen_in`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.pipeline.batch import Batch, Candidate
from bot.store import channels as channel_rows
from bot.store.db import chunks
from bot.store.models import Alert


@dataclass(frozen=True, slots=True)
class Duplicate:
    window: float

    def run(self, session: Session, batch: Batch) -> None:
        fingerprints = {c.post.content.fingerprint for c in batch.candidates} - {None}
        if not fingerprints:
            return
        since = batch.stamp - timedelta(seconds=self.window)
        # The first alert per (fingerprint, rule): stored ones, then this batch's own candidates.
        first: dict[tuple[str, str], Alert | Candidate] = {}
        for chunk in chunks(sorted(fingerprints)):
            query = (
                select(Alert)
                .where(Alert.fingerprint.in_(chunk), Alert.kind == "match", Alert.created_at >= since)
                .order_by(Alert.id)
            )
            for alert in session.scalars(query):
                first.setdefault((alert.fingerprint or "", alert.rule_id or ""), alert)

        def new(c: Candidate) -> bool:
            fp = c.post.content.fingerprint
            if fp is None:
                return True
            earlier = first.setdefault((fp, c.rule.rule_id), c)
            if earlier is c:
                return True
            label = channel_rows.label(c.post.channel)
            if earlier.channel_id != c.channel_id and label not in earlier.also_seen_in:
                earlier.also_seen_in = [*earlier.also_seen_in, label]
            return False

        batch.keep("duplicate", new)
