"""The words of a text as the index keeps them: normalised as the rules do, then stemmed.

Text is first normalised exactly as the rules normalise it (NFKC, case folding, ё as е, zero-width
characters dropped: `bot.rules.terms.normalise_mapped`, which also maps positions back for
highlighting). Words are runs of letters and digits; an apostrophe between two of them is dropped
(`п'ять`, `пʼять`, `don't`). Then each word is stemmed by its script:

- Cyrillic: Ukrainian letters folded to their Russian neighbours (і, ї -> и; є -> е; ґ -> г), then the
  Russian Snowball stemmer, so that `санкции`, `санкцій` and `санкції` are all `санкц`;
- Latin: the English Snowball stemmer (`sanctions` -> `sanction`);
- any other script: the folded word as it is.

Hashtags are kept whole, folded, without '#': `#tag` finds the tag and nothing else.

The index is contentless on SQLite: a post's tokens are recomputed from its stored text to take it
out again, so this module must give the same tokens for the same text for as long as an index built
with it exists. A change to what it yields needs a migration that rebuilds the index.
"""

from __future__ import annotations

import codecs
import functools
import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import regex
import Stemmer

from bot.rules.terms import ZERO_WIDTH, Normalised, normalise, normalise_mapped

# A word is a run of letters and digits (not '_': it is no letter; the index's tokenizer keeps it only
# in tags). Apostrophes and combining marks inside a word are dropped: `п'ять`, `пʼять` and `пять` are
# one word, and so are `за́мок` (a stress mark) and `замок`. Deleting every apostrophe and mark, then
# splitting at whatever is not a letter or digit, is the same thing, and is what the fast path does.
_APOSTROPHE = "'\u02bc\u2019"
_RUN = regex.compile(r"[\p{L}\p{N}\p{M}'\u02bc\u2019]+")
_NOT_PART = regex.compile(r"[\p{M}'\u02bc\u2019]+")
_RUN_NARROW = re.compile("(?:[^\\W_]|['\u02bc\u2019\ufe00-\ufe0f\u20e3])+")
# One character for one, so that offsets in the folded text are offsets in the normalised one.
_UKRAINIAN = str.maketrans("іїєґ", "ииег")
# ASCII punctuation splits a token in the index's tokenizer; a tag keeps every other character.
_TAG_DROP = str.maketrans("", "", "".join(chr(c) for c in range(128) if not (chr(c).isalnum() or c == 95)))


def fold(normalised: str) -> str:
    """Normalised text with the Ukrainian letters folded: one character for one."""
    return normalised.translate(_UKRAINIAN)


def _slow_words(text: str) -> list[str]:
    """The folded words of a text, by the definition (the fast path must agree with it)."""
    runs = _RUN.findall(fold(normalise_mapped(text).text))
    return [w for w in (_NOT_PART.sub("", r) for r in runs) if w]


# The fast path, for text whose letters are all in cp1251 (Latin, Cyrillic) and whose other
# characters (emoji, symbols) are no letters: the rules' normalisation is then character by
# character, so one byte table folds case, ё, the Ukrainian letters, turns what is no letter or digit
# into a space and drops apostrophes; then split(). Several times faster than the regex, and this
# runs for every post stored.
_NARROW = "cp1251"
_SPACE, _DROP, _SLOW = "space", "drop", "slow"
# Marks that compose with nothing under NFKC: emoji variation selectors, the keycap.
_INERT_MARKS = {chr(c) for c in range(0xFE00, 0xFE10)} | {"\u20e3"}


def _kind(ch: str) -> str:
    """What the fast path does with a character outside cp1251."""
    if ch in ZERO_WIDTH or ch in _INERT_MARKS or ch == "\u02bc":
        return _DROP
    if unicodedata.category(ch).startswith("M"):
        return _SLOW  # it may compose with the letter before it
    return _SLOW if any(c.isalnum() for c in normalise(ch)) else _SPACE


def _narrow_table() -> tuple[bytes, bytes, bytes]:
    table = bytearray(range(256))
    drop, safe, chars = bytearray(), bytearray(), []
    for b in range(256):
        try:
            ch = bytes([b]).decode(_NARROW)
        except UnicodeDecodeError:
            table[b] = 32
            continue
        chars.append(ch)
        folded = fold(normalise(ch))
        if ch in _APOSTROPHE or ch in ZERO_WIDTH:
            drop.append(b)
        elif not any(c.isalnum() for c in folded):
            table[b] = 32
        elif len(folded) == 1 and folded.encode(_NARROW, "ignore"):
            table[b] = folded.encode(_NARROW)[0]
        else:
            continue  # not safe: '№' is 'no' to the rules, two letters for one
        safe.append(b)
    return bytes(table), bytes(drop), bytes(safe)


_TABLE, _DROP_BYTES, _SAFE_BYTES = _narrow_table()
_KINDS: dict[str, str] = {}


class _Slow(Exception):
    """A character outside cp1251 that the fast path cannot read."""


