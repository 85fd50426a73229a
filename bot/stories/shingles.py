"""A post's text as word shingles, over the normal form the rules match on.

Cleaning, in order: emoji (and the marks that only shape them) become spaces; the text takes the
rules' normal form (`bot.rules.terms.normalise_mapped`: NFKC, case folding, ё read as е, zero-width
characters dropped); links, @mentions and #hashtags go; what is left splits into lines of words
(runs of letters and digits). A channel's boilerplate lines are left out by the caller (in their
`canonical` form), and the remaining words give the shingles (`SIZE` words in a row; a shorter post
is one), so a header or footer line added by a copy adds a few shingles and changes none of the
others.

Latin and Cyrillic text, the common case, stays in cp1251 bytes from end to end (two C calls fold it,
one translates punctuation away); other scripts take the slower path through `str`, and both paths
give the same words the same bytes.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Sequence

import numpy as np
import xxhash

from bot.parse.fingerprint import EMOJI
from bot.rules.terms import NARROW, fold_narrow, normalise_mapped

SIZE = 3  # words per shingle

# What only shapes an emoji: variation selectors, the keycap mark, the joiner of ZWJ sequences.
_SHAPERS = frozenset("\ufe0f\ufe0e\u20e3\u200d")
_emoji_memo: dict[str, bool] = {}


def _is_emoji(ch: str) -> bool:
    found = _emoji_memo.get(ch)
    if found is None:
        if len(_emoji_memo) > 4096:
            _emoji_memo.clear()
        found = _emoji_memo[ch] = ch in _SHAPERS or EMOJI.match(ch) is not None
    return found


def _word_table() -> bytes:
    # cp1251 letters and digits stay, the line break stays, everything else is a space.
    table = bytearray(b" " * 256)
    for b in range(256):
        try:
            ch = bytes([b]).decode(NARROW)
        except UnicodeDecodeError:
            continue
        if ch.isalnum():
            table[b] = b
    table[10] = 10
    return bytes(table)


_WORDS_ONLY = _word_table()
# Links with a scheme, www. or t.me/, and bare domain/path ones; mentions; hashtags. Applied to
# folded text, so lower case is enough.
_LINK_B = re.compile(rb"(?:https?://|www\.|t\.me/)\S*|(?<![\w.])(?:[a-z0-9-]+\.)+[a-z]{2,}/\S*")
_MENTION_B = re.compile(rb"@[a-z0-9_]+")
_HASHTAG_B = re.compile(rb"#\S*")
_LINK_S = re.compile(r"(?:https?://|www\.|t\.me/)\S*|(?<![\w.])(?:[a-z0-9-]+\.)+[a-z]{2,}/\S*")
_MENTION_S = re.compile(r"@[a-z0-9_]+")
_HASHTAG_S = re.compile(r"#\S*")
_WORD_S = re.compile(r"[^\W_]+")


def _strip_b(data: bytes) -> bytes:
    if b"/" in data:
        data = _LINK_B.sub(b" ", data)
    if b"@" in data:
        data = _MENTION_B.sub(b" ", data)
    if b"#" in data:
        data = _HASHTAG_B.sub(b" ", data)
    return data


def _word_bytes(word: str) -> bytes:
    # The fast path's bytes for a word cp1251 can spell, so a word hashes alike on both paths.
    try:
        return word.encode(NARROW)
    except UnicodeEncodeError:
        return b"\x00" + word.encode("utf-8", "surrogatepass")


def _folded(text: str) -> tuple[bytes | None, str]:
    """The rules' normal form of `text` with emoji as spaces: as cp1251 bytes when it can be (Latin and
    Cyrillic), else None and the text for the `str` path."""
    if text.isascii():
        return text.lower().encode("ascii"), text
    data = text.encode(NARROW, "replace")
    # "replace" writes one '?' for each character cp1251 lacks, so data and text line up character
    # for character: each such '?' must be an emoji (it then reads as punctuation, as emoji do).
    if data.count(b"?") != text.count("?"):
        at = data.find(b"?")
        while at >= 0:  # a handful of emoji a post: a find loop, not numpy's cost per call
            ch = text[at]
            if ch != "?" and not _is_emoji(ch):
                return None, text
            at = data.find(b"?", at + 1)
    # The rules' fold (`normalise_mapped`'s fast path) straight on the bytes in hand.
    narrow = fold_narrow(data)
    if narrow is not None:
        return narrow, text
    norm = normalise_mapped(data.decode(NARROW))
    if norm.narrow is not None:
        return norm.narrow, norm.text
    # cp1251 text whose fold leaves cp1251 (… reads as ...): what cp1251 cannot spell after folding
    # is no letter of these scripts.
    return norm.text.encode(NARROW, "replace"), norm.text


def clean(text: str) -> bytes:
    """`text` cleaned: its words (cp1251 bytes, or a NUL and UTF-8 for other scripts), one space
    between them, its lines kept apart by line breaks."""
    data, folded = _folded(text)
    if data is not None:  # the common case
        return _strip_b(data).translate(_WORDS_ONLY)
    folded = normalise_mapped("".join(" " if _is_emoji(ch) else ch for ch in folded)).text
    folded = _HASHTAG_S.sub(" ", _MENTION_S.sub(" ", _LINK_S.sub(" ", folded)))
    return b"\n".join(b" ".join(map(_word_bytes, _WORD_S.findall(line))) for line in folded.splitlines())


def lines(text: str) -> list[list[bytes]]:
    """The cleaned words of each line of `text` (lines left empty are dropped)."""
    return [words for words in (line.split() for line in clean(text).split(b"\n")) if words]


def post_lines(text: str) -> list[bytes]:
    """The cleaned lines of `text`, empty lines dropped. A line's words may stand more than one space
    apart: `canonical` gives the form boilerplate is learned and recognised in."""
    return [line for line in clean(text).split(b"\n") if line and not line.isspace()]


def canonical(line: bytes) -> bytes:
    return b" ".join(line.split())


def short_lines(rows: Sequence[bytes], max_words: int) -> list[bytes]:
    """The lines that may be boilerplate (at most `max_words` words), in canonical form."""
    # A word is at least one byte and a space: a longer line has more words.
    limit = 24 * max_words
    out = []
    for row in rows:
        if len(row) <= limit:
            words = row.split()
            if len(words) <= max_words:
                out.append(b" ".join(words))
    return out


class _WordHashes(dict):
    """Word -> 32-bit hash, so that `map(get, words)` stays in C for words seen before (most are)."""

    def __missing__(self, word: bytes) -> int:
        if len(self) >= 262_144:
            self.clear()  # bounded: the vocabulary of a day's posts fits many times over
        value = self[word] = xxhash.xxh32_intdigest(word)
        return value


_word_hash = _WordHashes().__getitem__
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))
_HALF = np.uint64(32)


def shingles(words: Sequence[bytes], size: int = SIZE) -> np.ndarray:
    """32-bit hashes of the shingles of a post's words (uint32, repeats kept): the MinHash input.

    Shingles run across line breaks: a header or footer line then adds `size - 1` shingles more than
    it would inside its own line, and the words are hashed in one pass. Each word is hashed once; a
    shingle's hash mixes its words' hashes in order, in numpy. A post shorter than a shingle is one.
    """
    return shingles_many([words], size)[0]


def shingles_many(posts: Sequence[Sequence[bytes]], size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """`shingles` of many posts' words at once: their hashes end to end, and how many each post has.

    One numpy pass for a batch: with a few dozen shingles a post, numpy's cost per call, not the
    arithmetic, is most of `shingles`' time. Windows that cross from one post into the next are cut.
    """
    hashes = array("I")
    counts = np.zeros(len(posts), dtype=np.int64)
    ends = []
    short: dict[int, int] = {}  # a post shorter than a shingle is one, hashed whole
    for i, words in enumerate(posts):
        if len(words) >= size:
            hashes.extend(map(_word_hash, words))
            ends.append(len(hashes))
            counts[i] = len(words) - size + 1
        elif words:
            short[i] = xxhash.xxh32_intdigest(b" ".join(words))
            counts[i] = 1
    w = np.frombuffer(hashes, dtype=np.uint32).astype(np.uint64)
    n = max(len(w) - size + 1, 0)
    # Array arithmetic wraps modulo 2**64 without a warning (only numpy scalars warn). The high half
    # of a sum of odd multiples is well mixed; datasketch's finalizer mixes it again.
    mixed = w[:n] * _MIX[0]
    for i in range(1, size):
        mixed += w[i : i + n] * _MIX[i % 3]
    mixed >>= _HALF
    # A window starting in the last size - 1 words of a post reaches into the next one.
    keep = np.ones(n, dtype=bool)
    for end in ends:
        keep[max(end - size + 1, 0) : end] = False
    whole = mixed[keep].astype(np.uint32)
    if not short:
        return whole, counts
    # Put each short post's one hash where it falls in post order.
    out = np.empty(int(counts.sum()), dtype=np.uint32)
    at = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out[at[list(short)]] = list(short.values())
    mask = np.ones(len(out), dtype=bool)
    mask[at[list(short)]] = False
    out[mask] = whole
    return out, counts
