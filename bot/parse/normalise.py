"""The one normaliser: a post's text (and Telegram's entities, where the source has them) to Content.

Every source ends here: the dump parser with the lines it kept, the live client with `raw_text` and
the message's entities, the web preview with its HTML turned into text and entities. So a post looks
the same, and has the same fingerprint, whichever way it arrived.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import regex

from bot.parse.fingerprint import fingerprint
from bot.parse.hashtags import distinct, hashtag_spans
from bot.parse.links import mention_spans, url_spans
from bot.parse.model import Content, Entity

_LINE_BREAK = regex.compile(r"\r\n|\r|\n")
_NOT_BREAK = regex.compile(r"[^\r\n]")
# What makes a line more than its hashtags and mentions: anything but white space and punctuation.
_SUBSTANCE = regex.compile(r"[^\s\p{P}]")

Span = tuple[int, int]


def _split_lf(text: str) -> list[str]:
    return text.split("\n")


def _utf16_to_index(text: str):
    """A function from a UTF-16 offset (as Telegram counts) to an index into `text`."""
    if text.isascii() or len(text.encode("utf-16-le")) == 2 * len(text):
        return lambda offset: min(max(offset, 0), len(text))
    bounds = [0]
    for ch in text:
        bounds.append(bounds[-1] + (2 if ord(ch) > 0xFFFF else 1))
    # An offset inside a surrogate pair rounds up to the next character.
    return lambda offset: min(bisect_left(bounds, offset), len(text))


def _from_entities(text: str, entities: Sequence[Entity]) -> dict[str, list[tuple[Span, str]]]:
    """Hashtags, mentions and URLs as Telegram's entities give them, with their spans in `text`."""
    found: dict[str, list[tuple[Span, str]]] = {"hashtag": [], "mention": [], "url": []}
    to_index = _utf16_to_index(text)
    for entity in entities:
        start = to_index(entity.offset)
        end = to_index(entity.offset + entity.length)
        piece = text[start:end]
        if entity.type == "hashtag":
            found["hashtag"].append(((start, end), piece.removeprefix("#")))
        elif entity.type == "mention":
            found["mention"].append(((start, end), piece.removeprefix("@")))
        elif entity.type == "url":
            found["url"].append(((start, end), piece))
        elif entity.type == "text_url" and entity.url:
            found["url"].append(((start, end), entity.url))
    return found


def _title(text: str, tag_spans: list[Span]) -> str:
    """The first line that holds more than hashtags and mentions; else the first line."""
    first_end = text.find("\n")
    first_line = text if first_end < 0 else text[:first_end]
    plain = "#" not in first_line and "@" not in first_line and "\r" not in first_line
    if plain and _SUBSTANCE.search(first_line):
        return first_line.strip()
    pieces = []
    pos = 0
    for start, end in tag_spans:
        start = max(start, pos)
        if end > start:
            pieces += (text[pos:start], _NOT_BREAK.sub(" ", text[start:end]))
            pos = end
    masked = "".join(pieces) + text[pos:]
    first = ""
    split = _LINE_BREAK.split if "\r" in text else _split_lf
    for line, bare in zip(split(text), split(masked), strict=True):
        if _SUBSTANCE.search(bare):
            return line.strip()
        if not first:
            first = line.strip()
    return first


def normalise(text: str, entities: Sequence[Entity] = (), media: Sequence[str] = ()) -> Content:
    """A post's Content from its visible text.

    `entities` are Telegram's (offsets in UTF-16 code units). For hashtags, mentions and URLs they win
    over pattern matching: a kind is found by pattern only when no entity of that kind was given.
    `media` flags are kept once each, in order first seen. The text is kept as given, ends trimmed.
    """
    return content_of(text, entities, media, fingerprint(text))


def content_of(
    text: str, entities: Sequence[Entity], media: Sequence[str], text_fingerprint: str | None
) -> Content:
    """`normalise`, with the fingerprint already taken (the dump parser takes it line by line)."""
    found = _from_entities(text, entities) if entities else {"hashtag": [], "mention": [], "url": []}
    if not found["hashtag"]:
        found["hashtag"] = [((s, e), text[s + 1 : e]) for s, e in hashtag_spans(text)]
    if not found["mention"]:
        found["mention"] = [((s, e), text[s + 1 : e]) for s, e in mention_spans(text)]
    if not found["url"]:
        found["url"] = [((s, e), text[s:e]) for s, e in url_spans(text)]

    hashtags = distinct([tag for _, tag in found["hashtag"] if tag], fold=True)
    mentions = distinct([name for _, name in found["mention"] if name], fold=True)
    urls = distinct([url for _, url in found["url"] if url])
    tag_spans = sorted(span for kind in ("hashtag", "mention") for span, _ in found[kind])
    visible = text.strip()
    return Content(
        text=visible,
        title=_title(text, tag_spans) if visible else "",
        hashtags=tuple(hashtags),
        mentions=tuple(mentions),
        urls=tuple(urls),
        media=tuple(distinct(list(media))),
        fingerprint=text_fingerprint,
    )
