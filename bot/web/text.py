"""Post text as HTML, built piece by piece with every piece escaped: post text is hostile input.

`rendered` turns the stored text and Telegram's entities (bold, italic, code, links, ...) into markup.
Links are made only to http(s) URLs (t.me included) and to this site's own search (a hashtag), with
rel="noopener noreferrer nofollow"; a `javascript:` link, or any other scheme, stays plain text.
Invisible controls (bidi overrides such as U+202E) are dropped from each piece after the text was cut
at the entities' offsets, which count the text as stored.

`pieces` and `diff` give plain (piece, flag) lists for the templates, which escape them as any value.
"""

from __future__ import annotations

import difflib
import itertools
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup, escape

from bot.alerts.render import is_web_url, visible
from bot.parse.hashtags import hashtag_spans
from bot.parse.links import url_spans

ELLIPSIS = "…"
REL = "noopener noreferrer nofollow"
MAX_ENTITIES = 500  # more than any real post has; a hostile row must not cost a quadratic render

# Entity type -> the element that shows it, innermost first when several cover a piece.
_STYLES: dict[str, tuple[str, str]] = {
    "code": ("<code>", "</code>"),
    "pre": ('<code class="pre">', "</code>"),
    "bold": ("<strong>", "</strong>"),
    "italic": ("<em>", "</em>"),
    "underline": ("<u>", "</u>"),
    "strikethrough": ("<s>", "</s>"),
    "spoiler": ('<span class="spoiler">', "</span>"),
    "blockquote": ('<span class="quote">', "</span>"),
    "expandable_blockquote": ('<span class="quote">', "</span>"),
    "mark": ("<mark>", "</mark>"),
}
_STYLE_ORDER = tuple(_STYLES)
_LINKS = ("text_url", "url", "mention", "hashtag")  # the first that covers a piece makes its link
_SCHEMELESS = re.compile(r"^(?:[a-z0-9-]+\.)+[a-z]{2,}(?:[/?#]|$)", re.IGNORECASE)

Span = tuple[int, int, str, str | None]  # start, end (str indices), type, url


def _utf16_index(text: str):  # type: ignore[no-untyped-def]
    """Telegram's UTF-16 offsets to str indices (an offset inside a surrogate pair rounds up)."""
    if text.isascii():
        return lambda offset: min(max(offset, 0), len(text))
    bounds = [0]
    for ch in text:
        bounds.append(bounds[-1] + (2 if ord(ch) > 0xFFFF else 1))
    return lambda offset: min(bisect_left(bounds, max(offset, 0)), len(text))


def spans_of(text: str, entities: Sequence[Any]) -> list[Span]:
    """The stored entities as spans of `text`; malformed ones (not a dict, bad numbers) are dropped.
    Plain URLs and hashtags in a text without such entities (a dump's) become links too."""
    to_index = _utf16_index(text)
    out: list[Span] = []
    for e in list(entities)[:MAX_ENTITIES]:
        if not isinstance(e, dict):
            continue
        kind, offset, length, url = e.get("type"), e.get("offset"), e.get("length"), e.get("url")
        if not isinstance(kind, str) or not isinstance(offset, int) or not isinstance(length, int):
            continue
        if length <= 0:
            continue
        start, end = to_index(offset), to_index(offset + length)
        if end > start:
            out.append((start, end, kind, url if isinstance(url, str) else None))
    # What the normaliser finds by pattern when a source gives no entities (a dump), linked the same.
    if not any(kind in ("url", "text_url") for _, _, kind, _ in out):
        out.extend((s, e, "url", None) for s, e in url_spans(text))
    if not any(kind == "hashtag" for _, _, kind, _ in out):
        out.extend((s, e, "hashtag", None) for s, e in hashtag_spans(text))
    return out


def safe_href(kind: str, piece: str, url: str | None) -> str | None:
    """Where a link entity may point: an http(s) URL, a t.me profile, or this site's search; else None."""
    if kind == "text_url":
        return url if is_web_url(url) else None
    if kind == "url":
        target = piece.strip()
        if _SCHEMELESS.match(target):
            target = "https://" + target
        return target if is_web_url(target) else None
    if kind == "mention":
        name = piece.removeprefix("@")
        return f"https://t.me/{quote(name)}" if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{3,31}", name) else None
    if kind == "hashtag" and len(piece) > 1:
        return "/search?" + urlencode({"q": piece})
    return None


def rendered(text: str, entities: Sequence[Any] = (), marks: Iterable[tuple[int, int]] = ()) -> Markup:
    """`text` with its entities (and `marks`, str spans shown as <mark>) as HTML; every piece escaped."""
    spans = spans_of(text, entities) + [(s, e, "mark", None) for s, e in marks if e > s]
    cuts = sorted({0, len(text), *(s for s, _, _, _ in spans), *(e for _, e, _, _ in spans)})
    out: list[str] = []
    for a, b in itertools.pairwise(cuts):
        if b <= a or b > len(text):
            continue
        covering = [(kind, url, s, e) for s, e, kind, url in spans if s <= a and e >= b]
        piece = str(escape(visible(text[a:b])))
        kinds = {kind for kind, _, _, _ in covering}
        for kind in _STYLE_ORDER:
            if kind in kinds:
                opening, closing = _STYLES[kind]
                piece = f"{opening}{piece}{closing}"
        for wanted in _LINKS:
            link = next(((url, s, e) for kind, url, s, e in covering if kind == wanted), None)
            if link is None:
                continue
            href = safe_href(wanted, text[link[1] : link[2]], link[0])
            if href is not None:
                piece = f'<a href="{escape(href)}" rel="{REL}">{piece}</a>'
            break
        out.append(piece)
    return Markup("".join(out))  # every piece above went through escape()


def _merged(text: str, spans: Iterable[tuple[int, int]]) -> list[list[int]]:
    merged: list[list[int]] = []
    for s, e in sorted((max(0, s), min(len(text), e)) for s, e in spans):
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return merged


def pieces(text: str, spans: Iterable[tuple[int, int]], context: int | None = None) -> list[tuple[str, bool]]:
    """`text` cut into (piece, is_hit) at the given spans (overlaps merged), plain and unescaped.

    With `context`, only that many characters either side of the hits are kept, "…" marking what was
    left out: a rule's hits in a long post, without the whole post again under every rule.
    """
    merged = _merged(text, spans)
    out: list[tuple[str, bool]] = []
    pos = 0
    for s, e in merged:
        if s > pos:
            gap = text[pos:s]
            if context is not None and len(gap) > 2 * context + 1:
                head = gap[:context] if pos else ""
                gap = f"{head}{ELLIPSIS}{gap[-context:]}"
            out.append((gap, False))
        out.append((text[s:e], True))
        pos = e
    if pos < len(text):
        tail = text[pos:]
        keep = None if context is None else context if merged else 2 * context
        if keep is not None and len(tail) > keep:
            tail = tail[:keep] + ELLIPSIS
        out.append((tail, False))
    return out


_TOKEN = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)


def diff(old: str, new: str) -> list[tuple[str, str]]:
    """A word-level diff of two versions as (op, text), op one of "same", "del", "ins"."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(("del", "".join(a[i1:i2])))
        if j2 > j1:
            out.append(("ins", "".join(b[j1:j2])))
    return out
