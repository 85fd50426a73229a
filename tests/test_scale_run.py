"""Scale-out, from outside real processes on a PostgreSQL server of the test's own: three
`run --role source` workers and two `run --role delivery` share 300 loopback t.me channels while
new posts arrive. A source worker is killed with SIGKILL, three times over (a fresh one replaces
it each time): its channels are held by the others within the lease time, the newcomer gets its
share, every post is stored, and every matching post reaches the loopback webhook exactly once."""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session
from werkzeug import Request, Response

from bot.store.models import Channel, ChannelLease, Delivery, Message
from tests.cli import tgs
from tests.pg_server import PgServer
from tests.test_health_run import Running, alert_hook, ops_hook, write_rules
from tests.test_run import wait_for
from tests.test_web_source import page_html

CHANNELS = [f"chan{i:03d}" for i in range(300)]
LEASE = 8.0  # seconds: short, so that three kills fit in a test
ALERT_HOOK = "/alerts"


class Channels:
    """300 channels' posts, served as t.me/s pages (the newest 20, as t.me shows them)."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.posts: dict[str, list[tuple[int, str]]] = {
            c: [(1, "Старт"), (2, "Обычные новости")] for c in CHANNELS
        }
        self.lock = threading.Lock()
        self.matching: set[tuple[str, int]] = set()
        httpserver.expect_request(re.compile(r"^/s/chan\d+$")).respond_with_handler(self.page)

    def page(self, request: Request) -> Response:
        name = request.path.rsplit("/", 1)[1]
        with self.lock:
            posts = list(self.posts[name][-20:])
        # Each channel its own Telegram id (in data-view), as real pages give them.
        tg_id = 1_000_000 + CHANNELS.index(name)
        return Response(page_html(posts, channel=name, tg_id=tg_id), content_type="text/html")

    def post(self, rng: random.Random) -> None:
        name = rng.choice(CHANNELS)
        # Words of their own for every post: look-alike posts would be one story, alerted once.
        words = " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=6)) for _ in range(10))
        with self.lock:
            mid = self.posts[name][-1][0] + 1
            match = mid % 3 == 0
            self.posts[name].append((mid, f"Blackout: {words}" if match else words))
            if match:
                self.matching.add((name, mid))

    def total(self) -> int:
        with self.lock:
            return sum(len(p) for p in self.posts.values())


def worker_id(monitor: Running) -> str:
    _, body = monitor.wait_health(lambda s, b: "leases" in b, "the worker's lease view")
    return body["leases"]["worker"]


def holders(engine: Engine) -> Counter[str | None]:
    with Session(engine) as session:
        return Counter(session.scalars(select(ChannelLease.holder)))


def shared(engine: Engine, workers: set[str]) -> Counter[str | None] | None:
    """Who holds what, once exactly `workers` hold every channel, none more than its third."""
    held = holders(engine)
    return held if set(held) == workers and max(held.values()) <= len(CHANNELS) // 3 else None


def taken_from(engine: Engine, victim: str) -> bool:
    held = holders(engine)
    return victim not in held and None not in held


def test_killed_source_workers_channels_move_within_the_lease_and_every_match_alerts_once(
    httpserver: HTTPServer, tmp_path: Path, pg: PgServer
) -> None:
    channels = Channels(httpserver)
    alerts = alert_hook(httpserver, ALERT_HOOK)
    ops_hook(httpserver)
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rules(rules / "watch.yaml", CHANNELS, httpserver, alert_hook=ALERT_HOOK)
    base = httpserver.url_for("/").rstrip("/")
    env = {
        "DATABASE_URL": pg.url,
        "TGSENTINEL_WEB_INTERVAL": "4",
        "TGSENTINEL_WEB_RPM": "9000",
        "TGSENTINEL_CHANNEL_LEASE": str(LEASE),
        "TGSENTINEL_POLL_INTERVAL": "0.5",
        "TGSENTINEL_HEARTBEAT": "0",
    }
    engine = create_engine(pg.url)
    # The schema first, from one process: four migrating one empty database at once would race.
    from bot.store.migrate import open_store

    open_store(pg.url).dispose()

    def source(n: int) -> Running:
        (tmp_path / f"s{n}").mkdir()
        return Running(tmp_path / f"s{n}", rules, base, TGSENTINEL_ROLE="source", **env)

    # Two delivery workers claiming from one outbox: each alert still reaches the webhook once.
    deliveries = []
    for n in range(2):
        (tmp_path / f"d{n}").mkdir()
        deliveries.append(Running(tmp_path / f"d{n}", rules, base, TGSENTINEL_ROLE="delivery", **env))
    sources = [source(n) for n in range(3)]
    started = 3
    try:
        ids = {worker_id(m): m for m in sources}

        def baselined() -> bool:
            with Session(engine) as session:
                n = session.scalar(
                    select(func.count()).select_from(Channel).where(Channel.last_seen_id.is_not(None))
                )
            return n == len(CHANNELS)

        wait_for(baselined, timeout=90, what="every channel's first page stored")
        held = wait_for(
            lambda: shared(engine, set(ids)), timeout=5 * LEASE, what="the three workers holding a third each"
        )
        assert sum(held.values()) == len(CHANNELS)
        # Who holds what, as /healthz and `status` show it.
        _, body = sources[0].wait_health(
            lambda s, b: sum(1 for c in b["leases"]["channels"].values() if c["holder"]) == len(CHANNELS),
            "every lease in the worker's view",
        )
        view = body["leases"]
        assert set(view["workers"]) >= set(ids)
        assert all(
            view["workers"][w]["heartbeat_at"] and view["workers"][w]["leases"] == held[w] for w in ids
        )
        assert {c["holder"] for c in view["channels"].values()} == set(ids)
        assert all(c["expires_at"] for c in view["channels"].values())
        shown = tgs("status", "--db", pg.url, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        for w in ids:
            assert w in shown.stdout.decode()

        rng = random.Random(15)
        posting = threading.Event()
        posting.set()

        def poster() -> None:
            while posting.is_set():
                channels.post(rng)
                time.sleep(0.02)  # the rate posts arrive at, not a wait for anything

        thread = threading.Thread(target=poster, daemon=True)
        thread.start()
        takeovers = []
        for _ in range(3):
            victim_id = rng.choice(sorted(ids))
            victim = ids.pop(victim_id)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(timeout=10)
            killed = time.monotonic()
            wait_for(
                lambda v=victim_id: taken_from(engine, v),
                timeout=3 * LEASE,
                what=f"{victim_id}'s channels held by the others",
            )
            takeovers.append(time.monotonic() - killed)
            fresh = source(started)
            started += 1
            ids[worker_id(fresh)] = fresh
            sources.append(fresh)
            wait_for(lambda: shared(engine, set(ids)), timeout=5 * LEASE, what="the newcomer's share")
        posting.clear()
        thread.join(timeout=5)
        # Each takeover within the lease time, and the round that notices it.
        assert max(takeovers) < LEASE + 1.5, takeovers

        total = channels.total()

        def stored() -> bool:
            with Session(engine) as session:
                return session.scalar(select(func.count()).select_from(Message)) == total

        wait_for(stored, timeout=60, what=f"all {total} posts stored")
        want = set(channels.matching)
        assert len(want) > 50

        def delivered() -> bool:
            with Session(engine) as session:
                pending = session.scalar(
                    select(func.count()).select_from(Delivery).where(Delivery.status != "sent")
                )
            got = {(a["channel"]["username"], a["message"]["id"]) for a in alerts.items if "message" in a}
            return pending == 0 and got >= want

        wait_for(delivered, timeout=90, what="every matching post alerted")
        seen = Counter((a["channel"]["username"], a["message"]["id"]) for a in alerts.items if "message" in a)
        assert set(seen) == want
        assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:10]
        with Session(engine) as session:
            assert session.scalar(select(func.count(func.distinct(Message.id)))) == total
            # Both delivery workers sent some: the once-only above held with two claiming.
            senders = select(func.count(func.distinct(Delivery.lease_owner))).where(Delivery.status == "sent")
            assert session.scalar(senders) == 2
        for m in [*deliveries, *ids.values()]:
            m.stop()
    except AssertionError:
        for m in [*deliveries, *sources]:
            print(
                f"--- {m.settings['TGSENTINEL_ROLE']} worker, pid {m.proc.pid}:", *m.log.items[-40:], sep="\n"
            )
        raise
    finally:
        for m in [*deliveries, *sources]:
            m.__exit__(None, None, None)
        engine.dispose()
