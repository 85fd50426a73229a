"""/healthz and /metrics over real HTTP on 127.0.0.1, and the rules health judges by."""

from __future__ import annotations

import json
import time

import httpx
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from bot.health import Health
from bot.web import probes
from bot.web import server as http


async def serve(health: Health, host: str, port: int, token: str | None = None) -> http.Served:
    """The probes as `tgsentinel run` serves them when the archive is off."""
    return await http.serve(Starlette(routes=probes.routes(health, token)), host, port)


async def fetch(server, path: str) -> httpx.Response:
    host, port = "127.0.0.1", server.port
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://{host}:{port}{path}")


async def test_healthz_is_200_while_every_channel_is_swept_and_503_when_one_cannot_be():
    health = Health(lag_threshold=60)
    health.watch("quiet", "telegram")
    health.watch("broken", "telegram")
    health.set_connected("telegram", True)
    health.swept("quiet")
    health.swept("broken")
    server = await serve(health, "127.0.0.1", 0)
    try:
        ok = await fetch(server, "/healthz")
        assert ok.status_code == 200 and ok.json()["healthy"] is True and ok.json()["status"] == "ok"

        # A quiet channel stays healthy: lag runs from its last sweep, not its last post.
        # The broken one's sweeps fail for longer than the threshold.
        health.swept("broken", ok=False, error="CHANNEL_PRIVATE")
        health.channels["broken"].last_sweep -= 120
        bad = await fetch(server, "/healthz")
        body = bad.json()
        assert bad.status_code == 503 and body["healthy"] is False and body["status"] == "unhealthy"
        assert body["channels"]["broken"]["last_error"] == "CHANNEL_PRIVATE"
        assert body["channels"]["broken"]["state"] == "lagging"
        assert body["channels"]["broken"]["lag_seconds"] >= 120
        assert body["channels"]["quiet"]["lag_seconds"] < 60

        # Connected is said per source, as it is.
        health.set_connected("telegram", False, "OSError: network is unreachable")
        body = (await fetch(server, "/healthz")).json()
        assert body["connected"] is False
        assert body["sources"]["telegram"]["connected"] is False
        assert "unreachable" in body["sources"]["telegram"]["last_error"]

        metrics = await fetch(server, "/metrics")
        assert metrics.status_code == 200 and "tgsentinel_event_loop_lag_seconds" in metrics.text
        assert 'tgsentinel_source_connected{source="telegram"} 0.0' in metrics.text
        assert (await fetch(server, "/nope")).status_code == 404
        json.dumps(health.snapshot())  # serialisable as it is
    finally:
        await server.close()


async def test_a_monitor_is_starting_until_its_first_round_and_failing_at_its_first_failed_try():
    health = Health(lag_threshold=900)
    health.watch("a", "web")
    health.watch("b", "web")
    server = await serve(health, "127.0.0.1", 0)
    try:
        starting = await fetch(server, "/healthz")
        assert starting.status_code == 503 and starting.json()["status"] == "starting"
        assert starting.json()["connected"] is None  # nothing tried yet: not "connected"

        health.swept("a")
        half = await fetch(server, "/healthz")
        assert half.status_code == 503 and half.json()["status"] == "starting"

        # b has never succeeded and its first try failed: unhealthy now, not after the lag threshold.
        health.set_connected("web", False, "ConnectError: [Errno -2] Name or service not known")
        health.swept("b", ok=False, error="ConnectError: [Errno -2] Name or service not known")
        failed = await fetch(server, "/healthz")
        body = failed.json()
        assert failed.status_code == 503 and body["status"] == "unhealthy"
        assert body["channels"]["b"]["state"] == "failing" and body["channels"]["b"]["last_sweep"] is None
        assert body["sources"]["web"]["connected"] is False

        health.set_connected("web", True)
        health.swept("b")
        assert (await fetch(server, "/healthz")).status_code == 200
    finally:
        await server.close()


def test_a_channel_never_tried_whose_source_cannot_connect_is_failing_not_starting():
    health = Health(lag_threshold=900)
    health.watch("alpha", "telegram")
    assert health.status() == "starting"
    health.set_connected("telegram", False, "OSError: connection refused")
    assert health.state("alpha") == "failing" and health.status() == "unhealthy"
    assert "connection refused" in health.troubles()[0]


def test_one_failed_try_after_a_success_is_tolerated_within_the_lag_threshold():
    health = Health(lag_threshold=900)
    health.watch("a", "web")
    health.swept("a")
    health.swept("a", ok=False, error="HTTP 500")
    assert health.state("a") == "retrying" and health.healthy()
    assert not health.healthy(now=time.time() + 901)
    assert health.state("a", now=time.time() + 901) == "lagging"


