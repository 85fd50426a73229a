"""`tgsentinel bench soak`: does a real `tgsentinel run` hold its memory over tens of thousands of posts?

A loopback t.me serves one channel that has new posts on every poll (in the preview's markup, one in
five matching a rule that alerts a loopback webhook); the monitor runs as its own process on a
fresh SQLite store. Its RSS is read from /proc against the posts it says it stored (/metrics). After
a warm-up, the growth per post must stay under 0.2 KB: a leak of a few bytes per post is a
container killed after months.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bot.bench.web import _post

PER_PAGE = 20
FLOOR_KB_PER_POST = 0.2


class _Channel:
    """The channel's posts: `per_poll` new ones each time its newest page is asked for."""

    def __init__(self, per_poll: int) -> None:
        self.per_poll = per_poll
        self.newest = PER_PAGE
        self._lock = threading.Lock()
        self._rng = random.Random(0)

    def page(self, before: int | None) -> str:
        with self._lock:
            if before is None:
                self.newest += self.per_poll
                last = self.newest
            else:
                last = min(before - 1, self.newest)
            first = max(1, last - PER_PAGE + 1)
            posts = "".join(_post(self._rng, 0, mid) for mid in range(first, last + 1))
        more = f'<a class="tme_messages_more" data-before="{first}" href="/s/bench?before={first}"></a>'
        return (
            '<html><body><div class="tgme_channel_info"><div class="tgme_channel_info_header_title">'
            '<span>Bench</span></div></div><section class="tgme_channel_history">'
            f"{more if first > 1 else ''}{posts}</section></body></html>"
        )


def _server(channel: _Channel) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            before = int(query["before"][0]) if "before" in query else None
            body = channel.page(before).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def _stored(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(r'tgsentinel_posts_ingested_total\{channel="bench"\} ([0-9.e+]+)', text)
    return int(float(found.group(1))) if found else 0


def run(
    minutes: float = 10.0, posts: int = 20_000, warmup: int = 2_000, per_poll: int = 15
) -> dict[str, Any]:
    """Until `warmup + posts` posts are stored or `minutes` pass; RSS growth per 1,000 posts after warm-up."""
    channel = _Channel(per_poll)
    server = _server(channel)
    base = f"http://127.0.0.1:{server.server_port}"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules"
        rules.mkdir()
        (rules / "watch.yaml").write_text(
            "channels:\n  - bench\n"
            f"destinations:\n  - {{name: hook, type: webhook, url: '{base}/hook'}}\n"
            "rules:\n  - {id: sco, match: {any: ['#SCO']}, notify: [hook]}\n",
            encoding="utf-8",
        )
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TGSENTINEL_", "TELEGRAM_", "DATABASE"))
        }
        env |= {
            "DATABASE_URL": f"sqlite:///{tmp}/soak.db",
            "TGSENTINEL_RULES_DIR": str(rules),
            "TGSENTINEL_DATA_DIR": f"{tmp}/data",
            "TGSENTINEL_WEB_BASE": base,
            "TGSENTINEL_WEB_INTERVAL": "0.1",
            "TGSENTINEL_WEB_RPM": "100000",
            "TGSENTINEL_HTTP_PORT": str(port),
            "TGSENTINEL_HEARTBEAT": "0",
            "TGSENTINEL_LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        samples: list[tuple[float, int, int]] = []  # (seconds, posts stored, RSS kB)
        started = time.monotonic()
        try:
            while time.monotonic() - started < minutes * 60:
                time.sleep(2.0)
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"tgsentinel run exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
                    )  # type: ignore[union-attr]
                try:
                    stored = _stored(port)
                except OSError:
                    continue  # not serving yet
                samples.append((round(time.monotonic() - started, 1), stored, _rss_kb(proc.pid)))
                print(
                    f"bench soak: {samples[-1][1]:,} posts stored, RSS {samples[-1][2] / 1024:.1f} MB",
                    file=sys.stderr,
                )
                if stored >= warmup + posts:
                    break
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            server.shutdown()
    warm = next((s for s in samples if s[1] >= warmup), None)
    end = samples[-1] if samples else None
    if warm is None or end is None or end[1] <= warm[1]:
        return {
            "bench": "soak",
            "ok": False,
            "error": "too few posts stored for a figure",
            "samples": samples,
        }
    per_post = (end[2] - warm[2]) / (end[1] - warm[1])
    return {
        "bench": "soak",
        "seconds": end[0],
        "posts_stored": end[1],
        "rss_mb_after_warmup": round(warm[2] / 1024, 1),
        "rss_mb_at_end": round(end[2] / 1024, 1),
        "posts_after_warmup": end[1] - warm[1],
        "kb_per_post": round(per_post, 4),
        "kb_per_1000_posts": round(per_post * 1000, 1),
        "floor": f"under {FLOOR_KB_PER_POST} KB per post after warm-up",
        "ok": per_post < FLOOR_KB_PER_POST,
    }
