"""Channel leases and worker heartbeats: how source workers on one PostgreSQL share the channels.

Each watched channel is a `channel_leases` row. A worker holds a row until `expires_at`, renews what
it holds, and claims free or expired rows with `FOR UPDATE SKIP LOCKED`, so two workers claiming at
once take different rows and neither waits for the other. Every time here is the database's clock
(`clock`), so workers on hosts whose clocks disagree still agree on when a lease ran out.

These are single statements for the caller's transaction; the policy (how many to hold, when to
give some back) is `bot.store.keeper`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from bot.store.db import chunks
from bot.store.models import ChannelLease, Worker

SOURCE_ROLES = ("all", "source")


@dataclass(frozen=True, slots=True)
class Me:
    """The worker asking: its id, what it runs, and how many channels it may hold."""

    id: str
    role: str
    host: str
    pid: int
    capacity: int
    accounts: tuple[str, ...] = ()


def clock(session: Session) -> datetime:
    """The database's time: the one clock every worker compares leases with."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.now())).astimezone(UTC)
    return datetime.now(UTC)


def beat(session: Session, me: Me, now: datetime) -> None:
    """Say this worker is alive (and what it can hold)."""
    values = {
        "role": me.role,
        "host": me.host,
        "pid": me.pid,
        "accounts": list(me.accounts),
        "capacity": me.capacity,
        "heartbeat_at": now,
        "stopped_at": None,
    }
    stmt = pg_insert(Worker).values(id=me.id, started_at=now, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=[Worker.id], set_=values))


def forget_workers(session: Session, before: datetime) -> None:
    """Workers not heard from since `before`: gone for good (their leases ran out long ago)."""
    session.execute(delete(Worker).where(Worker.heartbeat_at < before))


def stopped(session: Session, worker: str, now: datetime) -> None:
    """A clean stop: the worker's leases are free at once, and it no longer counts towards a share."""
    release(session, worker)
    session.execute(update(Worker).where(Worker.id == worker).values(stopped_at=now))


def list_channels(session: Session, channels: Iterable[str], now: datetime) -> None:
    """Make sure each channel the rules list has its lease row, and mark it listed now."""
    keys = sorted(set(channels))
    for chunk in chunks(keys):
        stmt = pg_insert(ChannelLease).values(
            [{"channel": k, "listed_at": now, "takeovers": 0} for k in chunk]
        )
        session.execute(
            stmt.on_conflict_do_update(index_elements=[ChannelLease.channel], set_={"listed_at": now})
        )


def live_sources(session: Session, now: datetime, within: float) -> dict[str, int]:
    """The source workers that beat within `within` seconds and have not stopped, with their capacity."""
    rows = session.execute(
        select(Worker.id, Worker.capacity).where(
            Worker.role.in_(SOURCE_ROLES),
            Worker.stopped_at.is_(None),
            Worker.heartbeat_at >= now - timedelta(seconds=within),
        )
    )
    return dict(rows.all())


def renew(session: Session, worker: str, channels: Sequence[str], until: datetime) -> set[str]:
    """Extend this worker's leases on `channels`; returns the ones it still holds (the rest were lost:
    they expired and another worker took them)."""
    kept: set[str] = set()
    for chunk in chunks(list(channels)):
        kept.update(
            session.scalars(
                update(ChannelLease)
                .where(ChannelLease.holder == worker, ChannelLease.channel.in_(chunk))
                .values(expires_at=until)
                .returning(ChannelLease.channel)
            )
        )
    return kept


def claim(
    session: Session,
    me: Me,
    among: Sequence[str],
    n: int,
    now: datetime,
    until: datetime,
    account: str | None = None,
) -> tuple[list[str], int]:
    """Claim up to `n` of the channels `among` that nobody holds or whose lease expired. Returns the
    channels claimed and how many of them were taken over from a worker whose lease ran out."""
    if n <= 0 or not among:
        return [], 0
    # Its own rows count as free: after an outage it let go of them locally while they still ran.
    free = or_(ChannelLease.holder.is_(None), ChannelLease.expires_at < now, ChannelLease.holder == me.id)
    rows = session.execute(
        select(ChannelLease.channel, ChannelLease.holder)
        .where(ChannelLease.channel.in_(list(among)), free)
        .order_by(ChannelLease.channel)
        .limit(n)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return [], 0
    keys = [channel for channel, _ in rows]
    # From another worker whose lease ran out; its own, back after an outage, is no takeover.
    taken = and_(ChannelLease.holder.is_not(None), ChannelLease.holder != me.id)
    session.execute(
        update(ChannelLease)
        .where(ChannelLease.channel.in_(keys))
        .values(
            holder=me.id,
            account=account,
            expires_at=until,
            claimed_at=now,
            takeovers=ChannelLease.takeovers + case((taken, 1), else_=0),
        )
    )
    return keys, sum(1 for _, holder in rows if holder not in (None, me.id))


def name_accounts(session: Session, worker: str, accounts: dict[str, str]) -> None:
    """Record which of the worker's accounts watches each channel it holds (the rest: none)."""
    by_account: dict[str | None, list[str]] = {}
    for channel, account in accounts.items():
        by_account.setdefault(account, []).append(channel)
    mine = (ChannelLease.holder == worker,)
    for account, channels in by_account.items():
        for chunk in chunks(sorted(channels)):
            session.execute(
                update(ChannelLease)
                .where(*mine, ChannelLease.channel.in_(chunk), ChannelLease.account.is_distinct_from(account))
                .values(account=account)
            )
    named = [c for cs in by_account.values() for c in cs]
    stale = (ChannelLease.account.is_not(None),)
    if named:
        session.execute(
            update(ChannelLease).where(*mine, *stale, ChannelLease.channel.not_in(named)).values(account=None)
        )
    else:
        session.execute(update(ChannelLease).where(*mine, *stale).values(account=None))


def release(session: Session, worker: str, channels: Sequence[str] | None = None) -> None:
    """Give leases back (all of the worker's, or these): free for the next claim at once."""
    where = [ChannelLease.holder == worker]
    if channels is not None:
        if not channels:
            return
        for chunk in chunks(list(channels)):
            session.execute(
                update(ChannelLease)
                .where(*where, ChannelLease.channel.in_(chunk))
                .values(holder=None, account=None, expires_at=None)
            )
        return
    session.execute(update(ChannelLease).where(*where).values(holder=None, account=None, expires_at=None))


def forget_unlisted(session: Session, before: datetime, now: datetime) -> int:
    """Drop the rows no worker's rules have listed since `before` and nobody holds (a channel taken
    out of the rules everywhere; a worker with older rules still lists its own every few rounds)."""
    free = or_(ChannelLease.holder.is_(None), ChannelLease.expires_at < now)
    return session.execute(delete(ChannelLease).where(ChannelLease.listed_at < before, free)).rowcount or 0


def leases(session: Session) -> list[ChannelLease]:
    return list(session.scalars(select(ChannelLease).order_by(ChannelLease.channel)))


def workers(session: Session) -> list[Worker]:
    return list(session.scalars(select(Worker).order_by(Worker.id)))
