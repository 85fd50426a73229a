"""Which channels this source worker watches, when several share one PostgreSQL (`bot.store.leases`).

Every round (a quarter of the lease time) a worker beats, renews what it holds, and then moves
towards its fair share: the rules' channels divided by the live source workers, rounded up, and
never more than its capacity. Above it, it gives the surplus back; below it, it claims free or
expired channels. Rounding up means the shares cover every channel, and a worker only ever gives
back what is over its own share, so the set settles instead of flapping.

A lease is written to last three quarters of the lease time; with a round every quarter, a dead
worker's channels are claimed by another within the lease time of its last renewal. A worker whose
renewals fail stops watching before its leases can run out, so two workers never poll one channel
on purpose; when they briefly do anyway (a stalled process), the store's idempotency by channel and
message id and the outbox's keys keep every post stored once and alerted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bot import metrics
from bot.errors import first_line
from bot.store import leases as store
from bot.store.db import run_sync
from bot.store.leases import Me

log = logging.getLogger(__name__)

# Told the set held whenever it changes. It must return at once (schedule the work): a round that
# waited for the sources to join channels would let its own leases run out meanwhile.
Changed = Callable[[frozenset[str]], None]
TTL = 0.75  # of the lease time: how long a renewal lasts; rounds come every quarter
FIRST_CLAIM = 2.0  # seconds from a worker's first round (its heartbeat) to its first claims
RELIST = 16  # rounds between rewriting the rules' channel rows (4 lease times)
FORGET_AFTER = timedelta(hours=1)  # a row no worker has listed for this long, and nobody holds, goes


def worker_id() -> str:
    """Unique per process, readable in /healthz: host, pid, and a random tail (a container's pid is
    often 1, and its host name may be reused after a restart)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def me(role: str, capacity: int, accounts: Iterable[str] = ()) -> Me:
    return Me(worker_id(), role, socket.gethostname()[:255], os.getpid(), capacity, tuple(accounts))


@dataclass(slots=True)
class Round:
    """What one round decided, for the caller and the tests."""

    held: frozenset[str]
    claimed: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    takeovers: int = 0
    target: int = 0


def shares(channels: int, capacities: dict[str, int]) -> dict[str, int]:
    """Each live worker's share of the channels: as even as their capacities allow (a worker that can
    hold fewer leaves the rest to the others), each rounded up so that the shares cover them all.
    Every worker computes the same answer from the same rows."""
    out: dict[str, int] = {}
    left = channels
    ranked = sorted(capacities.items(), key=lambda wc: (wc[1], wc[0]))  # the smallest first
    for i, (worker, capacity) in enumerate(ranked):
        out[worker] = min(capacity, math.ceil(left / (len(ranked) - i))) if left > 0 else 0
        left -= out[worker]
    return out


def decide(
    session: Session, me: Me, listed: list[str], held: frozenset[str], lease: float, *, claim: bool = True
) -> Round:
    """One round in the caller's transaction: beat, renew, then give back or (unless not to `claim`)
    claim towards the share."""
    now = store.clock(session)
    ttl = lease * TTL
    until = now + timedelta(seconds=ttl)
    store.beat(session, me, now)
    store.forget_workers(session, now - timedelta(days=1))
    wanted = set(listed)
    # A channel no longer in the rules is given back, not renewed.
    dropped = sorted(held - wanted)
    store.release(session, me.id, dropped)
    kept = store.renew(session, me.id, sorted(held & wanted), until)
    lost = sorted((held & wanted) - kept)
    # A worker silent for as long as a lease lasts is counted out when its leases run out, so the
    # survivors' shares grow in the same round that lets them claim its channels.
    live = store.live_sources(session, now, ttl)
    live[me.id] = me.capacity
    target = shares(len(listed), live)[me.id]
    out = Round(frozenset(kept), lost=lost, target=target)
    if len(kept) > target:
        # The newest in key order go back; any choice works, a stable one keeps the rest still.
        out.released = sorted(kept)[target:]
        store.release(session, me.id, out.released)
        out.held = frozenset(sorted(kept)[:target])
    elif len(kept) < target and claim:
        out.claimed, out.takeovers = store.claim(
            session, me, sorted(wanted - kept), target - len(kept), now, until
        )
        out.held = frozenset(kept | set(out.claimed))
    return out


