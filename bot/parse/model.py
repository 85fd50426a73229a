"""What the normaliser makes of a post, whichever source it came from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Entity:
    """A Telegram message entity. `offset` and `length` count UTF-16 code units, as Telegram does."""

    type: str  # "hashtag", "url", "text_url", "mention", "bold", ... (Bot API names)
    offset: int
    length: int
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Content:
    """A post's normalised content: one shape for dumps, live messages and the web preview."""

    text: str  # the whole visible post, title line included, placeholders removed
    title: str
    hashtags: tuple[str, ...] = ()  # without '#', first spelling, deduplicated case-insensitively
    mentions: tuple[str, ...] = ()  # without '@'
    urls: tuple[str, ...] = ()
    media: tuple[str, ...] = ()  # flags such as "unsupported", "too_big", "photo", in order first seen
    fingerprint: str | None = None  # None when the visible text is empty (media only)


@dataclass(frozen=True, slots=True)
class DumpPost:
    """One post split out of a flattened text dump."""

    index: int  # 0-based position in the dump
    forwarded_from: str | None
    content: Content = field(repr=False)
