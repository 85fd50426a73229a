"""Splitting a flattened channel dump into posts, each body printed once.

A dump is text copied out of Telegram or its web preview. Posts end at every boundary such a copy
leaves (the README states these rules for users):

1. a `Forwarded from NAME` header starts a post;
2. a flattened footer (`4.2K views`, `4.2K views 15:04`, `edited 15:30`) or a `t.me/<channel>/<id>`
   line ends one; a line that opens every post so ended is the channel's name and is dropped;
3. the documented export layout prints a post as a title line, a block of lines, then the same block
   again: a post ends where its doubled run ends, plus the media placeholders right after it; lines
   before a title that are not doubled are one-line posts of their own (each with the placeholders
   that follow it);
4. a plain list of copied texts (none of the above anywhere) splits at blank lines; when some gaps
   are two or more blank lines, only the widest gaps do, so posts may keep their paragraphs.

Placeholders ("Please open Telegram to view this post", "Media is too big", "VIEW IN TELEGRAM",
"This media is not supported in your browser", and a player's duration such as `0:18`) are dropped
from the text, and some set a media flag.
"""

from __future__ import annotations

from pathlib import Path

import regex

from bot.errors import InputError
from bot.parse.detect import open_input
from bot.parse.fingerprint import compare_key, digest, line_words
from bot.parse.media import DUMP_PLACEHOLDERS
from bot.parse.model import DumpPost
from bot.parse.normalise import content_of

_BOM = b"\xef\xbb\xbf"
_HEADER_PREFIX = "Forwarded from "
_HEADER = regex.compile(r"Forwarded\s+from\s+(.*\S)")

# Placeholder lines, as compared (casefolded): the flag each sets, or None for a line only dropped.
PLACEHOLDERS = DUMP_PLACEHOLDERS
_LONGEST_PLACEHOLDER = max(map(len, PLACEHOLDERS))
# A video or voice player's duration: 0:18, 12:05, 1:02:33.
_DURATION = regex.compile(r"\d{1,2}(?::\d{2}){1,2}")
# The footer of a post on a flattened t.me/s page: views, "edited", the time (and on older pages a
# date). The time alone is not enough (it reads like a duration): views or "edited" must be there.
_FOOTER = regex.compile(
    r"(?:(?P<views>\d+(?:[.,]\d+)?\s?[kmb]?)\s*views?)?\s*(?P<edited>edited)?\s*"
    r"(?:(?:[a-z]{3,9}\.?\s\d{1,2}(?:,\s\d{4})?(?:\s(?:at\s)?)?)?\d{1,2}:\d{2}(?:\s?[ap]m)?)?"
)
# A post's own link, as a copied footer or a list of links leaves it.
_POST_LINK = regex.compile(r"(?:https?://)?(?:www\.)?(?:t|telegram)\.me/(?:s/)?[a-z][a-z0-9_]{2,31}/\d+/?")

_TEXT, _HEADER_LINE, _PLACEHOLDER, _ENDER = 0, 1, 2, 3


def decode_dump(data: bytes, source: str) -> str:
    """A dump's bytes as text: UTF-8, with or without a BOM. `source` names the input in errors."""
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return str(data[skip:], "utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{source}: not valid UTF-8 at byte {err.start + skip}") from None


def read_dump(path: str | Path) -> str:
    """A dump file's text; a missing file, a directory or bad bytes give an InputError."""
    with open_input(path) as f:
        return decode_dump(f.read(), str(path))


