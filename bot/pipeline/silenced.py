"""Filter: a rule muted by `tgsentinel silence add`, everywhere or in one channel, does not alert."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.pipeline.batch import Batch, Candidate
from bot.store import channels as channel_rows
from bot.store.models import Silence


class Silenced:
    def run(self, session: Session, batch: Batch) -> None:
        if not batch.candidates:
            return
        active = session.execute(
            select(Silence.rule_id, Silence.channel).where(Silence.until > batch.stamp)
        ).all()
        if not active:
            return

        def audible(c: Candidate) -> bool:
            names = channel_rows.names(c.post.channel)
            return not any(
                rule == c.rule.rule_id and (where is None or where in names) for rule, where in active
            )

        batch.keep("silenced", audible)
