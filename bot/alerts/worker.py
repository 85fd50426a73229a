"""The delivery worker: claim due rows under a lease, send, mark. At least once per alert and destination.

A crash between sending and marking leaves the row's lease to expire, after which it is claimed again,
so only what was in flight is resent, under the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bot import metrics
from bot.alerts.model import AlertView, Permanent, RetryAfter, Sender, SendError, Transient
from bot.alerts.outbox import disabled_destinations, ops_notice, pending_filter
from bot.alerts.render import post_url
from bot.backoff import Backoff
from bot.errors import first_line
from bot.rules.model import Hit
from bot.store.channels import now
from bot.store.db import run_sync
from bot.store.models import Alert, Channel, Delivery, DestinationState, Match, Message

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 2.0
    cap: float = 900.0
    max_attempts: int = 10
    max_age: float = 86400.0


class Worker:
    def __init__(
        self,
        engine: Engine,
        senders: Mapping[str, Sender],
        *,
        retry: RetryPolicy = RetryPolicy(),
        lease: float = 60.0,
        poll_interval: float = 5.0,
        ops_destination: str = "console",
        batch: int = 50,
    ) -> None:
        self.engine = engine
        self.senders = senders
        self.retry = retry
        self.lease = lease
        self.poll_interval = poll_interval
        self.ops_destination = ops_destination
        self.batch = batch
        self.owner = uuid.uuid4().hex[:12]
        self._wake = asyncio.Event()
        self._backoff = Backoff(retry.base, retry.cap)  # full jitter
        self._outage = Backoff(1.0, 60.0, jitter=(1.0, 2.0))  # a database outage: 1-2 s, doubling

    def wake(self, _ids: object = None) -> None:
        """Called when a transaction that wrote deliveries commits: send now, not at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while True:
            # Clear before looking, not after: a commit that lands while we look must wake the next wait.
            self._wake.clear()
            try:
                handled = await self.run_once()
                failures = 0
            except (DBAPIError, OSError) as exc:
                # The database went away: nothing is lost (the rows wait in it), so back off and retry.
                failures += 1
                delay = self._outage.delay(failures)
                log.warning(
                    "delivery worker: database unavailable (%s); retrying in %.0fs", first_line(exc), delay
                )
                await asyncio.sleep(delay)
                continue
            if handled:
                continue
            with contextlib.suppress(TimeoutError):  # polling: the fallback when nothing woke us
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)

    async def run_once(self) -> int:
        """Claim and process one batch; returns how many rows were handled."""
        claimed = await run_sync(self.engine, self._claim)
        if not claimed:
            return 0
        by_dest: dict[str, list[tuple[int, AlertView, datetime]]] = {}
        for delivery_id, dest, view, created in claimed:
            by_dest.setdefault(dest, []).append((delivery_id, view, created))
        # Destinations in parallel; within one destination in order, so its rate limit holds.
        # A TaskGroup, so a failure or a cancellation never leaves a send running behind our back.
        async with asyncio.TaskGroup() as group:
            for dest, rows in by_dest.items():
                group.create_task(self._send_all(dest, rows))
        return len(claimed)

    async def _send_all(self, dest: str, rows: list[tuple[int, AlertView, datetime]]) -> None:
        sender = self.senders.get(dest)
        for delivery_id, view, created in rows:
            if sender is None:
                await run_sync(self.engine, self._dead, delivery_id, f"unknown destination {dest!r}", view)
                continue
            try:
                sent = await sender.send(view)
            except RetryAfter as exc:
                await run_sync(self.engine, self._later, delivery_id, exc.seconds, exc.reason, False)
            except Transient as exc:
                await run_sync(self.engine, self._transient, delivery_id, exc.reason, view, created)
            except Permanent as exc:
                await run_sync(
                    self.engine, self._dead, delivery_id, exc.reason, view, dest if exc.gone else None
                )
            except SendError as exc:  # a sender's own subclass: treat as transient
                await run_sync(self.engine, self._transient, delivery_id, exc.reason, view, created)
            except Exception as exc:  # a bug in a renderer must not stop the other deliveries
                log.exception("delivery %s to %s failed unexpectedly", delivery_id, dest)
                await run_sync(self.engine, self._transient, delivery_id, type(exc).__name__, view, created)
            else:
                await run_sync(self.engine, self._sent, delivery_id, dest, sent.provider_id)
                metrics.DELIVERY_LATENCY.observe(max(0.0, (now() - created).total_seconds()))

    # -- database side ---------------------------------------------------------------------------

    def _claim(self) -> list[tuple[int, str, AlertView, datetime]]:
        stamp = now()
        with Session(self.engine) as session, session.begin():
            disabled = disabled_destinations(session)
            query = select(Delivery).where(pending_filter(stamp)).order_by(Delivery.id).limit(self.batch)
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(session.scalars(query))
            out = []
            for d in rows:
                d.lease_until = stamp + timedelta(seconds=self.lease)
                d.lease_owner = self.owner
                if d.destination in disabled:
                    d.status, d.last_error, d.lease_until = "dead", "destination disabled (410)", None
                    continue
                out.append((d.id, d.destination, build_view(session, d.alert_id), d.created_at))
            return out

    def _sent(self, delivery_id: int, destination: str, provider_id: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(
                    status="sent", sent_at=now(), provider_id=provider_id, lease_until=None, last_error=None
                )
            )
        metrics.DELIVERIES.labels(destination, "sent").inc()

    def _later(self, delivery_id: int, seconds: float, reason: str, count: bool) -> None:
        with Session(self.engine) as session, session.begin():
            d = session.get(Delivery, delivery_id)
            if d is None:
                return
            d.next_attempt_at = now() + timedelta(seconds=seconds)
            d.lease_until, d.last_error = None, reason
            if count:
                d.attempts += 1
            metrics.DELIVERIES.labels(d.destination, "retry").inc()

    def _transient(self, delivery_id: int, reason: str, view: AlertView, created: datetime) -> None:
        with Session(self.engine) as session, session.begin():
            d = session.get(Delivery, delivery_id)
            if d is None:
                return
            d.attempts += 1
            age = (now() - created).total_seconds()
            if d.attempts >= self.retry.max_attempts or age >= self.retry.max_age:
                self._mark_dead(session, d, f"{reason} (after {d.attempts} attempts)", view)
                return
            delay = self._backoff.delay(d.attempts)
            d.next_attempt_at = now() + timedelta(seconds=delay)
            d.lease_until, d.last_error = None, reason
            metrics.DELIVERIES.labels(d.destination, "retry").inc()
            # One line per failed attempt: a destination failing quietly for hours is what a user
            # most needs to see before it becomes a dead letter.
            log.info(
                "delivery %s to %s failed (attempt %d of %d), retrying in %.0fs: %s",
                d.id,
                d.destination,
                d.attempts,
                self.retry.max_attempts,
                delay,
                reason,
            )

    def _dead(self, delivery_id: int, reason: str, view: AlertView, disable: str | None = None) -> None:
        with Session(self.engine) as session, session.begin():
            d = session.get(Delivery, delivery_id)
            if d is None:
                return
            self._mark_dead(session, d, reason, view)
            if disable:
                state = session.get(DestinationState, disable) or DestinationState(name=disable)
                state.disabled_at, state.reason = now(), reason
                session.add(state)
                if disable != self.ops_destination:
                    ops_notice(session, self.ops_destination, f"destination {disable} disabled: {reason}")

    def _mark_dead(self, session: Session, d: Delivery, reason: str, view: AlertView) -> None:
        d.status, d.last_error, d.lease_until = "dead", reason, None
        metrics.DELIVERIES.labels(d.destination, "dead").inc()
        log.warning("delivery %s to %s is dead: %s", d.id, d.destination, reason)
        # An ops notice about an ops notice would loop: those die quietly, in the log only.
        if view.kind != "ops" and d.destination != self.ops_destination:
            ops_notice(
                session,
                self.ops_destination,
                f"dead letter: alert {view.rule_id} to {d.destination}: {reason}",
            )


