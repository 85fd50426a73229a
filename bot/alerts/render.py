"""What every destination shows, as neutral spans that each renderer escapes its own way.

Channel text is untrusted. Nothing here escapes anything: it only decides *what* is said (facts, an
excerpt around the hits, the order of lines) and how to cut it to a budget that each destination
measures in its own unit (Slack: escaped characters, Telegram: UTF-16 units, Discord: escaped
characters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

import regex

from bot import channel
from bot.alerts.model import AlertView
from bot.rules.model import Hit

ELLIPSIS = "…"
EXCERPT_WIDTH = 3000  # characters of post text around the hits, before any destination's cut
ITEM_WIDTH = 200  # a digest item's excerpt
TITLE_WIDTH = 256
LABEL_WIDTH = 128  # channel titles, "forwarded from"
TAGS_WIDTH = 512

Style = Literal["plain", "bold", "italic", "link"]

# Characters that change how the text around them reads without being seen: bidi overrides and
# isolates (U+202E turns "exe.txt" into "txt.exe"), marks, controls other than tab and newline
# (a terminal obeys escapes; U+2028 breaks lines where nothing else does),
# zero-width spaces, word joiners, the BOM. The zero-width joiners (U+200C, U+200D) and the tag
# characters stay: emoji sequences and subdivision flags are made of them.
INVISIBLE = regex.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e"
    r"\u2028\u2029\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb]"
)


def visible(text: str) -> str:
    """`text` without invisible controls. Rendering only: the stored text keeps them, and hits are
    offsets into it, so this runs on spans after the text was cut at those offsets."""
    return INVISIBLE.sub("", text)


@dataclass(frozen=True, slots=True)
class Span:
    text: str
    style: Style = "plain"
    href: str | None = None  # for style "link"; always an http(s) URL

    def __post_init__(self) -> None:
        # Every destination renders spans: stripping here covers them all, whatever they escape.
        object.__setattr__(self, "text", visible(self.text))


Line = tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class Card:
    """An alert as lines. `body` is the one part that is cut to whatever budget is left."""

    head: tuple[Line, ...]
    body: Line
    tail: tuple[Line, ...]


def utf16_len(text: str) -> int:
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def post_url(username: str | None, message_id: int | None) -> str | None:
    """A post's link, https://t.me/<username>/<id>; None for a channel without a username (a dump)."""
    if not username or message_id is None:
        return None
    return f"https://t.me/{username}/{message_id}"


def is_web_url(url: str | None) -> bool:
    if not url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not regex.search(r"[\s<>|\"']", url)
        and not INVISIBLE.search(url)
    )


_GRAPHEME = regex.compile(r"\X")


def clip(text: str, budget: int, cost: Callable[[str], int] = len) -> str:
    """`text` cut at a grapheme boundary to at most `budget` (ellipsis included when cut)."""
    if cost(text) <= budget:
        return text
    return "".join(s.text for s in fit((Span(text),), budget, cost))


def fit(
    spans: Sequence[Span],
    budget: int,
    cost: Callable[[str], int] = len,
    overhead: Callable[[Span], int] = lambda span: 0,
) -> tuple[Span, ...]:
    """Keep spans from the start until `budget` is spent, then end with an ellipsis.

    `cost` measures text in the destination's unit; `overhead` is what a span's markup costs
    (Slack's `*...*`). Cuts fall between graphemes, so a surrogate pair, a flag or a ZWJ emoji
    is never split, and a span is either closed or absent: markup is never cut.
    """
    total = sum(cost(s.text) + overhead(s) for s in spans)
    if total <= budget:
        return tuple(spans)
    room = budget - cost(ELLIPSIS)
    kept: list[Span] = []
    for span in spans:
        need = cost(span.text) + overhead(span)
        if need <= room:
            kept.append(span)
            room -= need
            continue
        # A link is either whole or gone: a cut URL would point somewhere else.
        if span.style != "link":
            room -= overhead(span)
            part: list[str] = []
            for grapheme in _GRAPHEME.findall(span.text):
                c = cost(grapheme)
                if c > room:
                    break
                part.append(grapheme)
                room -= c
            text = "".join(part).rstrip()
            if text:
                kept.append(Span(text, span.style, span.href))
        break
    if budget >= cost(ELLIPSIS):
        kept.append(Span(ELLIPSIS))
    return tuple(kept)


