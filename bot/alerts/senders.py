"""Which sender serves which destination: one table, and the factory that reads it."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, TextIO

import httpx

from bot.alerts.config import (
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


def build_sender(
    dest: Destination,
    client: httpx.AsyncClient,
    *,
    console: TextIO | Console | None = None,
    limits: RateLimits | None = None,
) -> Sender:
    """The sender for one destination. Build it once per process: it remembers things
    (Telegram chat migrations) and shares `limits` (default: the process-wide limiters)."""
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
