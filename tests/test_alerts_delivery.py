"""Every HTTP sender against a real server on 127.0.0.1: outcomes, timeouts, limits, no secrets leaked."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from bot.alerts.config import (
    DiscordDestination,
    SlackDestination,
    TelegramDestination,
    WebhookDestination,
)
from bot.alerts.model import AlertView, Permanent, RetryAfter, Sender, SendError, Sent, Transient
from bot.alerts.ratelimit import RateLimits, RatePolicy
from bot.alerts.senders import build_sender
from bot.rules.model import Hit
from tests.conftest import alert_view

SECRET_PATH = "/services/T000/B000/SLACKSECRETPATH"
DISCORD_PATH = "/api/webhooks/1/DISCORDSECRETTOKEN"
WEBHOOK_PATH = "/hooks/WEBHOOKSECRETPATH"
TOKEN = "123456:TELEGRAMSECRETTOKEN"
TELEGRAM_PATH = f"/bot{TOKEN}/sendMessage"
SECRETS = ("SLACKSECRETPATH", "DISCORDSECRETTOKEN", "WEBHOOKSECRETPATH", "TELEGRAMSECRETTOKEN")
FAST = RatePolicy(slack_interval=0.0, telegram_interval=0.0, telegram_group=(1000, 1.0))
KINDS = ["slack", "discord", "telegram", "webhook"]
PATHS = {"slack": SECRET_PATH, "discord": DISCORD_PATH, "telegram": TELEGRAM_PATH, "webhook": WEBHOOK_PATH}


def destination(kind: str, server: HTTPServer, **kw: Any):
    base = server.url_for("/").rstrip("/")
    if kind == "slack":
        return SlackDestination(name="ops-slack", type="slack", url=base + SECRET_PATH, **kw)
    if kind == "discord":
        return DiscordDestination(name="newsroom", type="discord", url=base + DISCORD_PATH, **kw)
    if kind == "telegram":
        kw.setdefault("chat_id", -1001234567890)
        return TelegramDestination(name="analysts", type="telegram", bot_token=TOKEN, api_url=base, **kw)
    return WebhookDestination(name="siem", type="webhook", url=base + WEBHOOK_PATH, **kw)


def alert(**kw: Any) -> AlertView:
    return alert_view(
        **{
            "channel_id": 1001,
            "text": "Attack on the power grid reported",
            "hits": (Hit("grid", 20, 24),),
            **kw,
        }
    )


def ok(kind: str) -> Response:
    if kind == "slack":
        return Response("ok", 200)
    if kind == "discord":
        return Response('{"id": "1122334455"}', 200, content_type="application/json")
    if kind == "telegram":
        return Response('{"ok": true, "result": {"message_id": 77}}', 200, content_type="application/json")
    return Response("", 204)


def rate_limited(kind: str) -> Response:
    """429, saying "1 second" the way each provider does."""
    if kind == "discord":
        body = '{"message": "You are being rate limited.", "retry_after": 1.0, "global": false}'
        return Response(body, 429, headers={"Retry-After": "1"}, content_type="application/json")
    if kind == "telegram":
        body = (
            '{"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1",'
            ' "parameters": {"retry_after": 1}}'
        )
        return Response(body, 429, content_type="application/json")
    return Response("rate_limited", 429, headers={"Retry-After": "1"})


def error(kind: str, status: int) -> Response:
    if kind == "telegram":
        body = f'{{"ok": false, "error_code": {status}, "description": "Bad Request: chat not found"}}'
        return Response(body, status, content_type="application/json")
    return Response("nope", status)


async def outcome(sender: Sender, view: AlertView) -> Sent | SendError:
    try:
        return await sender.send(view)
    except SendError as exc:
        return exc


def no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


@pytest.mark.parametrize("kind", KINDS)
async def test_flaky_sequence_ends_sent(kind: str, http: HTTPServer, client: httpx.AsyncClient) -> None:
    path = PATHS[kind]
    for response in (error(kind, 500), error(kind, 500), rate_limited(kind), ok(kind)):
        http.expect_ordered_request(path, method="POST").respond_with_response(response)
    sender = build_sender(destination(kind, http), client, limits=RateLimits(FAST))

    got = [await outcome(sender, alert()) for _ in range(3)]
    started = time.monotonic()
    got.append(await outcome(sender, alert()))
    # The 429 held this sender back: the retry went out no sooner than Retry-After said.
    assert time.monotonic() - started >= 0.9

    assert [type(g) for g in got] == [Transient, Transient, RetryAfter, Sent]
    assert got[2].seconds == 1.0
    assert got[3].provider_id == {"discord": "1122334455", "telegram": "77"}.get(kind)
    no_secrets(*(str(g) for g in got[:3]))
    assert all("127.0.0.1" in str(g) for g in got[:3])
    assert len(http.log) == 4
    http.check_assertions()
    if kind == "discord":
        assert http.log[-1][0].args.get("wait") == "true"


@pytest.mark.parametrize("kind", KINDS)
async def test_timeout_is_transient(kind: str, http: HTTPServer, client: httpx.AsyncClient) -> None:
    release = threading.Event()

    def stall(request: Request) -> Response:
        release.wait(5)
        return ok(kind)

    http.expect_request(PATHS[kind]).respond_with_handler(stall)
    sender = build_sender(destination(kind, http, timeout=0.2), client, limits=RateLimits(FAST))
    started = time.monotonic()
    try:
        got = await outcome(sender, alert())
    finally:
        release.set()
    assert isinstance(got, Transient)
    assert "timed out" in str(got)
    assert time.monotonic() - started < 2
    no_secrets(str(got))


@pytest.mark.parametrize("kind", KINDS)
async def test_connection_refused_is_transient(kind: str, client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on that port any more: connecting is refused.
    closed = HTTPServer(host="127.0.0.1", port=port)
    got = await outcome(build_sender(destination(kind, closed), client, limits=RateLimits(FAST)), alert())
    assert isinstance(got, Transient)
    no_secrets(str(got))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("status", "gone"), [(400, False), (404, False), (410, True)])
async def test_client_errors_are_permanent(
    kind: str, status: int, gone: bool, http: HTTPServer, client: httpx.AsyncClient
) -> None:
    http.expect_request(PATHS[kind]).respond_with_response(error(kind, status))
    got = await outcome(build_sender(destination(kind, http), client, limits=RateLimits(FAST)), alert())
    assert isinstance(got, Permanent)
    assert got.gone is gone
    assert f"HTTP {status}" in str(got)
    no_secrets(str(got))


async def test_a_deleted_discord_webhook_is_gone(http: HTTPServer, client: httpx.AsyncClient) -> None:
    http.expect_request(DISCORD_PATH).respond_with_json(
        {"message": "Unknown Webhook", "code": 10015}, status=404
    )
    sender = build_sender(destination("discord", http), client, limits=RateLimits(FAST))
    got = await outcome(sender, alert())
    assert isinstance(got, Permanent) and got.gone is True
    no_secrets(str(got))


def stamping(kind: str, times: list[float]) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        times.append(time.monotonic())
        return ok(kind)

    return handler


async def test_slack_spaces_sends_to_one_webhook_by_a_second(
    http: HTTPServer, client: httpx.AsyncClient
) -> None:
    times: list[float] = []
    http.expect_request(SECRET_PATH).respond_with_handler(stamping("slack", times))
    http.expect_request("/services/other").respond_with_handler(stamping("slack", times))
    limits = RateLimits()  # Slack's real 1/s
    sender = build_sender(destination("slack", http), client, limits=limits)
    other = build_sender(
        SlackDestination(name="other", type="slack", url=http.url_for("/services/other")),
        client,
        limits=limits,
    )
    await sender.send(alert())
    await other.send(alert())  # another webhook: not held back by the first
    await sender.send(alert())
    assert times[1] - times[0] < 0.5
    assert times[2] - times[0] >= 0.9  # 1 s, less the server thread's jitter


async def test_slack_wait_beyond_max_wait_is_refused_without_sending(
    http: HTTPServer, client: httpx.AsyncClient
) -> None:
    http.expect_request(SECRET_PATH).respond_with_response(ok("slack"))
    sender = build_sender(
        destination("slack", http), client, limits=RateLimits(RatePolicy(slack_interval=60.0, max_wait=0.1))
    )
    await sender.send(alert())
    got = await outcome(sender, alert())
    assert isinstance(got, RetryAfter) and 59 < got.seconds <= 60
    assert len(http.log) == 1


async def test_telegram_groups_are_limited_per_window(http: HTTPServer, client: httpx.AsyncClient) -> None:
    times: list[float] = []
    http.expect_request(TELEGRAM_PATH).respond_with_handler(stamping("telegram", times))
    # Scaled down from 1/s and 20/min: 0.2 s apart, 3 per second. Slots: 0, 0.2, 0.4, then 1.0
    # (the window), where a private chat's fourth would go at 0.6.
    limits = RateLimits(RatePolicy(telegram_interval=0.2, telegram_group=(3, 1.0)))
    group = build_sender(destination("telegram", http, chat_id=-100123), client, limits=limits)
    for _ in range(4):
        await group.send(alert())
    # Margins absorb the server thread's scheduling jitter on a loaded machine.
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(times))
    assert times[3] - times[0] >= 0.9
    times.clear()
    private = build_sender(destination("telegram", http, chat_id=4242), client, limits=limits)
    for _ in range(4):
        await private.send(alert())
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(times))
    assert times[3] - times[0] < 0.85  # no group window for a private chat


async def test_discord_waits_for_an_empty_bucket_to_reset(
    http: HTTPServer, client: httpx.AsyncClient
) -> None:
    times: list[float] = []

    def handler(request: Request) -> Response:
        times.append(time.monotonic())
        resp = ok("discord")
        if len(times) == 1:
            resp.headers["X-RateLimit-Remaining"] = "0"
            resp.headers["X-RateLimit-Reset-After"] = "0.5"
        else:
            resp.headers["X-RateLimit-Remaining"] = "4"
        return resp

    http.expect_request(DISCORD_PATH).respond_with_handler(handler)
    sender = build_sender(destination("discord", http), client, limits=RateLimits(FAST))
    for _ in range(3):
        await sender.send(alert())
    assert times[1] - times[0] >= 0.45
    assert times[2] - times[1] < 0.4  # the bucket had room again
