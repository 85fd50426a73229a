"""Which sender serves which destination: one table, and the factory that reads it."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, TextIO

import httpx

from bot.alerts.config import (
    SECRET_PREFIX,
    ConsoleDestination,
    DiscordDestination,
    SlackDestination,
    TelegramDestination,
    WebhookDestination,
)
from bot.alerts.console import ConsoleSender
from bot.alerts.discord import DiscordSender
from bot.alerts.http import Shared
from bot.alerts.model import Sender
from bot.alerts.ratelimit import DEFAULT, RateLimits
from bot.alerts.slack import SlackSender
from bot.alerts.telegram import TelegramSender
from bot.alerts.webhook import WebhookSender
from bot.redact import SECRETS, url_secrets, value_secrets

if TYPE_CHECKING:
    from rich.console import Console

    from bot.alerts.config import Destination

SENDERS: dict[type, type] = {
    ConsoleDestination: ConsoleSender,
    SlackDestination: SlackSender,
    DiscordDestination: DiscordSender,
    TelegramDestination: TelegramSender,
    WebhookDestination: WebhookSender,
}


def secrets(dest: Destination) -> list[str]:
    """Every secret a destination holds, for the redactor: the parts of its URLs past the host, its
    token, its signing secret, its header values."""
    out: list[str] = []
    if isinstance(dest, SlackDestination) and dest.token is not None:
        out += value_secrets(dest.token.get_secret_value())
    if isinstance(dest, SlackDestination | DiscordDestination) and dest.url is not None:
        out += url_secrets(dest.url.get_secret_value())
    elif isinstance(dest, TelegramDestination):
        token = dest.bot_token.get_secret_value()
        out += [*value_secrets(token), token.partition(":")[2], *url_secrets(dest.api_url)]
    elif isinstance(dest, WebhookDestination):
        out += url_secrets(dest.url.get_secret_value())
        if dest.secret is not None:
            secret = dest.secret.get_secret_value()
            out += [secret, secret.removeprefix(SECRET_PREFIX)]
        for value in dest.headers.values():
            out += value_secrets(value)
    return out


def build_sender(
    dest: Destination,
    client: httpx.AsyncClient,
    *,
    console: TextIO | Console | None = None,
    limits: RateLimits | None = None,
) -> Sender:
    """The sender for one destination. Build it once per process: it remembers things
    (Telegram chat migrations) and shares `limits` (default: the process-wide limiters).
    The process's redactor learns the destination's secrets here, before anything is sent."""
    SECRETS.learn(*secrets(dest))
    try:
        cls = SENDERS[type(dest)]
    except KeyError:
        raise TypeError(f"unknown destination type: {type(dest).__name__}") from None
    return cls(dest, Shared(client, limits or DEFAULT, console))


@cache
def _idle_client() -> httpx.AsyncClient:
    return httpx.AsyncClient()  # never sends: construction only


def refusal(dest: Destination) -> str | None:
    """Why the sender would refuse `dest` at construction, or None.

    `rules check` and every load run the very constructor a reload runs, so a destination the check
    accepts can never leave a reload half-applied.
    """
    try:
        build_sender(dest, _idle_client(), limits=RateLimits())
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None
