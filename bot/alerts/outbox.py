"""The outbox: alerts and their deliveries, written in the ingest transaction, with noise control.

Each stage is one small decision, applied in order to every new match:
stale guard -> silence -> cross-channel dedup -> throttle / digest hold -> one delivery per destination.
All state lives in the database, so a restart loses no hold, silence or follow-up.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from bot.ingest import Changed
from bot.rules.model import RuleMatch
from bot.store import channels as channel_rows
from bot.store.channels import now
from bot.store.models import Alert, Channel, Delivery, DestinationState, Silence

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RulePolicy:
    """What the outbox needs to know of a rule beyond its match."""

    throttle: float | None = None  # seconds
    digest: float | None = None  # seconds


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    dedup_window: float = 86400.0
    max_alert_age: float = 86400.0


def new_key() -> str:
    return f"msg_{uuid.uuid4().hex}"


def channel_label(channel: Channel) -> str:
    if channel.username:
        return f"@{channel.username}"
    return channel.dump or channel.title or f"id:{channel.tg_id}"


class Outbox:
    def __init__(
        self,
        settings: OutboxSettings,
        policies: Callable[[], Mapping[str, RulePolicy]] = dict,
    ) -> None:
        self.settings = settings
        self.policies = policies

    def enqueue(self, session: Session, changed: Sequence[Changed]) -> list[int]:
        stamp = now()
        policies = self.policies()
        silences = session.execute(
            select(Silence.rule_id, Silence.channel).where(Silence.until > stamp)
        ).all()
        deliveries: list[Delivery] = []
        for c in changed:
            if not c.matches or not c.item.alert:
                continue
            if self._stale(c, stamp):
                continue
            for rm, match in c.matches:
                if silences and _silenced(silences, rm.rule_id, c.channel):
                    continue
                if self._dedup(session, rm, c, stamp):
                    continue
                alert = Alert(
                    key=new_key(),
                    kind="match",
                    rule_id=rm.rule_id,
                    severity=rm.severity,
                    match_id=match.id,
                    channel_id=c.channel.id,
                    message_id=c.message_id,
                    fingerprint=c.content.fingerprint,
                    also_seen_in=[],
                    summary=None,
                    items=[],
                    created_at=stamp,
                )
                session.add(alert)
                session.flush()
                hold_key, hold_until = self._hold(session, rm, c.channel, policies.get(rm.rule_id), stamp)
                for dest in dict.fromkeys(rm.notify):
                    deliveries.append(
                        Delivery(
                            alert_id=alert.id,
                            destination=dest,
                            status="held" if hold_key else "pending",
                            attempts=0,
                            next_attempt_at=stamp,
                            hold_key=hold_key,
                            hold_until=hold_until,
                            created_at=stamp,
                        )
                    )
        session.add_all(deliveries)
        session.flush()
        return [d.id for d in deliveries if d.status == "pending"]

    def _stale(self, c: Changed, stamp: datetime) -> bool:
        # A dump's posts carry no date: the guard leaves them alone.
        date = c.item.date
        return date is not None and (stamp - date).total_seconds() > self.settings.max_alert_age

    def _dedup(self, session: Session, rm: RuleMatch, c: Changed, stamp: datetime) -> bool:
        """The same post seen again within the window: note where, and send nothing new."""
        fp = c.content.fingerprint
        if fp is None:
            return False
        since = stamp - timedelta(seconds=self.settings.dedup_window)
        first = session.scalar(
            select(Alert)
            .where(Alert.fingerprint == fp, Alert.rule_id == rm.rule_id, Alert.kind == "match")
            .where(Alert.created_at >= since)
            .order_by(Alert.id)
            .limit(1)
        )
        if first is None:
            return False
        label = channel_label(c.channel)
        if first.channel_id != c.channel.id and label not in first.also_seen_in:
            first.also_seen_in = [*first.also_seen_in, label]
        return True

    def _hold(
        self, session: Session, rm: RuleMatch, channel: Channel, policy: RulePolicy | None, stamp: datetime
    ) -> tuple[str | None, datetime | None]:
        if policy is None:
            return None, None
        if policy.digest:
            window = policy.digest
            end = (int(stamp.timestamp() // window) + 1) * window
            return f"digest:{rm.rule_id}", datetime.fromtimestamp(end, stamp.tzinfo)
        if policy.throttle:
            key = f"throttle:{rm.rule_id}:{channel.id}"
            since = stamp - timedelta(seconds=policy.throttle)
            # The window opens with the last alert that went out unheld for this rule and channel.
            opened = session.scalar(
                select(Alert.created_at)
                .join(Delivery, Delivery.alert_id == Alert.id)
                .where(Alert.rule_id == rm.rule_id, Alert.channel_id == channel.id, Alert.kind == "match")
                .where(Delivery.hold_key.is_(None), Alert.created_at >= since)
                .order_by(Alert.created_at.desc())
                .limit(1)
            )
            if opened is not None:
                return key, opened + timedelta(seconds=policy.throttle)
        return None, None


def _silenced(silences: Sequence[Any], rule_id: str, channel: Channel) -> bool:
    names = channel_rows.names(channel)
    return any(rule == rule_id and (where is None or where in names) for rule, where in silences)


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
    """An operational problem told to the ops destination, through the same outbox."""
    return _send_one(session, destination, kind="ops", rule_id=kind, severity="high", summary=summary)


def _send_one(session: Session, destination: str, **alert: Any) -> int:
    """A new alert that is not a match (a follow-up, a digest, an ops notice), due to one destination now."""
    stamp = now()
    row = Alert(key=new_key(), also_seen_in=[], created_at=stamp, **{"items": [], **alert})
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
