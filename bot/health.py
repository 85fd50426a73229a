"""What `/healthz` reports: connection, and per channel the time since it was last confirmed up to date.

A channel's lag is measured from its last successful sweep, not its last post, so quiet channels
stay healthy while a channel that cannot be swept turns the monitor unhealthy.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class ChannelHealth:
    source: str
    last_post: datetime | None = None
    last_sweep: float | None = None  # wall clock of the last successful sweep
    last_error: str | None = None
    flood_wait_until: float | None = None
    gap: int = 0  # posts a catch-up could not reach


class Health:
    def __init__(self, lag_threshold: float) -> None:
        self.lag_threshold = lag_threshold
        self.connected = True
        self.started = time.time()
        self.channels: dict[str, ChannelHealth] = {}
        self.flood_wait_until: float | None = None

    def watch(self, channel: str, source: str) -> None:
        self.channels.setdefault(channel, ChannelHealth(source=source))

    def forget(self, channel: str) -> None:
        self.channels.pop(channel, None)

    def swept(self, channel: str, ok: bool = True, error: str | None = None, gap: int = 0) -> None:
        ch = self.channels.setdefault(channel, ChannelHealth(source="?"))
        if ok:
            ch.last_sweep = time.time()
            ch.last_error = None
        else:
            ch.last_error = error
        ch.gap = gap

    def posted(self, channel: str, date: datetime | None) -> None:
        ch = self.channels.get(channel)
        if ch is not None and date is not None and (ch.last_post is None or date > ch.last_post):
            ch.last_post = date

    def flood_wait(self, seconds: float, channel: str | None = None) -> None:
        until = time.time() + seconds
        self.flood_wait_until = until
        if channel in self.channels:
            self.channels[channel].flood_wait_until = until

    def lag(self, channel: str, now: float | None = None) -> float:
        now = time.time() if now is None else now
        ch = self.channels[channel]
        return now - (ch.last_sweep if ch.last_sweep is not None else self.started)

    def healthy(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.connected and all(
            self.lag(name, now) <= self.lag_threshold and not ch.gap for name, ch in self.channels.items()
        )

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        return {
            "healthy": self.healthy(now),
            "connected": self.connected,
            "flood_wait_remaining": max(0.0, (self.flood_wait_until or 0) - now),
            "channels": {
                name: {
                    "source": ch.source,
                    "last_post": ch.last_post.isoformat() if ch.last_post else None,
                    "lag_seconds": round(self.lag(name, now), 1),
                    "last_sweep": datetime.fromtimestamp(ch.last_sweep).isoformat()
                    if ch.last_sweep
                    else None,
                    "last_error": ch.last_error,
                    "gap": ch.gap,
                    "flood_wait_remaining": max(0.0, (ch.flood_wait_until or 0) - now),
                }
                for name, ch in self.channels.items()
            },
        }


async def serve(health: Health, host: str, port: int) -> asyncio.Server:
    """`/healthz` (200 or 503, JSON) and `/metrics` (Prometheus text) on a plain asyncio server.

    Two read-only routes do not earn a web framework; the request line is all we read.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them changes the answer
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if path == "/healthz":
                ok = health.healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                body = json.dumps(health.snapshot()).encode()
                ctype = "application/json"
            elif path == "/metrics":
                status, body, ctype = "200 OK", generate_latest(), CONTENT_TYPE_LATEST
            else:
                status, body, ctype = "404 Not Found", b"not found\n", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
