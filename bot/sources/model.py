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
    """What makes one version of a post differ from another: its text and its media.

    The one definition of an edit, for every source, the store stage and the test helpers: views,
    link previews and the route a post came by are not edits.
    """

    text: str
    media: tuple[str, ...]

    @classmethod
    def of(cls, text: str, media: Sequence[str]) -> Revision:
        # Media flags once each, in order, as the normaliser keeps them: a repeated flag is no edit.
        return cls(storable(text), tuple(dict.fromkeys(media)))

    def edited(self, later: Revision) -> bool:
        return self != later


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
    forward: Forward | None = None
    grouped_id: int | None = None
    views: int | None = None
    link_preview: dict[str, Any] | None = None
    # Set by a source that already ran the normaliser (the dump parser); the ingest path runs it otherwise.
    content: Content | None = None
    # False for a baseline (a new channel's first page, a backfill): stored and matched, never alerted.
    alert: bool = True

    @property
    def revision(self) -> Revision:
        return Revision.of(self.text, self.media)


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

    async def resolved(self, username: str) -> ChannelRef | None:
        """A username resolved earlier (tg_id, access_hash, title), so a restart need not resolve it."""
        ...

    async def remember(self, channel: ChannelRef) -> None:
        """Keep a resolved channel (tg_id, username, title, access_hash)."""
        ...