class _Lines:
    """The dump's non-blank lines: verbatim text, an int per distinct compared form, and a kind."""

    __slots__ = ("flags", "gaps", "ids", "keys", "kinds", "names", "raws")

    def __init__(self, text: str) -> None:
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.keys: list[str] = []  # id -> compared form
        self.flags: dict[int, str | None] = {}  # id -> placeholder flag
        kind_of_id: list[int] = []
        id_of_key: dict[str, int] = {}
        # The second copy of a line is usually byte-identical to the first: look it up before
        # normalising it. Blank lines get id -1.
        id_of_raw: dict[str, int] = {}
        raws: list[str] = []
        ids: list[int] = []
        gaps: list[int] = []  # blank lines right before each kept line
        blank = 0
        for raw in text.split("\n"):
            line_id = id_of_raw.get(raw)
            if line_id is None:
                key = compare_key(raw)
                if not key:
                    line_id = -1
                else:
                    line_id = id_of_key.get(key)
                    if line_id is None:
                        line_id = id_of_key[key] = len(kind_of_id)
                        kind_of_id.append(self._kind(key, line_id))
                        self.keys.append(key)
                id_of_raw[raw] = line_id
            if line_id >= 0:
                raws.append(raw)
                ids.append(line_id)
                gaps.append(blank)
                blank = 0
            else:
                blank += 1
        self.raws = raws
        self.gaps = gaps
        self.ids = ids
        self.kinds = [kind_of_id[i] for i in ids]
        self.names: dict[int, str] = {}  # index -> header name
        for at, kind in enumerate(self.kinds):
            if kind == _HEADER_LINE:
                match = _HEADER.search(raws[at])
                self.names[at] = match.group(1) if match else self.keys[ids[at]][len(_HEADER_PREFIX) :]

    def _kind(self, key: str, line_id: int) -> int:
        if key.startswith(_HEADER_PREFIX) and len(key) > len(_HEADER_PREFIX):
            return _HEADER_LINE
        if len(key) <= _LONGEST_PLACEHOLDER:
            folded = key.casefold()
            if folded in PLACEHOLDERS:
                self.flags[line_id] = PLACEHOLDERS[folded]
                return _PLACEHOLDER
            if folded[:1].isdigit() and _DURATION.fullmatch(folded):
                self.flags[line_id] = None
                return _PLACEHOLDER
            if (match := _FOOTER.fullmatch(folded)) and (match.group("views") or match.group("edited")):
                return _ENDER
        if "me/" in key and _POST_LINK.fullmatch(key.casefold()):
            return _ENDER
        return _TEXT


def _positions(ids: list[int], lo: int, hi: int) -> dict[int, list[int]]:
    where: dict[int, list[int]] = {}
    for k in range(lo, hi):
        where.setdefault(ids[k], []).append(k)
    return where


def _doubled_at(ids: list[int], where: dict[int, list[int]], start: int, hi: int) -> int:
    """The longest L with ids[start:start+L] == ids[start+L:start+2L] inside [.., hi); 0 if none."""
    # A doubled run of length L needs the same line at start + L: only those lengths are tried.
    for j in reversed(where[ids[start]]):
        if j <= start:
            break
        length = j - start
        if j + length <= hi and ids[start:j] == ids[j : j + length]:
            return length
    return 0


def _collapse(ids: list[int], raws: list[str]) -> None:
    """Collapse, in place, every run of lines immediately followed by an identical run."""
    while len(set(ids)) < len(ids):
        where = _positions(ids, 0, len(ids))
        for start in range(len(ids)):
            length = _doubled_at(ids, where, start, len(ids))
            if length:
                # Removing a copy can bring two equal runs together anywhere before it: start over.
                del ids[start + length : start + 2 * length], raws[start + length : start + 2 * length]
                break
        else:
            return


Bounds = list[tuple[int, int, int, int]]


def _split(lines: _Lines, lo: int, hi: int) -> Bounds:
    """The posts in the header-free stretch [lo, hi) of lines: (start, end, run start, run length)."""
    ids, kinds = lines.ids, lines.kinds
    where = _positions(ids, lo, hi)
    posts: Bounds = []
    pos = lo
    while pos < hi:
        end, run, length = hi, hi, 0
        for start in range(pos, hi):
            if len(where[ids[start]]) > 1:
                length = _doubled_at(ids, where, start, hi)
                if length:
                    run = start
                    end = start + 2 * length
                    while end < hi and kinds[end] == _PLACEHOLDER:
                        end += 1
                    break
        # One title line may precede a doubled body; text lines before it are one-line posts, each
        # with the placeholders after it (a media post's caption).
        # A doubled run of placeholders only is an album's, after its caption: no title rule then.
        # Placeholders before the first text line (a video before its caption) stay with the post.
        first = pos
        if length and run > pos and any(kinds[k] != _PLACEHOLDER for k in range(run, run + length)):
            title = run - 1 if kinds[run - 1] != _PLACEHOLDER else run
            starts = [k for k in range(pos, title) if kinds[k] != _PLACEHOLDER]
            if starts:
                starts[0] = pos
                first = title
                for start, stop in zip(starts, [*starts[1:], title], strict=True):
                    posts.append((start, stop, start, 0))
        posts.append((first, end, run, length))
        pos = end
    return posts