def _outside(error: UnicodeEncodeError) -> tuple[str, int]:
    """The encoder's handler for characters outside cp1251 (emoji, mostly): a space for each that is
    no letter, nothing for one that is dropped; `_Slow` for a letter or a mark."""
    out = []
    for ch in error.object[error.start : error.end]:
        kind = _KINDS.get(ch)
        if kind is None:
            kind = _KINDS[ch] = _kind(ch)
        if kind is _SLOW:
            raise _Slow
        if kind is _SPACE:
            out.append(" ")
    return "".join(out), error.end


codecs.register_error("tgsentinel.narrow", _outside)


def _narrow(text: str) -> bytes | None:
    """The text's words as cp1251 bytes, folded and separated by spaces; None when the fast path
    cannot read it (a letter outside cp1251, a combining mark, '№')."""
    try:
        # One pass: the handler sees only the runs of characters outside cp1251.
        data = text.encode(_NARROW, "tgsentinel.narrow")
    except _Slow:
        return None
    if data.translate(None, _SAFE_BYTES):
        return None
    return data.translate(_TABLE, _DROP_BYTES)


def folded_words(text: str) -> list[str]:
    """The folded words of a text, in order: what is stemmed."""
    data = _narrow(text)
    return _slow_words(text) if data is None else data.decode(_NARROW).split()


_local = threading.local()
# word -> stem, shared by the threads (a dict's get and set are atomic); bounded by clearing.
_STEMS: dict[str, str] = {}
_STEMS_MAX = 500_000  # then the rest is stemmed each time (the rare words)


def _stemmers() -> tuple[Stemmer.Stemmer, Stemmer.Stemmer]:
    # PyStemmer's objects are not thread-safe: one pair per thread.
    pair = getattr(_local, "stemmers", None)
    if pair is None:
        pair = (Stemmer.Stemmer("russian"), Stemmer.Stemmer("english"))
        _local.stemmers = pair
    return pair


def _is_cyrillic(ch: str) -> bool:
    return "\u0400" <= ch <= "\u052f"


def _is_latin(ch: str) -> bool:
    return ch.isascii() or "\u00c0" <= ch <= "\u024f" or "\u1e00" <= ch <= "\u1eff"


def stem(word: str) -> str:
    """The stem of one folded word (as `words` yields them)."""
    found = _STEMS.get(word)
    if found is not None:
        return found
    letters = [ch for ch in word if not ch.isdigit()]
    russian, english = _stemmers()
    if letters and any(_is_cyrillic(ch) for ch in letters):
        out = russian.stemWord(word)
    elif letters and all(_is_latin(ch) for ch in letters):
        out = english.stemWord(word)
    else:
        out = word
    if len(_STEMS) < _STEMS_MAX:
        _STEMS[word] = out
    return out


@dataclass(frozen=True, slots=True)
class Word:
    start: int  # in the normalised text
    end: int
    stem: str
    folded: str  # the word before stemming, apostrophes dropped


def words(norm: Normalised) -> list[Word]:
    """Each word of a normalised text, with where it is and its stem (for highlighting)."""
    # Text the fast path reads holds no marks but inert ones: Python's own regex finds its words,
    # several times faster than the `regex` module's \p{M}.
    run = _RUN_NARROW if _narrow(norm.text) is not None else _RUN
    get = _STEMS.get
    out = []
    for m in run.finditer(fold(norm.text)):
        word = m.group()
        if not word.isalnum() or "\u02bc" in word:  # ʼ is a letter to Python
            word = _NOT_PART.sub("", word)
            if not word:
                continue
        out.append(Word(m.start(), m.end(), get(word) or stem(word), word))
    return out


def stems(text: str) -> list[str]:
    """The stems of a text's words, in order: what is indexed, and what a query's words become."""
    get = _STEMS.get
    return [get(w) or stem(w) for w in folded_words(text)]


class _NarrowStems(dict[bytes, bytes]):
    """The same in cp1251 bytes, for the fast path: no str made for each word of each post stored.
    Looked up with `map(__getitem__)`, which runs in C and calls `__missing__` for a new word."""

    def __missing__(self, word: bytes) -> bytes:
        return _narrow_stem(word)


_NARROW_STEMS = _NarrowStems()


def _narrow_stem(word: bytes) -> bytes:
    if word.isdigit():
        return word  # its own stem; not kept, or post and line numbers would fill the cache
    out = stem(word.decode(_NARROW)).encode(_NARROW)  # a stem of cp1251 letters is in cp1251
    if len(_NARROW_STEMS) < _STEMS_MAX:
        _NARROW_STEMS[word] = out
    return out


def body(text: str) -> str:
    """`stems(text)` joined by spaces: the indexed column."""
    data = _narrow(text)
    if data is None:
        return " ".join(stems(text))
    return b" ".join(map(_NARROW_STEMS.__getitem__, data.split())).decode(_NARROW)


@functools.lru_cache(maxsize=16_384)
def tag(hashtag: str) -> str:
    """A hashtag as the index keeps it: folded, without '#', ASCII punctuation dropped."""
    return normalise(hashtag.lstrip("#")).translate(_TAG_DROP)


def tags(hashtags: Iterable[str]) -> list[str]:
    return [t for t in dict.fromkeys(tag(h) for h in hashtags) if t]


Document = tuple[str, str]


def document(text: str, hashtags: Iterable[str]) -> Document:
    """A post's two indexed columns: its text's stems and its tags, each joined by spaces."""
    return body(text), " ".join(tags(hashtags))
