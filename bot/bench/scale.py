"""`tgsentinel bench scale`: source workers sharing channels on one PostgreSQL, as real processes.

A loopback t.me serves `channels` channels (the preview's markup, each channel its own id) while new
posts arrive at `rate` a second across them. `workers` real `tgsentinel run --role source` processes
share them on a schema of the run's own. Measured:

- steady state, over `seconds`: each worker's CPU (from /proc) against the channels it holds, so
  channels per worker per core at the poll interval; polls a second; how many channels each worker
  says are up to date; PostgreSQL's load (transactions and rows written a second, from
  pg_stat_database, and each worker's last lease round);
- a `kill -9` of one worker: the time until the others hold all of its channels;
- a replacement worker: the time until it holds its fair share.
"""

from __future__ import annotations

import base64
import html
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from bot.bench.seed import log, scratch_url
from bot.bench.soak import free_port
from bot.errors import InputError
from bot.store.models import Channel, ChannelLease

PER_PAGE = 20
_WORDS = ["sanctions", "grid", "outage", "border", "talks", "market", "strike", "ceasefire", "report", "port"]


class _Channels:
    def __init__(self, n: int) -> None:
        self.names = [f"scale{i:05d}" for i in range(n)]
        self.ids = {name: 1_500_000_000 + i for i, name in enumerate(self.names)}  # each its own
        self.newest = dict.fromkeys(self.names, 2)
        self.polls = 0
        self._lock = threading.Lock()

    def page(self, name: str) -> str | None:
        with self._lock:
            newest = self.newest.get(name)
            self.polls += 1
        if newest is None:
            return None
        posts = "".join(
            _post(name, self.ids[name], mid) for mid in range(max(1, newest - PER_PAGE + 1), newest + 1)
        )
        return (
            '<html><body><div class="tgme_channel_info"><div class="tgme_channel_info_header_title">'
            f'<span>{name}</span></div></div><section class="tgme_channel_history">{posts}</section>'
            "</body></html>"
        )

    def post(self, rng: random.Random) -> None:
        name = rng.choice(self.names)
        with self._lock:
            self.newest[name] += 1


def _post(name: str, tg_id: int, mid: int) -> str:
    view = base64.urlsafe_b64encode(f'{{"c":-{tg_id},"p":{mid}}}'.encode()).decode().rstrip("=")
    rng = random.Random(f"{name}/{mid}")
    words = html.escape(" ".join(rng.choice(_WORDS) + str(rng.randint(0, 999)) for _ in range(25)))
    return (
        '<div class="tgme_widget_message_wrap js-widget_message_wrap"><div class="tgme_widget_message '
        f'js-widget_message" data-post="{name}/{mid}" data-view="{view}">'
        '<div class="tgme_widget_message_bubble">'
        f'<div class="tgme_widget_message_text js-message_text" dir="auto">{words}</div>'
        '<div class="tgme_widget_message_footer"><div class="tgme_widget_message_info">'
        f'<span class="tgme_widget_message_meta"><a class="tgme_widget_message_date" href="https://t.me/{name}/{mid}">'
        '<time datetime="2026-12-01T10:00:00+00:00" class="time">10:00</time></a></span></div></div>'
        "</div></div></div>"
    )


def _server(channels: _Channels) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
            page = channels.page(name)
            body = (page or "not found").encode()
            self.send_response(200 if page else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.read().decode()


class _Worker:
    def __init__(self, env: dict[str, str], tmp: Path, n: int) -> None:
        self.port = free_port()
        data = tmp / f"worker{n}"
        data.mkdir()
        self.log = open(tmp / f"worker{n}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "run", "--role", "source"],
            env={**env, "TGSENTINEL_HTTP_PORT": str(self.port), "TGSENTINEL_DATA_DIR": str(data)},
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.id = ""

    def health(self) -> dict[str, Any] | None:
        try:
            return json.loads(_get(self.port, "/healthz"))
        except OSError:
            return None

    def wait_id(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"a worker exited {self.proc.returncode}")
            body = self.health()
            if body and "leases" in body:
                self.id = body["leases"]["worker"]
                return self.id
            time.sleep(0.2)
        raise RuntimeError("a worker did not start")

    def metric(self, name: str) -> float | None:
        found = re.search(rf"^{name} ([0-9.e+-]+)$", _get(self.port, "/metrics"), re.M)
        return float(found.group(1)) if found else None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.log.close()


def _holders(engine: Any) -> dict[str | None, int]:
    with Session(engine) as session:
        rows = session.execute(select(ChannelLease.holder, func.count()).group_by(ChannelLease.holder)).all()
    return {holder: n for holder, n in rows}


def _wait(what: str, check: Any, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"bench scale: timed out waiting for {what}")


def _pg_counters(engine: Any) -> dict[str, float]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted, tup_fetched "
                "FROM pg_stat_database WHERE datname = current_database()"
            )
        ).one()
    return {"commits": float(row[0]), "rows_written": float(row[1]), "rows_read": float(row[2])}