def build_view(session: Session, alert_id: int) -> AlertView:
    """What an alert says, read from the store in one query."""
    alert, message, channel, match = session.execute(
        select(Alert, Message, Channel, Match)
        .outerjoin(Message, Message.id == Alert.message_id)
        .outerjoin(Channel, Channel.id == Alert.channel_id)
        .outerjoin(Match, Match.id == Alert.match_id)
        .where(Alert.id == alert_id)
    ).one()
    items: tuple[AlertView, ...] = ()
    if alert.items:
        items = tuple(build_view(session, i) for i in alert.items[:50])
    url = post_url(channel.username if channel else None, message.msg_id if message else None)
    return AlertView(
        id=alert.key,
        kind=alert.kind,  # type: ignore[arg-type]
        rule_id=alert.rule_id or "",
        severity=alert.severity or "info",
        channel_id=channel.tg_id if channel else None,
        channel_username=channel.username if channel else None,
        channel_title=(channel.title or channel.dump) if channel else None,
        message_id=message.msg_id if message else None,
        date=message.date if message else None,
        url=url,
        title=message.title if message else "",
        text=message.text if message else "",
        hashtags=tuple(message.hashtags) if message else (),
        forwarded_from=message.forwarded_from if message else None,
        fingerprint=message.fingerprint if message else None,
        hits=tuple(Hit(t, s, e) for t, s, e in match.hits) if match else (),
        also_seen_in=tuple(alert.also_seen_in or ()),
        summary=alert.summary,
        items=items,
    )


def counts(session: Session, delivery_ids: list[int] | None = None) -> dict[str, int]:
    query = select(Delivery.status, func.count()).group_by(Delivery.status)
    if delivery_ids is not None:
        query = query.where(Delivery.id.in_(delivery_ids))
    return {status: n for status, n in session.execute(query).all()}


def retry_dead(session: Session, delivery_id: int | None = None) -> int:
    """Send dead deliveries again (all of them, or one)."""
    query = update(Delivery).where(Delivery.status == "dead")
    if delivery_id is not None:
        query = query.where(Delivery.id == delivery_id)
    res = session.execute(
        query.values(status="pending", attempts=0, next_attempt_at=now(), lease_until=None, created_at=now())
    )
    return res.rowcount or 0
