"""Mentions and URLs found by pattern, for text that came without Telegram's entities."""

from __future__ import annotations

import regex

# A public username is 5-32 of [A-Za-z0-9_]; a longer run is not a mention, and a word character before
# the '@' makes it part of an e-mail address.
_MENTION = regex.compile(r"@(?<![\w@/]@)([A-Za-z0-9_]{5,32})(?![A-Za-z0-9_])")

# Path characters as tdlib allows them: no white space, quotes, angle brackets, guillemets, or general
# punctuation other than ZWNJ, ZWJ and dashes (so "…" ends a URL).
_URL = regex.compile(
    r"(?<![\w/])https?://[^\s<>\"«»\u2000-\u200b\u200e-\u200f\u2016-\u206f\u3000]+",
    regex.IGNORECASE,
)
_BAD_END = ".:;,('?!`"


def mention_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each @username in `text`, '@' included."""
    return [m.span() for m in _MENTION.finditer(text)] if "@" in text else []


def url_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each http(s) URL in `text`, without trailing punctuation."""
    spans: list[tuple[int, int]] = []
    if "://" not in text:
        return spans
    for m in _URL.finditer(text):
        start, end = m.span()
        while end > start and (
            text[end - 1] in _BAD_END
            # A closing bracket belongs to the URL only when the URL opened one.
            or (text[end - 1] == ")" and text.count("(", start, end) < text.count(")", start, end))
        ):
            end -= 1
        if text.find("://", start, end) + 3 < end:
            spans.append((start, end))
    return spans
