"""`tgsentinel bench delivery`: latency from ingest to a loopback webhook's receipt, p50 and p99.

One post every 20 ms through the real pipeline (SQLite store, rule engine, outbox, worker, webhook
sender); the receiver is a plain HTTP server on 127.0.0.1 in a process of its own.

`--hanging` sends every alert to a second webhook as well, one that accepts connections and never
answers: the figures are still the first one's, and show whether it waits for the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bot.app import Pipeline
from bot.config.ruleset import RuleSet
from bot.settings import Settings
from bot.sources.model import ChannelRef, Incoming
from bot.store.db import release
from bot.store.migrate import open_store

_RECEIVER = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as any real receiver does

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        # perf_counter is CLOCK_MONOTONIC: comparable with the sender's, in another process.
        sys.stdout.write(f"{json.loads(body)['message']['id']} {time.perf_counter()}\n")
        sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
sys.stdout.write(f"{server.server_port}\n")
sys.stdout.flush()
server.serve_forever()
"""


class _Hanging:
    """A webhook that accepts every connection and never answers (a receiver stuck on a lock)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed: the bench is over
            while True:
                conn, _ = self.server.accept()
                self._held.append(conn)  # held open, never read from nor written to

    def close(self) -> None:
        self.server.close()
        for conn in self._held:
            conn.close()


def _receiver() -> tuple[subprocess.Popen[str], int]:
    """The loopback webhook, in a process of its own so it does not share our interpreter lock."""
    proc = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


async def _run(n: int, interval: float, tmp: Path, hanging: bool = False) -> dict:
    proc, port = _receiver()
    stuck = _Hanging() if hanging else None
    received: dict[int, float] = {}
    lines: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    assert proc.stdout is not None
    reader = threading.Thread(
        target=lambda: [loop.call_soon_threadsafe(lines.put_nowait, line) for line in proc.stdout],  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    rules = tmp / "rules"
    rules.mkdir()
    extra = ""
    if stuck is not None:
        extra = f"  - {{name: stuck, type: webhook, url: 'http://127.0.0.1:{stuck.port}/hook'}}\n"
    (rules / "rules.yaml").write_text(
        "destinations:\n"
        f"  - {{name: hook, type: webhook, url: 'http://127.0.0.1:{port}/hook'}}\n"
        f"{extra}"
        "rules:\n  - id: alarm\n    match: {any: [alarm]}\n"
        f"    notify: [hook{', stuck' if stuck else ''}]\n",
        encoding="utf-8",
    )
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp}/bench.db", rules_dir=rules)
    store = open_store(settings.database_url)
    pipeline = Pipeline(settings, store, RuleSet.load(rules, env={}), console=io.StringIO())
    worker = asyncio.create_task(pipeline.worker.run())
    sent: dict[int, float] = {}
    channel = ChannelRef(tg_id=1, username="bench")
    try:
        next_at = time.perf_counter()
        for i in range(1, n + 1):
            sent[i] = time.perf_counter()
            await pipeline.ingest.ingest(
                [Incoming(channel=channel, message_id=i, text=f"alarm number {i} here")]
            )
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        while len(received) < n:
            line = await asyncio.wait_for(lines.get(), timeout=30)
            msg_id, at = line.split()
            received[int(msg_id)] = float(at)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await pipeline.aclose()
        release(store)
        proc.terminate()
        proc.wait()
        if stuck is not None:
            stuck.close()
    latencies = sorted((received[i] - sent[i]) * 1000 for i in sent if i in received)
    if len(latencies) != n:
        raise AssertionError(f"{n - len(latencies)} of {n} alerts never arrived")
    return {
        "bench": "delivery",
        "posts": n,
        "hanging_destination": hanging,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[int(0.99 * (n - 1))], 1),
        "max_ms": round(latencies[-1], 1),
    }


def run(n: int = 1000, interval: float = 0.02, hanging: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_run(n, interval, Path(tmp), hanging))
