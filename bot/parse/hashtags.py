"""Hashtags as Telegram finds them (tdlib `MessageEntity.cpp`, `match_hashtags`).

A hashtag is `#` and a run of hashtag characters: letters of any script (general category L), decimal
digits, `_`, ZWNJ, the middle dot, and the Sinhala block (tdlib adds it because Sinhala vowel signs are
marks, not letters). The run must not follow a hashtag character, must hold a letter within its first
256 characters, is cut at 256, and is rejected when a `#` directly follows the whole run.
"""

from __future__ import annotations

import regex

MAX_LENGTH = 256

_CHARS = r"\p{L}\p{Nd}_\u200c\u00b7\u0d80-\u0dff"
# tdlib walks the whole run before cutting it, so the "followed by '#'" test looks past character 256.
# The '#' comes first (the look-behind then checks the character before it) so that the engine can
# jump from '#' to '#'.
_HASHTAG = regex.compile(rf"#(?<![{_CHARS}]#)([{_CHARS}]+)(#?)")
_LETTER = regex.compile(r"\p{L}")


def hashtag_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each hashtag in `text`, '#' included, cut at 256 characters."""
    spans = []
    for m in _HASHTAG.finditer(text):
        if m.group(2):
            continue
        start = m.start(1)
        end = min(m.end(1), start + MAX_LENGTH)
        if _LETTER.search(text, start, end) is None:
            continue
        spans.append((start - 1, end))
    return spans


def distinct(items: list[str], *, fold: bool = False) -> list[str]:
    """Each item once, first spelling, in order of first appearance; `fold` compares case-insensitively."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = item.casefold() if fold else item
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def extract_hashtags(text: str) -> list[str]:
    """The hashtags of `text`, without '#', deduplicated case-insensitively, in order of first appearance."""
    return distinct([text[start + 1 : end] for start, end in hashtag_spans(text)], fold=True)
