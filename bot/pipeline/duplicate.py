"""Filter: what a rule already alerted on is not alerted again; the first alert notes where else it
was seen (`also_seen_in`), and if it has gone out already, `batch.revised` says so (the revise stage
then edits it in place or sends a line about it).

What counts as the same depends on the rule's `stories`:
- merge (the default): the same story (bot.stories: near-duplicates across channels) within the
  story window;
- each: the same post only (its exact fingerprint) within `window` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.pipeline.batch import Batch, Candidate
from bot.store import channels as channel_rows
from bot.store.db import chunks
from bot.store.models import Alert

Key = tuple[str, str | int, str]  # ("story", story id, rule) or ("post", fingerprint, rule)


@dataclass(frozen=True, slots=True)
class Duplicate:
    window: float  # the same post, for rules with `stories: each`
    story_window: float  # the same story, for the others

    def key(self, batch: Batch, c: Candidate) -> Key | None:
        rule = batch.rules.rule(c.rule.rule_id) if batch.rules is not None else None
        if (rule is None or rule.stories == "merge") and c.post.story_id is not None:
            return ("story", c.post.story_id, c.rule.rule_id)
        fp = c.post.content.fingerprint
        return None if fp is None else ("post", fp, c.rule.rule_id)

    def run(self, session: Session, batch: Batch) -> None:
        keys = {id(c): self.key(batch, c) for c in batch.candidates}
        stories = sorted({k[1] for k in keys.values() if k and k[0] == "story"})
        posts = sorted({k[1] for k in keys.values() if k and k[0] == "post"})
        if not stories and not posts:
            return
        # The first alert per key: stored ones, then this batch's own candidates.
        first: dict[Key, Alert | Candidate] = {}
        for column, values, window in (
            (Alert.story_id, stories, self.story_window),
            (Alert.fingerprint, posts, self.window),
        ):
            kind = "story" if column is Alert.story_id else "post"
            since = batch.stamp - timedelta(seconds=window)
            for chunk in chunks(values):
                query = (
                    select(Alert)
                    .where(column.in_(chunk), Alert.kind == "match", Alert.created_at >= since)
                    .order_by(Alert.id)
                )
                for alert in session.scalars(query):
                    value = alert.story_id if kind == "story" else alert.fingerprint
                    first.setdefault((kind, value or 0, alert.rule_id or ""), alert)

        def new(c: Candidate) -> bool:
            key = keys[id(c)]
            if key is None:
                return True
            earlier = first.setdefault(key, c)
            if earlier is c:
                return True
            label = channel_rows.label(c.post.channel)
            if earlier.channel_id != c.channel_id and label not in earlier.also_seen_in:
                earlier.also_seen_in = [*earlier.also_seen_in, label]
                if isinstance(earlier, Alert):
                    batch.revised.add(earlier.id)
            return False

        batch.keep("duplicate", new)