class LeaseKeeper:
    """Holds this worker's channel leases and tells `on_change` whenever the set it holds changes."""

    def __init__(
        self,
        engine: Engine,
        me: Me,
        lease: float,
        on_change: Changed,
        *,
        capacity: Callable[[], int] | None = None,
        accounts: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.engine = engine
        self.me = me
        self.capacity = capacity  # asked every round: an account lost holds fewer channels
        self.accounts = accounts  # channel -> the account watching it, written on its lease
        self.lease = lease
        self.on_change = on_change
        self.listed: list[str] = []
        self._stored: list[str] | None = None  # the listing last written to the store
        self.held: frozenset[str] = frozenset()
        self.snapshot: dict[str, Any] = {"worker": me.id, "lease_seconds": lease}
        self._renewed = time.monotonic()  # the last round that reached the store
        self._wake = asyncio.Event()
        self._failures = 0
        self._rounds = 0

    @property
    def every(self) -> float:
        return self.lease / 4

    def list(self, channels: Iterable[str]) -> None:
        """The channels the rules list now (on start and on every reload)."""
        self.listed = sorted(set(channels))
        self._wake.set()

    def wake(self) -> None:
        """A round now, not at the next quarter lease (the capacity changed)."""
        self._wake.set()

    async def round(self) -> Round | None:
        """One round; None when the store could not be reached in time (the set is kept until the
        leases could have run out, then dropped)."""
        started = time.monotonic()
        try:
            # A round stuck behind a busy pool must not outlive the leases it renews.
            result = await asyncio.wait_for(run_sync(self.engine, self._round), self.lease * TTL - self.every)
        except Exception as exc:
            self._failures += 1
            metrics.LEASE_RENEWAL_FAILURES.inc()
            if self._failures == 1:
                log.warning(
                    "leases: cannot renew (%s); still watching until they could expire",
                    first_line(exc) or type(exc).__name__,
                )
            if self.held and time.monotonic() - self._renewed > self.lease * TTL - self.every:
                log.warning(
                    "leases: not renewed for %.0fs; watching nothing until the store is back",
                    time.monotonic() - self._renewed,
                )
                self._set(frozenset())
            return None
        if self._failures:
            log.info("leases: renewed again after %d failed round(s)", self._failures)
            self._failures = 0
        self._renewed = started  # the expiries were counted from the round's start
        metrics.LEASE_ROUND_SECONDS.set(time.monotonic() - started)
        if result.lost:
            log.warning(
                "leases: lost %d channel(s) to other workers: %s", len(result.lost), ", ".join(result.lost)
            )
        if result.takeovers:
            metrics.LEASE_TAKEOVERS.inc(result.takeovers)
            log.info("leases: took over %d channel(s) whose worker stopped renewing", result.takeovers)
        self._set(result.held)
        try:
            self.snapshot = await run_sync(self.engine, self._snapshot)
        except Exception as exc:  # only what /healthz shows: the round stands
            log.debug("leases: no snapshot this round (%s)", first_line(exc))
        return result

    def _round(self) -> Round:
        if self.capacity is not None:
            self.me = replace(self.me, capacity=self.capacity())
        listed = self.listed
        with Session(self.engine) as session, session.begin():
            if listed != self._stored or self._rounds % RELIST == 0:
                now = store.clock(session)
                store.list_channels(session, listed, now)
                store.forget_unlisted(session, now - FORGET_AFTER, now)
            # The first round only says this worker is here: workers started together then see
            # one another before any claims, instead of the first claiming everything.
            result = decide(session, self.me, listed, self.held, self.lease, claim=self._rounds > 0)
            if self.accounts is not None:
                store.name_accounts(session, self.me.id, self.accounts())
        self._stored = listed
        self._rounds += 1
        return result

    def _snapshot(self) -> dict[str, Any]:
        with Session(self.engine) as session:
            return {"worker": self.me.id, "lease_seconds": self.lease, **describe(session)}

    def _set(self, held: frozenset[str]) -> None:
        metrics.LEASES_HELD.set(len(held))
        if held != self.held:
            gained, gone = len(held - self.held), len(self.held - held)
            self.held = held
            log.info("leases: holding %d channel(s) (+%d, -%d)", len(held), gained, gone)
            self.on_change(held)

    async def start(self) -> None:
        """The first two rounds: a heartbeat, then, once workers started with this one have beaten
        too, the first claims (so that they split the channels at once, rather than the first of
        them claiming everything and giving half back a round later)."""
        await self.round()
        await asyncio.sleep(FIRST_CLAIM)
        await self.round()

    async def run(self) -> None:
        """Rounds until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every):
                    await self._wake.wait()
            self._wake.clear()
            await self.round()

    async def stop(self) -> None:
        """A clean stop: every lease given back, so the others take the channels at their next round."""
        held, self.held = self.held, frozenset()

        def work() -> None:
            with Session(self.engine) as session, session.begin():
                store.stopped(session, self.me.id, store.clock(session))

        try:
            await run_sync(self.engine, work)
        except Exception as exc:
            log.warning(
                "leases: could not give back %d lease(s) (%s); they expire on their own",
                len(held),
                first_line(exc),
            )


def describe(session: Session) -> dict[str, Any]:
    rows = store.leases(session)
    held: dict[str, int] = {}
    for row in rows:
        if row.holder:
            held[row.holder] = held.get(row.holder, 0) + 1
    return {
        "workers": {
            w.id: {
                "role": w.role,
                "host": w.host,
                "pid": w.pid,
                "accounts": w.accounts,
                "capacity": w.capacity,
                "started_at": _iso(w.started_at),
                "heartbeat_at": _iso(w.heartbeat_at),
                "stopped_at": _iso(w.stopped_at),
                "leases": held.get(w.id, 0),
            }
            for w in store.workers(session)
        },
        "channels": {
            row.channel: {
                "holder": row.holder,
                "account": row.account,
                "expires_at": _iso(row.expires_at),
                "takeovers": row.takeovers,
            }
            for row in rows
        },
    }


def _iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="seconds") if t else None
