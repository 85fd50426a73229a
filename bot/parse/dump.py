"""Splitting a flattened channel dump into posts, each body printed once.

The export prints each post as a `Forwarded from NAME` header (sometimes none), usually a title line,
a block of lines, then the same block again. A post ends where its doubled run ends, plus the media
placeholders right after it; what follows, up to the next header, is a new post without a header.
"""

from __future__ import annotations

from pathlib import Path

import regex

from bot.errors import InputError
from bot.parse.fingerprint import compare_key, digest, line_words
from bot.parse.model import DumpPost
from bot.parse.normalise import content_of

_BOM = b"\xef\xbb\xbf"
_HEADER_PREFIX = "Forwarded from "
_HEADER = regex.compile(r"Forwarded\s+from\s+(.*\S)")

# Placeholder lines, as compared (casefolded): the flag each sets, or None for a line only dropped.
PLACEHOLDERS: dict[str, str | None] = {
    "please open telegram to view this post": "unsupported",
    "media is too big": "too_big",
    "view in telegram": None,
}
_LONGEST_PLACEHOLDER = max(map(len, PLACEHOLDERS))

_TEXT, _HEADER_LINE, _PLACEHOLDER = 0, 1, 2


def decode_dump(data: bytes, source: str) -> str:
    """A dump's bytes as text: UTF-8, with or without a BOM. `source` names the input in errors."""
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return str(data[skip:], "utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{source}: not valid UTF-8 at byte {err.start + skip}") from None


def read_dump(path: str | Path) -> str:
    """A dump file's text; a missing file, a directory or bad bytes give an InputError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a dump file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
    return decode_dump(data, str(path))


class _Lines:
    """The dump's non-blank lines: verbatim text, an int per distinct compared form, and a kind."""

    __slots__ = ("flags", "ids", "keys", "kinds", "names", "raws")

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
        self.raws = raws
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


def _split(lines: _Lines, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
    """The posts in the header-free stretch [lo, hi) of lines: (start, end, run start, run length)."""
    ids, kinds = lines.ids, lines.kinds
    where = _positions(ids, lo, hi)
    posts = []
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
        posts.append((pos, end, run, length))
        pos = end
    return posts


def parse_dump(text: str) -> list[DumpPost]:
    """Split a dump (LF, CRLF or CR line endings) into posts, each body once, in order."""
    lines = _Lines(text)
    n = len(lines.raws)
    headers = sorted(lines.names)
    stretches = []  # (forwarded_from, lo, hi); a header with nothing after it is still a post
    if not headers or headers[0] > 0:
        stretches.append((None, 0, headers[0] if headers else n))
    for k, at in enumerate(headers):
        stretches.append((lines.names[at], at + 1, headers[k + 1] if k + 1 < len(headers) else n))

    posts: list[DumpPost] = []
    words_of: dict[int, bytes] = {}  # a line's words, by its id
    for name, lo, hi in stretches:
        bounds = _split(lines, lo, hi) if hi > lo else [(lo, lo, lo, 0)] if name is not None else []
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


def as_record(post: DumpPost) -> dict:
    """A post as `tgsentinel parse` prints it (one JSON object per post)."""
    content = post.content
    return {
        "index": post.index,
        "forwarded_from": post.forwarded_from,
        "title": content.title,
        "text": content.text,
        "hashtags": list(content.hashtags),
        "mentions": list(content.mentions),
        "urls": list(content.urls),
        "media": list(content.media),
        "fingerprint": content.fingerprint,
    }