async def test_a_problem_names_its_rules_line_is_counted_and_is_reported_once():
    health = Health(lag_threshold=900)
    health.listed_at = {"nobody_here": "rules/watch.yaml:3"}
    health.watch("nobody_here", "web")
    told: list[tuple[str, str]] = []

    async def ops(kind: str, summary: str) -> None:
        told.append((kind, summary))

    await health.report(ops, "nobody_here", "not_public", "not a public channel")
    await health.report(ops, "nobody_here", "not_public", "not a public channel")
    assert told == [("web.not_public", "rules/watch.yaml:3: not a public channel")]
    snap = health.snapshot()
    assert snap["healthy"] is False and snap["status"] == "unhealthy"
    assert snap["channels"]["nobody_here"]["state"] == "problem"
    assert snap["channels"]["nobody_here"]["problem"] == "rules/watch.yaml:3: not a public channel"
    labels = {"channel": "nobody_here", "kind": "not_public"}
    assert REGISTRY.get_sample_value("tgsentinel_channel_problems", labels) == 1.0
    # Not an outage: retrying cannot help, so it does not count as a source failing.
    assert health.outages(after=0.0, now=time.time() + 3600) == []

    health.forget("nobody_here")  # taken out of the rules
    assert REGISTRY.get_sample_value("tgsentinel_channel_problems", labels) is None
    assert health.healthy()


def test_an_outage_is_one_notice_after_the_notice_time_and_its_recovery_one_more():
    health = Health(lag_threshold=900)
    health.watch("a", "web")
    health.watch("b", "web")
    health.swept("a")
    health.swept("b")
    start = time.time()
    health.set_connected("web", False, "ConnectError: boom")
    health.swept("a", ok=False, error="ConnectError: boom")
    assert health.outages(after=600, now=start + 599) == []
    [down] = health.outages(after=600, now=start + 601)
    assert down.kind == "outage" and down.source == "web"
    assert "failing for 10m" in down.text and "a: ConnectError: boom" in down.text
    assert "1 of 2 channel(s)" in down.text
    assert health.outages(after=600, now=start + 1200) == []  # once

    health.set_connected("web", True)
    health.swept("a")
    [up] = health.outages(after=600)
    assert up.kind == "recovered" and "web source recovered" in up.text
    assert health.outages(after=600) == []


async def test_with_a_token_metrics_and_the_detail_need_it_and_the_bare_status_stays_open():
    health = Health(lag_threshold=60)
    health.watch("secretchan", "web")
    health.swept("secretchan")
    server = await serve(health, "127.0.0.1", 0, token="s3cret-token")
    host, port = "127.0.0.1", server.port
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            probe = await client.get("/healthz")
            assert probe.status_code == 200 and probe.json() == {"healthy": True}  # no channel names
            assert (await client.get("/metrics")).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert (await client.get("/metrics", headers=wrong)).status_code == 401
            right = {"Authorization": "Bearer s3cret-token"}
            detail = await client.get("/healthz", headers=right)
            assert "secretchan" in detail.json()["channels"]
            assert (await client.get("/metrics", headers=right)).status_code == 200
    finally:
        await server.close()


async def _half_requests(port: int, n: int) -> list:
    """`n` connections, each sending half a request and then nothing."""
    import asyncio

    idle = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nX-Slow: 1\r\n")
        idle.append((reader, writer))
    return idle


async def _closed(reader, timeout: float) -> bool:
    import asyncio
    import contextlib

    with contextlib.suppress(ConnectionResetError):  # closed before it read us: the kernel resets
        try:
            return await asyncio.wait_for(reader.read(), timeout=timeout) == b""
        except TimeoutError:
            return False
    return True


async def test_clients_trickling_headers_are_cut_off_at_the_deadline(monkeypatch):
    monkeypatch.setattr(http, "REQUEST_DEADLINE", 0.5)
    server = await serve(Health(lag_threshold=60), "127.0.0.1", 0)
    idle = await _half_requests(server.port, 10)
    try:
        assert all([await _closed(reader, timeout=5) for reader, _ in idle])
        assert "healthy" in (await fetch(server, "/healthz")).json()  # and the server still answers
    finally:
        for _, writer in idle:
            writer.close()
        await server.close()


async def test_connections_past_the_cap_are_closed_at_once(monkeypatch):
    monkeypatch.setattr(http, "REQUEST_DEADLINE", 60.0)  # far off: only the cap can close them
    server = await serve(Health(lag_threshold=60), "127.0.0.1", 0)
    idle = await _half_requests(server.port, http.MAX_CONNECTIONS + 20)
    try:
        surplus = [await _closed(reader, timeout=2) for reader, _ in idle[http.MAX_CONNECTIONS :]]
        assert all(surplus)
        # Those within the cap are still open, waiting for the rest of their request.
        assert not await _closed(idle[0][0], timeout=0.3)
    finally:
        for _, writer in idle:
            writer.close()
        await server.close()
