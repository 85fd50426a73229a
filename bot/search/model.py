"""What a search is asked and what it answers: the values the archive's pages and API share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Order = Literal["newest", "relevance"]


class QueryError(ValueError):
    """A query that cannot be run, said in one line (for example an unclosed quote)."""


@dataclass(frozen=True, slots=True)
class Filters:
    """What narrows a search besides its words; None is no filter."""

    channel: str | None = None  # a channel as the rules name it: username, @username, -100... id, dump:NAME
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    rule: str | None = None  # only posts with a stored match of this rule id
    media: str | None = None  # "any" (has media) or one flag of bot.parse.media.VOCABULARY
    forwarded_from: str | None = None  # a part of the forward source's name, any case
    edited: bool | None = None
    deleted: bool | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    row_id: int  # messages.id
    channel_id: int
    channel: str  # the channel's label, as people read it
    msg_id: int
    date: datetime | None
    url: str | None  # the t.me link, when the channel has a username
    title: str
    snippet: tuple[tuple[str, bool], ...]  # (piece, is_hit) around the first hit, plain text
    media: tuple[str, ...]
    forwarded_from: str | None
    edited: bool
    deleted: bool
    score: float | None  # relevance (higher is better) when ordered by relevance
    text: str = ""  # the whole post, as the source gave it: what an export carries


@dataclass(frozen=True, slots=True)
class Results:
    hits: tuple[Hit, ...]
    next_cursor: str | None  # opaque; None on the last page
