"""Channel leases on PostgreSQL: claim, renew, expire; never one channel in two workers' hands;
capacity; a fair share after a worker joins, without flapping; takeover after a worker dies.

Time passing for a dead worker is its rows growing old: its heartbeat and its leases are moved back
by the lease time, which is what the others see of a process killed that long ago.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, Interval, literal, select, update
from sqlalchemy.orm import Session

from bot.store.keeper import Round, decide
from bot.store.leases import Me, clock, list_channels, release
from bot.store.models import ChannelLease, Worker

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

LEASE = 60.0
CHANNELS = [f"chan{i:03d}" for i in range(30)]


def worker(name: str, capacity: int = 450) -> Me:
    return Me(name, "source", "test", 1, capacity)


class Workers:
    """Workers running rounds against one store, each remembering what it holds, as LeaseKeeper does."""

    def __init__(self, store: Engine, channels: list[str] = CHANNELS) -> None:
        self.store = store
        self.channels = channels
        self.held: dict[str, frozenset[str]] = {}
        with Session(store) as session, session.begin():
            list_channels(session, channels, clock(session))

    def round(self, me: Me) -> Round:
        with Session(self.store) as session, session.begin():
            result = decide(session, me, self.channels, self.held.get(me.id, frozenset()), LEASE)
        self.held[me.id] = result.held
        return result

    def settle(self, *workers: Me, rounds: int = 4) -> None:
        for _ in range(rounds):
            for w in workers:
                self.round(w)

    def holders(self) -> dict[str, str | None]:
        with Session(self.store) as session:
            return dict(session.execute(select(ChannelLease.channel, ChannelLease.holder)).all())

    def age(self, name: str, seconds: float) -> None:
        """`name` went silent `seconds` ago: its heartbeat and lease expiries move back."""
        back = literal(timedelta(seconds=seconds), Interval())
        with Session(self.store) as session, session.begin():
            session.execute(
                update(Worker).where(Worker.id == name).values(heartbeat_at=Worker.heartbeat_at - back)
            )
            session.execute(
                update(ChannelLease)
                .where(ChannelLease.holder == name)
                .values(expires_at=ChannelLease.expires_at - back)
            )
        del self.held[name]  # dead: it remembers nothing


def test_a_lone_worker_claims_every_channel_renews_them_and_loses_them_when_it_stops_renewing(
    store: Engine,
) -> None:
    ws = Workers(store)
    a, b = worker("a"), worker("b")
    first = ws.round(a)
    assert first.held == set(CHANNELS) and first.claimed == CHANNELS and first.takeovers == 0
    with Session(store) as session:
        expiries = dict(session.execute(select(ChannelLease.channel, ChannelLease.expires_at)).all())
    again = ws.round(a)
    assert again.held == set(CHANNELS) and again.claimed == [] and again.lost == []
    with Session(store) as session:
        renewed = dict(session.execute(select(ChannelLease.channel, ChannelLease.expires_at)).all())
    assert all(renewed[c] >= expiries[c] for c in CHANNELS)

    # b arrives while a's leases are fresh: nothing is free, so b waits its turn.
    assert ws.round(b).held == frozenset()
    ws.age("a", LEASE)  # a was killed a lease ago
    taken = ws.round(b)
    assert taken.held == set(CHANNELS) and taken.takeovers == len(CHANNELS)
    assert set(ws.holders().values()) == {"b"}
    with Session(store) as session:
        assert set(session.scalars(select(ChannelLease.takeovers))) == {1}


def test_a_lease_not_yet_expired_is_not_taken_over(store: Engine) -> None:
    ws = Workers(store)
    a, b = worker("a"), worker("b")
    ws.round(a)
    ws.age("a", LEASE * 0.5)  # silent for half a lease: its leases (0.75 of one) still run
    assert ws.round(b).held == frozenset()
    assert set(ws.holders().values()) == {"a"}


def test_capacity_is_honoured(store: Engine) -> None:
    ws = Workers(store)
    small, other = worker("small", capacity=4), worker("other", capacity=7)
    ws.settle(small, other)
    assert len(ws.held["small"]) == 4 and len(ws.held["other"]) == 7
    counts: dict[str | None, int] = {}
    for holder in ws.holders().values():
        counts[holder] = counts.get(holder, 0) + 1
    assert counts == {"small": 4, "other": 7, None: len(CHANNELS) - 11}


def test_a_worker_that_joins_gets_a_fair_share_and_then_nothing_moves(store: Engine) -> None:
    ws = Workers(store)
    a, b, c = worker("a"), worker("b"), worker("c")
    ws.settle(a)
    assert len(ws.held["a"]) == 30
    ws.settle(a, b)
    assert sorted(len(h) for h in ws.held.values()) == [15, 15]
    ws.settle(a, b, c)
    assert sorted(len(h) for h in ws.held.values()) == [10, 10, 10]
    assert set().union(*ws.held.values()) == set(CHANNELS)
    # Settled: more rounds claim and release nothing.
    for _ in range(5):
        for w in (a, b, c):
            r = ws.round(w)
            assert r.claimed == [] and r.released == [] and r.lost == [], (w.id, r)


def test_a_dead_workers_channels_are_shared_by_the_survivors(store: Engine) -> None:
    ws = Workers(store)
    a, b, c = worker("a"), worker("b"), worker("c")
    ws.settle(a, b, c)
    dead = ws.held["c"]
    ws.age("c", LEASE)
    ws.settle(a, b)
    assert sorted(len(h) for h in ws.held.values()) == [15, 15]
    assert dead <= ws.held["a"] | ws.held["b"]
    assert "c" not in ws.holders().values()


def test_a_clean_stop_frees_the_channels_at_once(store: Engine) -> None:
    ws = Workers(store)
    a, b = worker("a"), worker("b")
    ws.settle(a, b)
    with Session(store) as session, session.begin():
        release(session, "a")
        session.execute(update(Worker).where(Worker.id == "a").values(stopped_at=clock(session)))
    del ws.held["a"]
    ws.round(b)
    assert ws.held["b"] == set(CHANNELS)


def test_workers_claiming_at_once_never_hold_one_channel(store: Engine) -> None:
    """Four threads, one transaction each per round, all starting each round together: every round's
    sets are disjoint (SKIP LOCKED hands each claimer different rows), and they end up covering all."""
    ws = Workers(store)
    me = [worker(f"w{i}") for i in range(4)]
    barrier = threading.Barrier(len(me))
    results: dict[str, list[frozenset[str]]] = {w.id: [] for w in me}
    failures: list[BaseException] = []

    def run(w: Me) -> None:
        try:
            for _ in range(8):
                barrier.wait(timeout=30)
                results[w.id].append(ws.round(w).held)
        except BaseException as exc:  # surfaced below
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(w,)) for w in me]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures
    for step in range(8):
        sets = [results[w.id][step] for w in me]
        seen: set[str] = set()
        for held in sets:
            assert not (seen & held), f"round {step}: {sorted(seen & held)} held twice"
            seen |= held
    final = [results[w.id][-1] for w in me]
    assert set().union(*final) == set(CHANNELS)
    assert all(len(h) <= 8 for h in final)  # each at most its share, ceil(30 / 4)


def test_a_channel_taken_out_of_the_rules_is_given_back_and_its_row_forgotten_once_unlisted(
    store: Engine,
) -> None:
    from bot.store.leases import forget_unlisted

    ws = Workers(store)
    a, b = worker("a"), worker("b")
    ws.settle(a, b)
    gone = sorted(ws.held["a"])[0]
    ws.channels = [c for c in CHANNELS if c != gone]
    r = ws.round(a)
    assert gone not in r.held and gone not in ws.holders().values()
    with Session(store) as session, session.begin():
        now = clock(session)
        list_channels(session, ws.channels, now)  # the rules as they are now, listed again
        # Not forgotten while some worker may still list it (listed within the last hour) ...
        assert forget_unlisted(session, now - timedelta(hours=1), now) == 0
        # ... and forgotten once nobody has listed it since (here: since the listing just now).
        assert forget_unlisted(session, now, now) == 1
    assert gone not in ws.holders() and len(ws.holders()) == len(CHANNELS) - 1


def test_a_worker_with_little_capacity_leaves_the_rest_to_the_others(store: Engine) -> None:
    ws = Workers(store)
    small, big = worker("small", capacity=4), worker("big")
    ws.settle(small, big)
    assert len(ws.held["small"]) == 4 and len(ws.held["big"]) == len(CHANNELS) - 4
    assert None not in ws.holders().values()


def test_a_worker_back_from_a_store_outage_reclaims_its_own_channels_without_a_takeover(
    store: Engine,
) -> None:
    ws = Workers(store)
    a = worker("a")
    ws.round(a)
    ws.age("a", LEASE)  # its renewals failed for a lease: it let go of everything, as LeaseKeeper does
    back = ws.round(a)
    assert back.held == set(CHANNELS) and back.takeovers == 0
    with Session(store) as session:
        assert set(session.scalars(select(ChannelLease.takeovers))) == {0}
