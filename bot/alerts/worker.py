"""The delivery worker: claim due rows under a lease, send, mark. At least once per alert and destination.

Each destination has a lane of its own: a task that claims only that destination's rows and sends
them one after another, paced by the destination's rate limiter and bounded by its timeout. Lanes
run side by side, so a destination that hangs holds up its own alerts and no one else's.

A crash between sending and marking leaves the row's lease to expire, after which it is claimed again,
so only what was in flight is resent, under the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bot import metrics
from bot.alerts.model import AlertView, Permanent, RetryAfter, Sender, SendError
from bot.alerts.outbox import disabled_destinations, ops_notice, pending_filter
from bot.alerts.render import also_seen_line, post_url
from bot.backoff import Backoff
from bot.errors import first_line
from bot.redact import SECRETS
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
    """Delivery, one lane per destination: each claims only its own destination's rows and sends
    them in order, under its own rate limit and timeout, so a destination that hangs delays itself
    and nothing else."""

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
        send_timeout: float | None = None,
    ) -> None:
        self.engine = engine
        self.senders = senders
        self.retry = retry
        self.lease = lease
        self.poll_interval = poll_interval
        self.ops_destination = ops_destination
        self.batch = batch
        self._send_timeout = send_timeout
        self.owner = uuid.uuid4().hex[:12]
        self._wake = asyncio.Event()
        self._backoff = Backoff(retry.base, retry.cap)  # full jitter
        self._outage = Backoff(1.0, 60.0, jitter=(1.0, 2.0))  # a database outage: 1-2 s, doubling
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # lanes told of new rows while they were looking
        self._looked = False  # since `run` started
        self.running = False  # `run` is delivering: a drain only watches it

    @property
    def send_timeout(self) -> float:
        """One send never outlives half the lease, so its row is marked before another worker may
        claim it: the senders' own HTTP timeouts are shorter; this bounds what they do not cover
        (a rate limiter's wait, Telegram's resends)."""
        return self._send_timeout or self.lease / 2

    @property
    def idle(self) -> bool:
        """`run` has looked since the last wake-up, and no lane is sending: nothing due is in hand."""
        return self._looked and not self._lanes and not self._wake.is_set()

    def wake(self, _ids: object = None) -> None:
        """Called when a transaction that wrote deliveries commits: send now, not at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: look for due rows on every wake-up (and every `poll_interval`), and keep
        one lane running for each destination that has some."""
        failures = 0
        self._looked = False
        self.running = True
        try:
            while True:
                # Clear before looking, not after: a commit that lands while we look must wake the next wait.
                self._wake.clear()
                try:
                    due, soonest = await run_sync(self.engine, self._due)
                    failures = 0
                except (DBAPIError, OSError) as exc:
                    # The database went away: nothing is lost (the rows wait in it), so back off and retry.
                    failures += 1
                    delay = self._outage.delay(failures)
                    log.warning(
                        "delivery worker: database unavailable (%s); retrying in %.0fs",
                        first_line(exc),
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                for dest in due:
                    self._start(dest)
                self._looked = True
                # Until a commit wakes us, the next retry is due, or the poll (for what other
                # workers left behind).
                wait = self.poll_interval if soonest is None else min(self.poll_interval, soonest)
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
                # arrives as the event is set, and then SIGTERM cannot stop the worker.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, wait)):
                        await self._wake.wait()
        finally:
            self.running = False
            lanes = list(self._lanes.values())
            for lane in lanes:
                lane.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)

    def _start(self, dest: str) -> None:
        if dest in self._lanes:
            # Its claim may have looked before this row committed: it must look once more.
            self._again.add(dest)
            return
        self._lanes[dest] = asyncio.create_task(self._lane(dest), name=f"delivery:{dest}")

    async def _lane(self, dest: str) -> None:
        """One destination's rows, batch after batch, until it has none due."""
        try:
            while True:
                self._again.discard(dest)
                claimed = await run_sync(self.engine, self._claim, dest)
                if claimed:
                    await self._send_all(dest, claimed, time.monotonic())
                    self.wake()  # a dead letter wrote an ops notice, maybe for another lane
                elif dest not in self._again:
                    return
        except (DBAPIError, OSError) as exc:
            # The loop's next look (it backs off while the database is away) starts the lane again.
            log.warning("delivery to %s: database unavailable (%s)", dest, first_line(exc))
        except Exception:
            # A bug, not an outage: said loudly; the next look starts the lane again.
            log.exception("delivery to %s failed", dest)
        finally:
            # In the same step as the decision to stop: a wake-up from now on starts a new lane.
            self._lanes.pop(dest, None)

    async def run_once(self) -> int:
        """One batch for every destination with due rows, the destinations in parallel; returns how many
        rows were handled. For stepping the worker by hand (tests); `run` is what delivers."""
        dests, _ = await run_sync(self.engine, self._due)
        claimed = {dest: await run_sync(self.engine, self._claim, dest) for dest in dests}
        started = time.monotonic()
        # A TaskGroup, so a failure or a cancellation never leaves a send running behind our back.
        async with asyncio.TaskGroup() as group:
            for dest, rows in claimed.items():
                if rows:
                    group.create_task(self._send_all(dest, rows, started))
        return sum(len(rows) for rows in claimed.values())

    async def _send_all(self, dest: str, rows: list[tuple[int, AlertView, datetime]], claimed: float) -> None:
        """In order, so the destination's rate limit holds and its alerts arrive as they were made.

        Each outcome is written while the next row is sent, not before: waiting for the store (a
        writer shared with ingest) between two sends would make every alert wait for every commit.
        """
        sender = self.senders.get(dest)
        marks: list[asyncio.Future[None]] = []
        n = 0
        try:
            for n, (delivery_id, view, created) in enumerate(rows):
                if any(m.done() and not m.cancelled() and m.exception() for m in marks):
                    break  # the store failed a write: stop sending what could not be marked
                if n and time.monotonic() - claimed > self.lease - self.send_timeout:
                    # Not enough lease left for one more send: hand the rest back rather than send on
                    # a lease another worker may take over.
                    marks.append(self._write(self._release, [r[0] for r in rows[n:]]))
                    break
                if sender is None:
                    marks.append(self._write(self._dead, delivery_id, f"unknown destination {dest!r}", view))
                    continue
                fn, *args = await self._send_one(sender, dest, delivery_id, view, created)
                marks.append(self._write(fn, *args))
        except asyncio.CancelledError:
            # Stopping (or a drain's deadline): what was never started is due again at once; the row
            # in flight keeps its lease, since it may have arrived.
            if rows[n + 1 :]:
                marks.append(self._write(self._release, [r[0] for r in rows[n + 1 :]]))
            await _settled(marks, return_exceptions=True)
            raise
        await _settled(marks)

    def _write(self, fn: Callable[..., object], *args: object) -> asyncio.Future[None]:
        """Store work, queued now (in order, on SQLite's one writer thread) and awaited later."""
        return asyncio.ensure_future(run_sync(self.engine, fn, *args))  # type: ignore[arg-type]

    async def _send_one(
        self, sender: Sender, dest: str, delivery_id: int, view: AlertView, created: datetime
    ) -> tuple[Any, ...]:
        """Send once; returns the write that records the outcome, as (function, *arguments)."""
        try:
            async with asyncio.timeout(self.send_timeout):
                sent = await sender.send(view)
        except RetryAfter as exc:
            return (self._later, delivery_id, exc.seconds, SECRETS(exc.reason), False)
        except Permanent as exc:
            return (self._dead, delivery_id, SECRETS(exc.reason), view, dest if exc.gone else None)
        except SendError as exc:  # Transient, or a sender's own subclass: retried with backoff
            return (self._transient, delivery_id, SECRETS(exc.reason), view, created)
        except TimeoutError:
            reason = f"{dest}: no answer within {self.send_timeout:.0f}s"
            return (self._transient, delivery_id, reason, view, created)
        except Exception as exc:  # a bug in a renderer must not stop the other deliveries
            log.exception("delivery %s to %s failed unexpectedly", delivery_id, dest)
            return (self._transient, delivery_id, type(exc).__name__, view, created)
        metrics.DELIVERY_LATENCY.observe(max(0.0, (now() - created).total_seconds()))
        return (self._sent, delivery_id, dest, sent.provider_id)

    # -- database side ---------------------------------------------------------------------------

    def _due(self) -> tuple[list[str], float | None]:
        """Destinations with rows a worker may claim now, and in how many seconds the next pending
        row waiting for its retry is due (None: none waits)."""
        stamp = now()
        with Session(self.engine) as session:
            due = select(Delivery.destination).where(pending_filter(stamp)).distinct()
            dests = list(session.scalars(due))
            soonest = session.scalar(
                select(func.min(Delivery.next_attempt_at)).where(
                    Delivery.status == "pending", Delivery.next_attempt_at > stamp
                )
            )
        return dests, None if soonest is None else (soonest - stamp).total_seconds()

    def _claim(self, destination: str) -> list[tuple[int, AlertView, datetime]]:
        stamp = now()
        with Session(self.engine) as session, session.begin():
            disabled = disabled_destinations(session)
            query = (
                select(Delivery)
                .where(pending_filter(stamp), Delivery.destination == destination)
                .order_by(Delivery.id)
                .limit(self.batch)
            )
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
                out.append((d.id, build_view(session, d.alert_id, d.destination), d.created_at))
            return out

    def _release(self, delivery_ids: list[int]) -> None:
        """Our leases on rows not sent yet, given up: due again for whoever claims next."""
        with self.engine.begin() as conn:
            conn.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_(delivery_ids),
                    Delivery.lease_owner == self.owner,
                    Delivery.status == "pending",
                )
                .values(lease_until=None)
            )

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


