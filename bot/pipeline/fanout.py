"""Stage: each candidate that passed the filters becomes an alert, with one delivery per destination
its rule notifies. The delivery worker claims them once the batch commits."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot.pipeline.batch import Batch
from bot.store.models import Alert, Delivery, alert_key


class FanOut:
    def run(self, session: Session, batch: Batch) -> None:
        if not batch.candidates:
            return
        alerts = [
            Alert(
                key=alert_key(),
                kind="match",
                rule_id=c.rule.rule_id,
                severity=c.rule.severity,
                match_id=c.match.id,
                channel_id=c.channel_id,
                message_id=c.post.message_id,
                fingerprint=c.post.content.fingerprint,
                story_id=c.post.story_id,
                also_seen_in=c.also_seen_in,
                summary=None,
                items=[],
                created_at=batch.stamp,
            )
            for c in batch.candidates
        ]
        session.add_all(alerts)
        session.flush()
        deliveries = [
            Delivery(
                alert_id=alert.id,
                destination=dest,
                status="held" if c.hold_key else "pending",
                attempts=0,
                next_attempt_at=batch.stamp,
                hold_key=c.hold_key,
                hold_until=c.hold_until,
                created_at=batch.stamp,
            )
            for c, alert in zip(batch.candidates, alerts, strict=True)
            for dest in dict.fromkeys(c.rule.notify)
        ]
        session.add_all(deliveries)
        session.flush()
        batch.deliveries = [d.id for d in deliveries if d.status == "pending"]