def _plain_list(lines: _Lines, bounds: Bounds) -> Bounds:
    """A plain list of copied texts split at blank lines (only the widest gaps, when some are 2+)."""
    gaps = lines.gaps
    widest = max(gaps[1:], default=0)
    if not widest:
        return bounds
    width = widest if widest >= 2 else 1
    out: Bounds = []
    for start, end, _, _ in bounds:
        cut = start
        for k in range(start + 1, end):
            if gaps[k] >= width:
                out.append((cut, k, cut, 0))
                cut = k
        out.append((cut, end, cut, 0))
    return out


def _stretches(lines: _Lines) -> list[tuple[str | None, int, int, bool]]:
    """(forwarded_from, lo, hi, closed) between headers and enders; `closed`: ended by an ender, so
    the stretch is one post. A header with nothing after it is still a post."""
    n = len(lines.raws)
    kinds = lines.kinds
    out: list[tuple[str | None, int, int, bool]] = []
    name: str | None = None
    lo = 0
    opened = False  # a header opened the current stretch
    for at in range(n):
        kind = kinds[at]
        if kind == _HEADER_LINE:
            if at > lo or opened:
                out.append((name, lo, at, False))
            name, lo, opened = lines.names[at], at + 1, True
        elif kind == _ENDER:
            if at > lo or opened:
                out.append((name, lo, at, True))
            name, lo, opened = None, at + 1, False
    if n > lo or opened:
        out.append((name, lo, n, False))
    return out


def _drop_channel_name(lines: _Lines) -> None:
    """Drop the line that opens every post ended by a footer (2 or more such posts): the channel's
    name, which a flattened page prints above each post."""
    kinds, ids = lines.kinds, lines.ids
    opening: list[int] = []  # the first line of each segment that an ender closes
    start = 0
    for at, kind in enumerate(kinds):
        if kind == _ENDER:
            if at > start:
                opening.append(start)
            start = at + 1
    if len(opening) < 2 or len({ids[at] for at in opening}) != 1 or kinds[opening[0]] != _TEXT:
        return
    gone = set(opening)
    keep = [at for at in range(len(ids)) if at not in gone]
    new_index = {at: k for k, at in enumerate(keep)}
    lines.names = {new_index[at]: name for at, name in lines.names.items()}
    lines.raws = [lines.raws[at] for at in keep]
    lines.ids = [ids[at] for at in keep]
    lines.kinds = [kinds[at] for at in keep]
    lines.gaps = [lines.gaps[at] for at in keep]


def parse_dump(text: str) -> list[DumpPost]:
    """Split a dump (LF, CRLF or CR line endings) into posts, each body once, in order."""
    lines = _Lines(text)
    _drop_channel_name(lines)
    stretches = _stretches(lines)
    split: list[tuple[str | None, Bounds]] = []
    for name, lo, hi, closed in stretches:
        if hi > lo and not closed:
            split.append((name, _split(lines, lo, hi)))
        elif hi > lo or name is not None:
            split.append((name, [(lo, hi, lo, 0)]))  # a footer closes one whole post
    if (
        len(split) == 1
        and split[0][0] is None
        and not stretches[0][3]
        and all(length == 0 for *_, length in split[0][1])
    ):
        split = [(None, _plain_list(lines, split[0][1]))]

    posts: list[DumpPost] = []
    words_of: dict[int, bytes] = {}  # a line's words, by its id
    for name, bounds in split:
        for k, (start, end, run, length) in enumerate(bounds):
            # The doubled run's second copy goes first: its text lines are a run of the post's text
            # lines doubled in a row, so this is one step of the collapse below, taken for free.
            keep = [*range(start, run + length), *range(run + 2 * length, end)]
            media: list[str] = []
            if _PLACEHOLDER in lines.kinds[start:end]:
                for i in keep:
                    if lines.kinds[i] == _PLACEHOLDER and (flag := lines.flags[lines.ids[i]]) is not None:
                        media.append(flag)
                keep = [i for i in keep if lines.kinds[i] != _PLACEHOLDER]
            ids = [lines.ids[i] for i in keep]
            raws = [lines.raws[i] for i in keep]
            _collapse(ids, raws)
            words = []
            for line_id in ids:
                line_id_words = words_of.get(line_id)
                if line_id_words is None:
                    line_id_words = words_of[line_id] = line_words(lines.keys[line_id])
                words.append(line_id_words)
            content = content_of("\n".join(raws), (), media, digest(words))
            posts.append(DumpPost(index=len(posts), forwarded_from=name if k == 0 else None, content=content))
    return posts