def build_view(session: Session, alert_id: int, destination: str | None = None) -> AlertView:
    """What an alert says, read from the store in one query (an update: two more, for the alert it
    revises and the message that alert became at `destination`)."""
    alert, message, channel, match = session.execute(
        select(Alert, Message, Channel, Match)
        .outerjoin(Message, Message.id == Alert.message_id)
        .outerjoin(Channel, Channel.id == Alert.channel_id)
        .outerjoin(Match, Match.id == Alert.match_id)
        .where(Alert.id == alert_id)
    ).one()
    if alert.kind == "update" and alert.items:
        revised = build_view(session, alert.items[0])
        edit_of = session.scalar(
            select(Delivery.provider_id).where(
                Delivery.alert_id == alert.items[0],
                Delivery.destination == destination,
                Delivery.status == "sent",
            )
        )
        return replace(
            revised,
            id=alert.key,
            kind="update",
            summary=also_seen_line(revised),
            revises=revised.id,
            edit_of=edit_of,
        )
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
        story_id=alert.story_id,
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


async def _settled(marks: list[asyncio.Future[None]], *, return_exceptions: bool = False) -> None:
    """Await the outcome writes, each shielded: cancelling the lane (SIGTERM, a drain's deadline)
    must not cancel a "sent" mark still queued for the writer thread, or the alert goes out again
    after the restart. The store's release waits for what is queued."""
    await asyncio.gather(*(asyncio.shield(m) for m in marks), return_exceptions=return_exceptions)