def _merge_hits(text: str, hits: Iterable[Hit]) -> list[tuple[int, int]]:
    spans = sorted((max(0, h.start), min(len(text), h.end)) for h in hits)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def excerpt(text: str, hits: Iterable[Hit], width: int = EXCERPT_WIDTH) -> Line:
    """The post text around its hits, hit terms as bold spans, ellipses where text was left out.

    The window opens a little before the first hit (so the reader sees its context) and snaps to
    whitespace so it does not start or end mid-word.
    """
    spans = _merge_hits(text, hits)
    start, end = 0, len(text)
    if len(text) > width:
        first = spans[0][0] if spans else 0
        start = max(0, min(first - width // 4, len(text) - width))
        end = start + width
        snap = 40
        if start > 0:
            gap = regex.search(r"\s", text[start : min(start + snap, first if spans else start + snap)])
            if gap:
                start += gap.end()
        if end < len(text):
            floor = max((e for s, e in spans if s < end), default=start)
            lo = max(floor, end - snap)
            cut = max(text.rfind(" ", lo, end), text.rfind("\n", lo, end))
            if cut > start:
                end = cut
    out: list[Span] = []
    if start > 0:
        out.append(Span(ELLIPSIS + " "))
    pos = start
    for s, e in spans:
        s, e = max(s, start), min(e, end)
        if s >= e:
            continue
        if s > pos:
            out.append(Span(text[pos:s]))
        out.append(Span(text[s:e], "bold"))
        pos = e
    if pos < end:
        out.append(Span(text[pos:end]))
    if end < len(text):
        out.append(Span(" " + ELLIPSIS))
    # Leading/trailing blank lines would only waste the budget.
    if out and out[0].style == "plain":
        out[0] = Span(out[0].text.lstrip())
    if out and out[-1].style == "plain":
        out[-1] = Span(out[-1].text.rstrip())
    return tuple(s for s in out if s.text)


def channel_line(view: AlertView) -> str:
    """How a card names the channel: its title with its @username where both are known."""
    title = clip(view.channel_title or "", LABEL_WIDTH)
    if title and view.channel_username:
        return f"{title} (@{view.channel_username})"
    if not (title or view.channel_username or view.channel_id):
        return "unknown channel"
    return channel.label(username=view.channel_username, title=title, tg_id=view.channel_id)


def date_label(when: datetime | None) -> str | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # the store keeps UTC
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def headline(view: AlertView) -> str:
    """One plain line, e.g. for Slack's fallback text or a Discord message's content."""
    return visible(_headline(view))


def _headline(view: AlertView) -> str:
    if view.kind == "ops":
        return f"tgsentinel: {clip(view.summary or view.title or 'notice', TITLE_WIDTH)}"
    sev = view.severity.upper() if view.severity else "ALERT"
    where = channel_line(view)
    if view.kind == "match":
        what = clip(view.title, TITLE_WIDTH) if view.title else "new match"
        return f"[{sev}] {view.rule_id} in {where}: {what}"
    return f"[{sev}] {view.rule_id}: {clip(view.summary or view.kind, TITLE_WIDTH)}"


def hashtags(view: AlertView) -> str:
    return clip(" ".join(t if t.startswith("#") else f"#{t}" for t in view.hashtags), TAGS_WIDTH)


def _rule_line(view: AlertView) -> Line:
    if view.kind == "ops":
        return (Span("tgsentinel", "bold"), Span(f" · {view.severity}" if view.severity else ""))
    sev = view.severity.upper() if view.severity else "ALERT"
    return (Span(sev, "bold"), Span(" · rule "), Span(view.rule_id, "bold"))


def _link(url: str | None, label: str | None = None) -> Span | None:
    return Span(label or url or "", "link", url) if is_web_url(url) else None


def post_lines(view: AlertView) -> tuple[Line, ...]:
    """Channel, link, date, forward and title: the facts about a post, one per line."""
    lines: list[Line] = [(Span(clip(view.channel_title or "", LABEL_WIDTH) or channel_line(view), "bold"),)]
    if view.channel_title and view.channel_username:
        lines[0] += (Span(f" (@{view.channel_username})"),)
    link = _link(view.url)
    if link:
        lines.append((link,))
    meta = [s for s in (date_label(view.date),) if s]
    if view.forwarded_from:
        meta.append(f"forwarded from {clip(view.forwarded_from, LABEL_WIDTH)}")
    if meta:
        lines.append((Span(" · ".join(meta)),))
    if view.title:
        lines.append((Span(clip(view.title, TITLE_WIDTH), "bold"),))
    return tuple(lines)


def digest_item(item: AlertView, width: int = ITEM_WIDTH) -> Line:
    """One digest entry: channel, title, a short excerpt, and the link."""
    out: list[Span] = [Span(channel_line(item), "bold")]
    if item.title:
        out.append(Span(": " + clip(item.title, 120)))
    short = excerpt(item.text, item.hits, width) if item.text else ()
    if short:
        out.append(Span(" — "))
        out.extend(short)
    link = _link(item.url)
    if link:
        out.extend((Span(" "), link))
    return tuple(out)


def card(view: AlertView, width: int = EXCERPT_WIDTH) -> Card:
    """The alert as lines, for destinations that show one block of text (Telegram, console)."""
    head: list[Line] = [_rule_line(view)]
    tail: list[Line] = []
    if view.kind == "ops":
        return Card(tuple(head), (Span(view.summary or view.title or view.text),), ())
    if view.kind in ("match", "followup") and (view.channel_title or view.channel_username or view.url):
        head.extend(post_lines(view) if view.kind == "match" else post_lines(view)[:2])
    if view.kind == "match":
        body = excerpt(view.text, view.hits, width)
        if view.hashtags:
            tail.append((Span(hashtags(view)),))
    elif view.kind == "digest":
        body = (Span(view.summary or f"{len(view.items)} matches"),)
        for item in view.items:
            body += (Span("\n• "), *digest_item(item))
    else:
        body = (Span(view.summary or "more matches"),)
    if view.also_seen_in and view.kind != "update":
        tail.append((Span(also_seen_line(view)),))
    return Card(tuple(head), body, tuple(tail))


def also_seen_line(view: AlertView) -> str:
    """Where else the alert's story was seen: "also seen in @a, @b (first in @c at 10:02 UTC)"."""
    if not view.also_seen_in:
        return "also seen in no other channel"
    first = f"@{view.channel_username}" if view.channel_username else channel_line(view)
    when = view.date.astimezone(UTC).strftime("%H:%M UTC") if view.date else None
    origin = f" (first in {first} at {when})" if when else f" (first in {first})"
    return clip("also seen in " + ", ".join(view.also_seen_in) + origin, TAGS_WIDTH + LABEL_WIDTH)


def layout(
    c: Card,
    budget: int,
    cost: Callable[[str], int] = len,
    overhead: Callable[[Span], int] = lambda span: 0,
) -> Line:
    """The card as one line of spans (lines joined by newlines) within `budget`.

    The head and tail are short by construction (their parts are clipped), so the body gets
    whatever they leave; a final cut keeps the whole within budget in any case.
    """
    nl = Span("\n")
    head = [s for line in c.head for s in (*line, nl)]
    tail = [s for line in c.tail for s in (nl, *line)]
    fixed = sum(cost(s.text) + overhead(s) for s in (*head, *tail))
    body = fit(c.body, max(0, budget - fixed), cost, overhead) if c.body else ()
    if not body and head:
        head.pop()  # no trailing newline before an empty body
    return fit((*head, *body, *tail), budget, cost, overhead)


def plain(spans: Iterable[Span]) -> str:
    return "".join(s.text for s in spans)
