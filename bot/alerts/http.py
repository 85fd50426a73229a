"""The send step every destination shares: one POST, and what its response means.

A sender renders one AlertView and makes one delivery attempt (plus the provider-specific
resends: Telegram's migrated chat and plain-text fallback). It answers Sent, or raises
RetryAfter / Transient / Permanent; retry scheduling is the worker's business.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import httpx

from bot import backoff
from bot.alerts.model import Permanent, RetryAfter, Transient
from bot.alerts.ratelimit import RateLimits
from bot.pacer import Busy, Pacer
from bot.redact import SECRETS, endpoint, redact

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True, slots=True)
class Shared:
    """What every sender of a process shares: the HTTP pool, the rate limiters, the console."""

    client: httpx.AsyncClient
    limits: RateLimits
    console: TextIO | Console | None = None


DEFAULT_RETRY_AFTER = 5.0  # a 429 that does not say how long
DETAIL_WIDTH = 300  # characters of an error body kept in a reason, cut before redaction
_DETAIL_READ = 65_536  # of a huge body, only the start is looked at


async def paced(pacer: Pacer, max_wait: float) -> None:
    """Wait for the destination's next slot; one too far away is a RetryAfter for the worker."""
    try:
        await pacer.acquire(max_wait)
    except Busy as exc:
        raise RetryAfter("rate limited by tgsentinel's own limiter", exc.seconds) from None


def where(destination: str, url: str) -> str:
    """How reasons and logs name an endpoint: the destination and scheme://host, nothing secret."""
    return f"{destination} ({endpoint(url)})"


async def post(
    client: httpx.AsyncClient,
    url: str,
    *,
    destination: str,
    secrets: tuple[str, ...] = (),
    timeout: float | None = None,
    method: str = "POST",
    **kwargs: Any,
) -> httpx.Response:
    """POST (or `method`: an edit is a PATCH on some services), turning a timeout or a connection
    error into Transient with a reason free of secrets."""
    try:
        return await client.request(
            method, url, timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout, **kwargs
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


def json_body(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def detail(resp: httpx.Response, *secrets: str) -> str:
    """A short, single-line, secret-free excerpt of an error body, for the reason. Receivers and
    proxies echo requests (`Cannot POST /services/...`, a 401 quoting the Authorization header), so
    every secret the process knows is blanked, in any spelling, besides `secrets`."""
    return SECRETS.excerpt(" ".join(resp.text[:_DETAIL_READ].split()), DETAIL_WIDTH, *secrets)


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
        given = retry_after if isinstance(retry_after, int | float) else resp.headers.get("retry-after")
        wait = backoff.retry_after(given)
        raise RetryAfter(text, DEFAULT_RETRY_AFTER if wait is None else wait)
    if status >= 500:
        raise Transient(text)
    if status == 410:
        raise Permanent(text, gone=True)
    # Other 4xx, and redirects (not followed: a webhook that moved needs its config changed).
    raise Permanent(text)
