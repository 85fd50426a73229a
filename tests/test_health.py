"""/healthz and /metrics over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json

import httpx

from bot.health import Health, serve


async def fetch(server, path: str) -> httpx.Response:
    host, port = server.sockets[0].getsockname()[:2]
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://{host}:{port}{path}")


async def test_healthz_is_200_while_every_channel_is_swept_and_503_when_one_cannot_be():
    health = Health(lag_threshold=60)
    health.watch("quiet", "telegram")
    health.watch("broken", "telegram")
    health.swept("quiet")
    health.swept("broken")
    server = await serve(health, "127.0.0.1", 0)
    try:
        ok = await fetch(server, "/healthz")
        assert ok.status_code == 200 and ok.json()["healthy"] is True

        # A quiet channel stays healthy: lag runs from its last sweep, not its last post.
        # The broken one's sweeps fail for longer than the threshold.
        health.swept("broken", ok=False, error="CHANNEL_PRIVATE")
        health.channels["broken"].last_sweep -= 120
        bad = await fetch(server, "/healthz")
        body = bad.json()
        assert bad.status_code == 503 and body["healthy"] is False
        assert body["channels"]["broken"]["last_error"] == "CHANNEL_PRIVATE"
        assert body["channels"]["broken"]["lag_seconds"] >= 120
        assert body["channels"]["quiet"]["lag_seconds"] < 60

        health.connected = False
        health.swept("broken")
        assert (await fetch(server, "/healthz")).status_code == 503

        metrics = await fetch(server, "/metrics")
        assert metrics.status_code == 200 and "tgsentinel_event_loop_lag_seconds" in metrics.text
        assert (await fetch(server, "/nope")).status_code == 404
        json.dumps(health.snapshot())  # serialisable as it is
    finally:
        server.close()