def run(
    db: str | None,
    channels: int = 2000,
    workers: int = 3,
    interval: float = 60.0,
    seconds: float = 60.0,
    lease: float = 60.0,
    rate: float = 10.0,
) -> dict[str, Any]:
    if db is None:
        raise InputError("bench scale needs a PostgreSQL server: --db postgresql+psycopg://...")
    if workers < 2:
        raise InputError("--workers must be 2 or more: a kill needs someone to take over")
    feed = _Channels(channels)
    server = _server(feed)
    base = f"http://127.0.0.1:{server.server_port}"
    with scratch_url(db) as url, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rules = tmp / "rules"
        rules.mkdir()
        listed = "".join(f"  - {n}\n" for n in feed.names)
        (rules / "watch.yaml").write_text(
            f"channels:\n{listed}rules:\n  - {{id: never, match: {{any: [zzqxv-never]}}}}\n", encoding="utf-8"
        )
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TGSENTINEL_", "TELEGRAM_", "DATABASE"))
        }
        env |= {
            "DATABASE_URL": url,
            "TGSENTINEL_RULES_DIR": str(rules),
            "TGSENTINEL_WEB_BASE": base,
            "TGSENTINEL_WEB_INTERVAL": str(interval),
            # The request budget is not what is measured: room for every channel at its interval.
            "TGSENTINEL_WEB_RPM": str(max(60, int(channels * 60 / interval * 2))),
            "TGSENTINEL_CHANNEL_LEASE": str(lease),
            "TGSENTINEL_HEARTBEAT": "0",
            "TGSENTINEL_LOG_LEVEL": "WARNING",
            "TGSENTINEL_LAG_THRESHOLD": str(max(900.0, 3 * interval)),
        }
        from bot.store.migrate import open_store

        open_store(url).dispose()  # the schema once, before the workers race to create it
        engine = create_engine(url)
        running: list[_Worker] = []
        posting = threading.Event()
        try:
            log(f"bench scale: {workers} source workers over {channels} channels, polled every {interval:g}s")
            started = time.monotonic()
            running = [_Worker(env, tmp, n) for n in range(workers)]
            for w in running:
                w.wait_id()
            share = -(-channels // workers)

            def shared() -> bool:
                held = _holders(engine)
                return None not in held and len(held) == workers and max(held.values()) <= share

            def baselined() -> bool:
                with Session(engine) as session:
                    known = select(func.count()).select_from(Channel).where(Channel.last_seen_id.is_not(None))
                    return session.scalar(known) == channels

            _wait("a fair share each", shared, 10 * lease)
            _wait("every channel's first poll", baselined, 3 * interval + 120)
            startup = time.monotonic() - started
            log(f"bench scale: shared and baselined in {startup:.0f}s; measuring {seconds:g}s")

            posting.set()
            rng = random.Random(0)

            def poster() -> None:
                while posting.is_set():
                    feed.post(rng)
                    time.sleep(1 / rate)

            threading.Thread(target=poster, daemon=True).start()
            cpu0 = {w.id: _cpu_seconds(w.proc.pid) for w in running}
            pg0, polls0, t0 = _pg_counters(engine), feed.polls, time.monotonic()
            time.sleep(seconds)  # the measured window: steady state, by the wall clock
            span = time.monotonic() - t0
            cpu = {w.id: (_cpu_seconds(w.proc.pid) - cpu0[w.id]) / span for w in running}
            pg1, polls = _pg_counters(engine), (feed.polls - polls0) / span
            held = _holders(engine)
            up_to_date = {}
            rounds = {}
            for w in running:
                body = w.health() or {}
                up_to_date[w.id] = sum(1 for c in (body.get("channels") or {}).values() if c["state"] == "ok")
                rounds[w.id] = w.metric("tgsentinel_lease_round_seconds")
            per_core = [held.get(w.id, 0) / cpu[w.id] for w in running if cpu[w.id] > 0]

            victim = running.pop(0)
            log(f"bench scale: kill -9 {victim.id}")
            victim.stop(signal.SIGKILL)
            takeover = _wait(
                "the takeover",
                lambda: victim.id not in (h := _holders(engine)) and None not in h,
                3 * lease,
            )
            fresh = _Worker(env, tmp, workers)
            running.append(fresh)
            joined = time.monotonic()
            fresh.wait_id()
            rebalance = _wait("the newcomer's share", shared, 10 * lease) + (time.monotonic() - joined)
            posting.clear()
        finally:
            posting.clear()
            for w in running:
                w.stop()
            engine.dispose()
            server.shutdown()
    return {
        "bench": "scale",
        "channels": channels,
        "workers": workers,
        "poll_interval_s": interval,
        "lease_s": lease,
        "startup_to_shared_and_baselined_s": round(startup, 1),
        "steady": {
            "seconds": round(span, 1),
            "polls_per_s": round(polls, 1),
            "held": {w: held.get(w, 0) for w in cpu},
            "up_to_date": up_to_date,
            "cpu_cores": {w: round(c, 3) for w, c in cpu.items()},
            "channels_per_worker_per_core": round(min(per_core)) if per_core else None,
            "postgres": {
                "commits_per_s": round((pg1["commits"] - pg0["commits"]) / span, 1),
                "rows_written_per_s": round((pg1["rows_written"] - pg0["rows_written"]) / span, 1),
                "rows_read_per_s": round((pg1["rows_read"] - pg0["rows_read"]) / span, 1),
                "lease_round_s": {w: r for w, r in rounds.items()},
            },
        },
        "takeover_after_kill_s": round(takeover, 1),
        "newcomer_fair_share_s": round(rebalance, 1),
        # Within the lease time, give or take the round that notices it and this bench's look.
        "ok": takeover <= lease + 1.0,
    }
