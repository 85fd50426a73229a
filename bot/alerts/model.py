"""What a sender is handed, and what it answers. Renderers and senders know nothing of the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from bot.rules.model import Hit

AlertKind = Literal["match", "followup", "digest", "ops", "update"]


@dataclass(frozen=True, slots=True)
class AlertView:
    """Everything an alert says. Channel text in it is untrusted: each renderer escapes it."""

    id: str  # stable idempotency key: the same on every retry (Standard Webhooks `webhook-id`)
    kind: AlertKind
    rule_id: str
    severity: str
    channel_id: int | None = None  # Telegram's bare channel id, where known
    channel_username: str | None = None
    channel_title: str | None = None
    message_id: int | None = None
    date: datetime | None = None
    url: str | None = None  # https://t.me/<username>/<id>; None for a dump
    title: str = ""
    text: str = ""
    hashtags: tuple[str, ...] = ()
    forwarded_from: str | None = None
    fingerprint: str | None = None
    hits: tuple[Hit, ...] = ()
    also_seen_in: tuple[str, ...] = ()
    story_id: int | None = None  # bot.stories: the same story in other channels has the same id
    # For follow-ups ("+N more"), digests and ops notices: what to say instead of a post.
    summary: str | None = None
    items: tuple[AlertView, ...] = field(default=())  # a digest's matches
    # An update ("also seen in ..." after the alert went out): the alert it revises (its id), and
    # the provider's id of the message that alert became at this destination, to edit in place
    # (None: it cannot be, and the update is a line of its own).
    revises: str | None = None
    edit_of: str | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    provider_id: str | None = None  # the provider's message id where there is one


class SendError(Exception):
    """A send that did not succeed. Subclasses tell the outbox what to do next."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryAfter(SendError):
    """Rate limited (429): wait `seconds`; not counted as an attempt."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.seconds = seconds


class Transient(SendError):
    """5xx, timeout, connection error: retry with backoff, counted as an attempt."""


class Permanent(SendError):
    """Any other 4xx: dead at once. `gone` (410) also disables the destination."""

    def __init__(self, reason: str, gone: bool = False) -> None:
        super().__init__(reason)
        self.gone = gone


class Sender(Protocol):
    """One destination's sender: built from its model and the process's Shared parts.

    An `update` with `edit_of` set is an edit of that message, where the sender can make one: the
    revised alert rendered as it is now. Otherwise an update is sent as it renders, one line.
    """

    destination: str

    async def send(self, alert: AlertView) -> Sent:
        """Deliver once. Raises RetryAfter, Transient or Permanent."""
        ...
