"""What every source hands to the ingest path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bot import channel
from bot.parse.model import Content, Entity


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """A channel as a source knows it. `tg_id` is Telegram's bare channel id (positive, no -100)."""

    tg_id: int | None = None
    username: str | None = None  # without '@', as Telegram spells it
    title: str | None = None
    dump: str | None = None  # set for text dumps: stored as channel "dump:<name>", never the live one
    access_hash: int | None = None  # Telethon's, kept so a restart need not resolve the username again

    @property
    def key(self) -> str:
        """A name for logs, metrics and health: never a secret."""
        return channel.key(username=self.username, tg_id=self.tg_id, dump=self.dump)


@dataclass(frozen=True, slots=True)
class Forward:
    name: str | None = None
    tg_id: int | None = None
    username: str | None = None
    post_id: int | None = None


def storable(text: str) -> str:
    """Text as the store keeps it: PostgreSQL text cannot hold NUL, and a post must not be lost for one
    stray control character."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


@dataclass(frozen=True, slots=True)
class Revision:
    """What makes one version of a post differ from another: its text.

    The one definition of an edit, for every source, the store stage and the test helpers: views,
    link previews, media flags and the route a post came by are not edits. Media stays here for
    callers that show it, but the routes see media differently (t.me shows a video as too big, a
    withheld post as unsupported), so a difference in media alone is no edit.
    """

    text: str
    media: tuple[str, ...]

    @classmethod
    def of(cls, text: str, media: Sequence[str]) -> Revision:
        # Media flags once each, in order, as the normaliser keeps them: a repeated flag is no edit.
        return cls(storable(text), tuple(dict.fromkeys(media)))

    def edited(self, later: Revision) -> bool:
        return self.text != later.text


@dataclass(slots=True)
class Incoming:
    """One post (or one album, merged) as a source saw it, before normalisation."""

    channel: ChannelRef
    message_id: int
    text: str
    entities: list[Entity] = field(default_factory=list)
    media: list[str] = field(default_factory=list)
    date: datetime | None = None
    edit_date: datetime | None = None
    # The page says "edited" without saying when (t.me/s); a source with `edit_date` need not set it.
    edited: bool = False
    signature: str | None = None  # the post's author line (a signed channel's admin), never text
    forward: Forward | None = None
    grouped_id: int | None = None
    views: int | None = None
    link_preview: dict[str, Any] | None = None
    media_key: str | None = None  # bot.parse.media.media_key: its first photo or file, for stories
    # Set by a source that already ran the normaliser (the dump parser); the ingest path runs it otherwise.
    content: Content | None = None
    # False for a baseline (a new channel's first page, a backfill): stored and matched, never alerted.
    alert: bool = True

    @property
    def revision(self) -> Revision:
        return Revision.of(self.text, self.media)


# The highest message id the store can hold (a BIGINT). Telegram's own ids are far below it: one
# beyond it comes from a broken or hostile page, and is rejected rather than left to fail a batch.
MAX_MESSAGE_ID = 2**63 - 1


class StoreUnavailable(Exception):
    """The sink cannot reach the store (server gone, disk full, read-only). Not the channel's
    failure: nothing was taken, so the source tries again at its pace, and the store's own health
    says what is wrong."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A post that could not be parsed or stored: skipped so its channel moves on, recorded so it is seen."""

    channel: ChannelRef
    ref: str  # the post id as the source gave it (not necessarily a number)
    reason: str  # the label of tgsentinel_posts_rejected_total
    detail: str  # short, and safe to log and store: no secrets, no post text
    # The id the channel's cursor moves past, so catch-up stops re-reading the post; None for an id
    # that must never move the cursor (out of range, out of sequence).
    message_id: int | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    read: int = 0
    new: int = 0
    updated: int = 0  # edits: text changed, history kept
    unchanged: int = 0
    duplicates: int = 0  # new posts whose fingerprint was already stored (another channel, or a repost)
    matches: int = 0  # new rule matches recorded
    # (message id, rule id, terms) of each new match, for `replay`'s JSON lines
    new_matches: tuple[tuple[int, str, tuple[str, ...]], ...] = ()


class Sink(Protocol):
    """What a source talks to. Implemented by the ingest path over the store; sources know nothing else."""

    async def ingest(self, items: Sequence[Incoming]) -> IngestResult:
        """Normalise, store, match and queue alerts, idempotently by channel and message id."""
        ...

    async def delete(self, channel: ChannelRef, message_ids: Sequence[int]) -> int:
        """Mark posts deleted (their text is kept). Returns how many were marked."""
        ...

    async def cursor(self, channel: ChannelRef) -> int | None:
        """The highest message id stored for the channel; None for a channel never seen."""
        ...

    async def reject(self, rejected: Sequence[Rejected]) -> int:
        """Record posts that were skipped (logged, counted, kept in `rejected_posts`), moving each one's
        channel cursor past it where it has a `message_id`. Idempotent; returns how many were new."""
        ...

    async def resolved(self, username: str) -> ChannelRef | None:
        """A username resolved earlier (tg_id, access_hash, title), so a restart need not resolve it."""
        ...

    async def remember(self, channel: ChannelRef) -> None:
        """Keep a resolved channel (tg_id, username, title, access_hash)."""
        ...
