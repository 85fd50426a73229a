"""The outbox after the pipeline: held deliveries folded into follow-ups and digests, ops notices,
and which deliveries a worker may claim. Match alerts are written by the pipeline's fan-out stage.

All state lives in the database, so a restart loses no hold, silence or follow-up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from bot.redact import SECRETS
from bot.store.channels import now
from bot.store.models import Alert, Delivery, DestinationState, alert_key


def release_held(session: Session, stamp: datetime | None = None) -> list[int]:
    """Fold held deliveries whose window ended into one follow-up or digest per key and destination.

    `stamp` is the moment to judge windows by (tests pass a later one); the follow-ups are due now.
    """
    stamp = stamp or now()
    due = session.execute(
        select(Delivery, Alert)
        .join(Alert, Alert.id == Delivery.alert_id)
        .where(Delivery.status == "held", Delivery.hold_until <= stamp)
        .order_by(Delivery.id)
    ).all()
    groups: dict[tuple[str, str], list[tuple[Delivery, Alert]]] = {}
    for delivery, alert in due:
        groups.setdefault((delivery.hold_key or "", delivery.destination), []).append((delivery, alert))
    created: list[int] = []
    for (hold_key, destination), rows in groups.items():
        kind = "digest" if hold_key.startswith("digest:") else "followup"
        first = rows[0][1]
        n = len(rows)
        if kind == "digest":
            summary = f"Digest for rule {first.rule_id}: {n} match{'es' if n != 1 else ''}"
        else:
            summary = f"+{n} more match{'es' if n != 1 else ''} for rule {first.rule_id}"
        for delivery, _ in rows:
            delivery.status = "folded"
        created.append(
            _send_one(
                session,
                destination,
                kind=kind,
                rule_id=first.rule_id,
                severity=first.severity,
                channel_id=first.channel_id if kind == "followup" else None,
                summary=summary,
                items=[a.id for _, a in rows],
            )
        )
    return created


def ops_notice(session: Session, destination: str, summary: str, kind: str = "ops") -> int:
    """An operational problem told to the ops destination, through the same outbox. Redacted here,
    the one door every notice goes through, whoever wrote it (the worker, a source, a reload)."""
    return _send_one(
        session, destination, kind="ops", rule_id=kind, severity="high", summary=SECRETS(summary)
    )


def _send_one(session: Session, destination: str, **alert: Any) -> int:
    """A new alert that is not a match (a follow-up, a digest, an ops notice), due to one destination now."""
    stamp = now()
    row = Alert(key=alert_key(), also_seen_in=[], created_at=stamp, **{"items": [], **alert})
    session.add(row)
    session.flush()
    delivery = Delivery(
        alert_id=row.id,
        destination=destination,
        status="pending",
        attempts=0,
        next_attempt_at=stamp,
        created_at=stamp,
    )
    session.add(delivery)
    session.flush()
    return delivery.id


def disabled_destinations(session: Session) -> set[str]:
    return set(
        session.scalars(select(DestinationState.name).where(DestinationState.disabled_at.is_not(None)))
    )


def pending_filter(stamp: datetime):  # type: ignore[no-untyped-def]
    """Deliveries a worker may claim now: pending, due, and not under someone's live lease."""
    return and_(
        Delivery.status == "pending",
        Delivery.next_attempt_at <= stamp,
        or_(Delivery.lease_until.is_(None), Delivery.lease_until < stamp),
    )
