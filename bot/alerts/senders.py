"""The send step every destination shares, and the factory that builds a destination's sender.

A sender renders one AlertView and makes one delivery attempt (plus the provider-specific
resends: Telegram's migrated chat and plain-text fallback). It answers Sent, or raises
RetryAfter / Transient / Permanent; retry scheduling is the outbox's business.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import httpx

from bot.alerts.config import (
    ConsoleDestination,
    DiscordDestination,
    SlackDestination,
    TelegramDestination,
    WebhookDestination,
)
from bot.alerts.model import AlertView, Permanent, RetryAfter, Sent, Transient
from bot.alerts.ratelimit import DEFAULT, RateLimits
from bot.alerts.render import redact, safe_url

if TYPE_CHECKING:
    from rich.console import Console

    from bot.alerts.config import Destination

DEFAULT_RETRY_AFTER = 5.0  # a 429 that does not say how long
DETAIL_WIDTH = 200


class Sender(Protocol):
    destination: str

    async def send(self, alert: AlertView) -> Sent:
        """Deliver once. Raises RetryAfter, Transient or Permanent."""
        ...


def where(destination: str, url: str) -> str:
    """How reasons and logs name an endpoint: the destination and scheme://host, nothing secret."""
    return f"{destination} ({safe_url(url)})"


async def post(
    client: httpx.AsyncClient,
    url: str,
    *,
    destination: str,
    secrets: tuple[str, ...] = (),
    timeout: float | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """POST, turning a timeout or a connection error into Transient with a reason free of secrets."""
    try:
        return await client.post(
            url, timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout, **kwargs
        )
    except httpx.TimeoutException:
        raise Transient(f"{where(destination, url)}: timed out") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # A malformed URL in the config does not heal by retrying.
        raise Permanent(f"{where(destination, url)}: {type(exc).__name__}") from None
    except httpx.TransportError as exc:
        # `from None`: a chained httpx exception would carry the full URL into a logged traceback.
        detail = redact(str(exc), url, *secrets)
        raise Transient(f"{where(destination, url)}: {type(exc).__name__}: {detail}") from None


def retry_after_header(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def json_body(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def detail(resp: httpx.Response, *secrets: str) -> str:
    """A short, single-line, secret-free excerpt of an error body, for the reason."""
    text = " ".join(resp.text.split())[:DETAIL_WIDTH]
    return redact(text, *secrets)


def check(
    resp: httpx.Response,
    destination: str,
    url: str,
    *,
    retry_after: object = None,
    reason: str = "",
) -> None:
    """Return on 2xx; otherwise raise the outcome the status calls for.

    `retry_after` is the provider's JSON field as it came (a number, or anything else to ignore);
    without one, a 429 reads the Retry-After header.
    """
    status = resp.status_code
    if 200 <= status < 300:
        return
    text = f"{where(destination, url)}: HTTP {status}" + (f": {reason}" if reason else "")
    if status == 429:
        wait = float(retry_after) if isinstance(retry_after, int | float) else retry_after_header(resp)
        raise RetryAfter(text, DEFAULT_RETRY_AFTER if wait is None else wait)
    if status >= 500:
        raise Transient(text)
    if status == 410:
        raise Permanent(text, gone=True)
    # Other 4xx, and redirects (not followed: a webhook that moved needs its config changed).
    raise Permanent(text)


def build_sender(
    dest: Destination,
    client: httpx.AsyncClient,
    *,
    console: TextIO | Console | None = None,
    limits: RateLimits | None = None,
) -> Sender:
    """The sender for one destination. Build it once per process: it remembers things
    (Telegram chat migrations) and shares `limits` (default: the process-wide limiters)."""
    # Imported here because each sender module imports the shared send step above.
    from bot.alerts.console import ConsoleSender
    from bot.alerts.discord import DiscordSender
    from bot.alerts.slack import SlackSender
    from bot.alerts.telegram import TelegramSender
    from bot.alerts.webhook import WebhookSender

    limits = limits or DEFAULT
    if isinstance(dest, ConsoleDestination):
        return ConsoleSender(dest, console)
    if isinstance(dest, SlackDestination):
        return SlackSender(dest, client, limits)
    if isinstance(dest, DiscordDestination):
        return DiscordSender(dest, client, limits)
    if isinstance(dest, TelegramDestination):
        return TelegramSender(dest, client, limits)
    if isinstance(dest, WebhookDestination):
        return WebhookSender(dest, client, limits)
    raise TypeError(f"unknown destination type: {type(dest).__name__}")
