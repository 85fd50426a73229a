"""Stage: an alert that has gone out and was since seen in more channels (its `also_seen_in` grew, by
the duplicate filter) gets an `update` alert to each destination it reached.

Where the destination can edit what it was sent (`Destination.edits`: Slack with a bot token,
Telegram, Discord), the update is due now and the worker edits the message in place. Elsewhere it is
a line ("also seen in ...") due `line_delay` seconds later, so that a story spreading over several
channels in a few minutes makes one line, not one per channel: the line is rendered when it is sent,
from the alert as it is then. One update per alert and destination waits at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from bot.pipeline.batch import Batch
from bot.store.db import chunks
from bot.store.models import Alert, Delivery, alert_key


@dataclass(frozen=True, slots=True)
class Revise:
    line_delay: float  # seconds

    def run(self, session: Session, batch: Batch) -> None:
        if not batch.revised:
            return
        destinations = batch.rules.config.destinations if batch.rules is not None else {}
        revised = sorted(batch.revised)
        reached: dict[int, list[str]] = {}  # alert id -> destinations it went out to (or is going)
        waiting: set[tuple[int, str]] = set()  # (alert id, destination) with an update not sent yet
        for chunk in chunks(revised):
            gone_out = or_(
                Delivery.status == "sent",
                and_(Delivery.status == "pending", Delivery.lease_until > batch.stamp),  # in flight
            )
            for alert_id, destination in session.execute(
                select(Delivery.alert_id, Delivery.destination)
                .where(Delivery.alert_id.in_(chunk), gone_out)
                .order_by(Delivery.id)
            ):
                reached.setdefault(alert_id, []).append(destination)
            # Updates are few: those not sent yet, of the revised alerts' stories, read whole.
            stories = select(Alert.story_id).where(Alert.id.in_(chunk))
            for items, destination in session.execute(
                select(Alert.items, Delivery.destination)
                .join(Delivery, Delivery.alert_id == Alert.id)
                .where(Alert.kind == "update", Alert.story_id.in_(stories), Delivery.status == "pending")
            ):
                waiting.update((i, destination) for i in items or ())
        originals = {a.id: a for a in session.scalars(select(Alert).where(Alert.id.in_(list(reached))))}
        for alert_id, dests in reached.items():
            todo = [d for d in dict.fromkeys(dests) if (alert_id, d) not in waiting]
            if not todo:
                continue
            original = originals[alert_id]
            update = Alert(
                key=alert_key(),
                kind="update",
                rule_id=original.rule_id,
                severity=original.severity,
                channel_id=original.channel_id,
                message_id=original.message_id,
                story_id=original.story_id,
                fingerprint=original.fingerprint,
                also_seen_in=[],
                summary=None,
                items=[alert_id],
                created_at=batch.stamp,
            )
            session.add(update)
            session.flush()
            rows = []
            for name in todo:
                dest = destinations.get(name)
                now = dest is not None and dest.edits
                due = batch.stamp if now else batch.stamp + timedelta(seconds=self.line_delay)
                rows.append(
                    Delivery(
                        alert_id=update.id,
                        destination=name,
                        status="pending",
                        attempts=0,
                        next_attempt_at=due,
                        created_at=batch.stamp,
                    )
                )
            session.add_all(rows)
            session.flush()
            batch.deliveries += [d.id for d in rows if d.next_attempt_at <= batch.stamp]
