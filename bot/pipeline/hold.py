"""Stage: hold what a rule's `throttle` or `digest` says to hold, instead of sending it now.

- digest: every match waits for the end of the rule's window and goes out as one digest;
- throttle: the first match in a channel goes out, and later ones within the window are held and
  folded into one "+N more" follow-up when it ends.

Held deliveries are released by `bot.alerts.outbox.release_held`; the state is all in the store.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.pipeline.batch import Batch, Candidate
from bot.store.models import Alert, Delivery


class Hold:
    def run(self, session: Session, batch: Batch) -> None:
        if batch.rules is None:
            return
        # Throttle windows this batch opened, so its own repeats are held too.
        opened: dict[tuple[str, int], datetime] = {}
        for c in batch.candidates:
            rule = batch.rules.rule(c.rule.rule_id)
            if rule is None:
                continue
            if rule.digest:
                end = (int(batch.stamp.timestamp() // rule.digest) + 1) * rule.digest
                c.hold_key = f"digest:{rule.id}"
                c.hold_until = datetime.fromtimestamp(end, batch.stamp.tzinfo)
            elif rule.throttle:
                key = (rule.id, c.channel_id)
                start = opened.get(key) or _window_start(session, c, rule.throttle, batch.stamp)
                if start is None:
                    opened[key] = batch.stamp  # this one goes out and opens the window
                    continue
                c.hold_key = f"throttle:{rule.id}:{c.channel_id}"
                c.hold_until = start + timedelta(seconds=rule.throttle)
                batch.suppress("throttled")


def _window_start(session: Session, c: Candidate, throttle: float, stamp: datetime) -> datetime | None:
    """When the open window began: the last alert that went out unheld for this rule and channel."""
    return session.scalar(
        select(Alert.created_at)
        .join(Delivery, Delivery.alert_id == Alert.id)
        .where(Alert.rule_id == c.rule.rule_id, Alert.channel_id == c.channel_id, Alert.kind == "match")
        .where(Delivery.hold_key.is_(None), Alert.created_at >= stamp - timedelta(seconds=throttle))
        .order_by(Alert.created_at.desc())
        .limit(1)
    )
