"""Term semantics: the one normalisation applied to posts and terms, and what each term kind means.

Text is matched after NFKC and Unicode case folding, with ё read as е and zero-width characters
dropped. Hits must be reported in the post's *original* text, so normalising also yields a map from
normalised positions back to original ones.
"""

from __future__ import annotations

import re
import re._constants as _sre
import re._parser as _sre_parse
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import regex

# Invisible characters that editors and copy-paste sprinkle into words (soft hyphen included).
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"
_DROP = {ord(c): None for c in ZERO_WIDTH}
_WORD = regex.compile(r"\w")
_SPACE = regex.compile(r"\s+")


@lru_cache(maxsize=4096)
def is_word_char(ch: str) -> bool:
    """A word character as the `regex` module's `\\w` sees it, in every script."""
    return _WORD.match(ch) is not None


def _fold(s: str) -> str:
    # Case folding can leave text that is not NFKC (and NFKC can unfold), so fold between two passes.
    # After case folding only the lower-case ё is left to read as е.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", s).casefold()).replace("ё", "е")


@dataclass(frozen=True, slots=True)
class Normalised:
    """`text` is the normalised text; `origin[i]` is where its i-th character came from (None: identity).

    `origin` has one extra entry, the original length, so an end offset maps like a start offset.
    """

    text: str
    origin: list[int] | None
    # The normalised text in cp1251, one byte per character, when the fast path made it anyway.
    narrow: bytes | None = None

    def span(self, start: int, end: int) -> tuple[int, int]:
        if self.origin is None:
            return start, end
        o = self.origin
        # The end maps to the end of the original chunk that produced the last character.
        last = o[end - 1] if end > start else o[start]
        nxt = next((o[j] for j in range(end, len(o)) if o[j] > last), o[-1])
        return o[start], nxt


def _chunks(text: str):
    """Split into a starter and the combining marks after it, so composition never crosses chunks."""
    start = 0
    combining = unicodedata.combining
    for i in range(1, len(text)):
        ch = text[i]
        if combining(ch) or "\u1160" <= ch <= "\u11ff":  # marks, and conjoining Hangul jamo
            continue
        yield start, text[start:i]
        start = i
    if text:
        yield start, text[start:]


NARROW = "cp1251"


def _narrow_tables() -> tuple[bytes, bytes]:
    """The cp1251 bytes whose character folds, on its own, to one cp1251 character; and that fold.

    For text made only of such characters (no combining marks among them, so nothing composes across
    characters), folding the whole text is folding each character: a byte-to-byte table does it.
    """
    safe = bytearray()
    table = bytearray(range(256))
    for b in range(256):
        try:
            char = bytes([b]).decode(NARROW)
        except UnicodeDecodeError:
            continue
        folded = _fold(char.translate(_DROP))
        if len(folded) != 1 or unicodedata.combining(char) or not unicodedata.is_normalized("NFKC", char):
            continue
        try:
            table[b] = folded.encode(NARROW)[0]
        except UnicodeEncodeError:
            continue
        safe.append(b)
    return bytes(safe), bytes(table)


_NARROW_SAFE, _NARROW_FOLD = _narrow_tables()


def fold_narrow(data: bytes) -> bytes | None:
    """cp1251 text folded byte by byte, or None when a byte's character does not fold on its own."""
    return None if data.translate(None, _NARROW_SAFE) else data.translate(_NARROW_FOLD)


def normalise_mapped(text: str, fold: bool = True) -> Normalised:
    """Normalise `text` (folded for terms and words, or NFC only for regex terms), keeping the map."""
    if text.isascii():
        # ASCII is its own NFKC and NFC, holds no zero-width characters or ё, and folds by lower().
        return Normalised(text.lower() if fold else text, None)
    if fold:
        # Latin and Cyrillic text, the common case, folds byte by byte in cp1251: two C calls.
        try:
            narrow = fold_narrow(text.encode(NARROW))
        except UnicodeEncodeError:
            narrow = None
        if narrow is not None:
            return Normalised(narrow.decode(NARROW), None, narrow)
    if fold:
        # str methods rather than a regex or translate(): this runs for every post.
        if unicodedata.is_normalized("NFKC", text) and not any(c in text for c in ZERO_WIDTH):
            folded = text.casefold()
            # Full case folding maps each character on its own, so equal lengths mean one-to-one.
            if len(folded) == len(text) and unicodedata.is_normalized("NFKC", folded):
                return Normalised(folded.replace("ё", "е"), None)
    elif unicodedata.is_normalized("NFC", text):
        return Normalised(text, None)
    out: list[str] = []
    origin: list[int] = []
    for pos, chunk in _chunks(text):
        piece = _fold(chunk.translate(_DROP)) if fold else unicodedata.normalize("NFC", chunk)
        out.append(piece)
        origin.extend([pos] * len(piece))
    origin.append(len(text))
    return Normalised("".join(out), origin)


def normalise(text: str) -> str:
    """The normalised form of a term or text, without the position map."""
    return _fold(text.translate(_DROP))


# --- terms -----------------------------------------------------------------------------------------

WORD, PREFIX, HASHTAG = "word", "prefix", "hashtag"


@dataclass(frozen=True, slots=True)
class Literal:
    """A word, phrase, prefix or hashtag term, compiled for the engine.

    `key` is what the automaton (or the hashtag index) looks for: the normalised term for words,
    the first white-space-free piece for phrases, the tag for hashtags.
    """

    source: str  # the term as written in the rule
    kind: str
    key: str
    norm: str  # the whole normalised term (pieces joined by one space)
    bound_start: bool  # a word character starts it: a boundary is required before
    bound_end: bool  # a word character ends it: a boundary is required after (not for prefixes)
    phrase: regex.Pattern[str] | None  # set for multi-piece phrases, matched at the key's position


def term_problem(term: str) -> str | None:
    """Why a string term is invalid, or None."""
    body = term.strip()
    if not normalise(body).strip():
        return "empty term"
    if "*" in body[:-1]:
        return f"'*' is allowed only at the end of a term: {term!r}"
    if body.startswith("#"):
        tag = body[1:]
        if not tag or body.endswith("*"):
            return f"a hashtag term needs a tag and takes no '*': {term!r}"
        if _SPACE.search(tag):
            return f"a hashtag has no spaces: {term!r}"
    elif body.endswith("*") and not normalise(body[:-1]).strip():
        return f"'*' needs a prefix before it: {term!r}"
    return None


@lru_cache(maxsize=65536)
def compile_literal(term: str) -> Literal:
    body = term.strip()
    if body.startswith("#"):
        tag = normalise(body[1:])
        return Literal(term, HASHTAG, tag, tag, False, False, None)
    kind = WORD
    if body.endswith("*"):
        kind, body = PREFIX, body[:-1]
    pieces = _SPACE.split(normalise(body).strip())
    norm = " ".join(pieces)
    bound_start = is_word_char(norm[0])
    bound_end = kind == WORD and is_word_char(norm[-1])
    phrase = None
    if len(pieces) > 1:
        pattern = r"\s+".join(regex.escape(p) for p in pieces)
        pattern += r"(?!\w)" if bound_end else (r"\w*" if kind == PREFIX else "")
        phrase = regex.compile(pattern)
    return Literal(term, kind, pieces[0], norm, bound_start, bound_end, phrase)


REGEX_FLAGS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "x": regex.VERBOSE}


def compile_regex(pattern: str, flags: str = "") -> regex.Pattern[str]:
    """Compile a regex term; raises regex.error (or KeyError for an unknown flag)."""
    value = 0
    for f in flags:
        value |= REGEX_FLAGS[f]
    return regex.compile(pattern, value)


def hashtag_key(tag: str) -> str:
    return normalise(tag.lstrip("#"))


# --- regex terms that may backtrack catastrophically -----------------------------------------------

# Python's own parser reads the syntax `regex` shares with `re`; a pattern only `regex` reads
# (\p{...}, fuzzy matching) gets no opinion rather than a wrong one.
_RE_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_REPEATS = {_sre.MAX_REPEAT, _sre.MIN_REPEAT}  # possessive repeats and atomic groups never backtrack
_NULLABLE_OPS = {_sre.AT, _sre.ASSERT, _sre.ASSERT_NOT, _sre.GROUPREF, _sre.GROUPREF_EXISTS}
_CATEGORIES = {
    _sre.CATEGORY_DIGIT: str.isdigit,
    _sre.CATEGORY_SPACE: str.isspace,
    _sre.CATEGORY_WORD: lambda ch: ch.isalnum() or ch == "_",
}
_ANY = "any"  # in a first set: could be any character


def backtracking_risk(pattern: str, flags: str = "") -> bool:
    """Whether a regex term has a repeated part whose end can also start its next repetition, such as
    `(a+)+`, `(\\w*)*`, `(\\w+\\s?)+` or `(a|aa)+`: a post that almost matches then costs time
    exponential in its length. A heuristic, for a warning: `(\\d+,)+` is fine and is not flagged."""
    value = 0
    for f in flags:
        value |= _RE_FLAGS[f]
    try:
        tree = _sre_parse.parse(pattern, value)
    except (re.error, OverflowError, RecursionError):
        return False
    return _risky(list(tree))


def _risky(seq: list) -> bool:
    for op, av in seq:
        if op in _REPEATS:
            body = list(av[2])
            if av[1] == _sre.MAXREPEAT and _tail_restarts(body, _first(body)):
                return True
            if _risky(body):
                return True
        else:
            if any(_risky(list(sub)) for sub in _children(op, av)):
                return True
    return False


def _children(op: Any, av: Any) -> list:
    if op == _sre.SUBPATTERN:
        return [av[3]]
    if op == _sre.BRANCH:
        return list(av[1])
    if op in (_sre.ATOMIC_GROUP,):
        return [av]
    if op in (_sre.ASSERT, _sre.ASSERT_NOT):
        return [av[1]]
    if op in (_sre.POSSESSIVE_REPEAT,):
        return [av[2]]
    if op == _sre.GROUPREF_EXISTS:
        return [b for b in av[1:] if b is not None]
    return []


def _tail_restarts(seq: list, first: set) -> bool:
    """Whether something that can repeat, or be left out, at the end of `seq` can start with a
    character in `first`: then one stretch of text splits into repetitions in many ways."""
    for op, av in reversed(seq):
        if op in _REPEATS and av[1] > av[0] and _overlap(_first(list(av[2])), first):
            return True
        if op in _REPEATS and _tail_restarts(list(av[2]), first):
            return True
        if op == _sre.SUBPATTERN and _tail_restarts(list(av[3]), first):
            return True
        if op == _sre.BRANCH:
            alternatives = [list(a) for a in av[1]]
            if any(alternatives.count(a) > 1 for a in alternatives):
                return True  # the same thing twice, two ways to match it
            if any(not a for a in alternatives) and _overlap(_first_of(op, av), first):
                return True  # optional: (a|aa) is parsed as a(|a)
            if any(_tail_restarts(a, first) for a in alternatives):
                return True
        if not _nullable(op, av):
            return False
    return False


def _first(seq: list) -> set:
    out: set = set()
    for op, av in seq:
        out |= _first_of(op, av)
        if not _nullable(op, av):
            break
    return out


def _first_of(op: Any, av: Any) -> set:
    if op == _sre.LITERAL:
        return {chr(av)}
    if op == _sre.IN:
        if any(o == _sre.NEGATE for o, _ in av):
            return {_ANY}
        out: set = set()
        for o, a in av:
            if o == _sre.LITERAL:
                out.add(chr(a))
            elif o == _sre.RANGE:
                out.add((a[0], a[1]))
            elif o == _sre.CATEGORY:
                out.add(a)
            else:
                out.add(_ANY)
        return out
    if op in _REPEATS or op == _sre.POSSESSIVE_REPEAT:
        return _first(list(av[2]))
    if op == _sre.SUBPATTERN:
        return _first(list(av[3]))
    if op == _sre.ATOMIC_GROUP:
        return _first(list(av))
    if op == _sre.BRANCH:
        return set().union(*(_first(list(a)) for a in av[1]))
    if op in _NULLABLE_OPS:
        return set()
    return {_ANY}  # ANY, NOT_LITERAL and the rest: assume the worst


def _nullable(op: Any, av: Any) -> bool:
    if op in _REPEATS or op == _sre.POSSESSIVE_REPEAT:
        return av[0] == 0 or all(_nullable(o, a) for o, a in av[2])
    if op == _sre.SUBPATTERN:
        return all(_nullable(o, a) for o, a in av[3])
    if op == _sre.ATOMIC_GROUP:
        return all(_nullable(o, a) for o, a in av)
    if op == _sre.BRANCH:
        return any(all(_nullable(o, a) for o, a in alt) for alt in av[1])
    return op in _NULLABLE_OPS


def _member(ch: str, token: Any) -> bool:
    if isinstance(token, str):
        return token == ch
    if isinstance(token, tuple):
        return token[0] <= ord(ch) <= token[1]
    test = _CATEGORIES.get(token)
    if test is not None:
        return test(ch)
    negated = {_sre.CATEGORY_NOT_DIGIT: str.isdigit, _sre.CATEGORY_NOT_SPACE: str.isspace}.get(token)
    if negated is not None:
        return not negated(ch)
    if token == _sre.CATEGORY_NOT_WORD:
        return not (ch.isalnum() or ch == "_")
    return True


def _sample(token: Any) -> list[str]:
    """A few characters a first-set token stands for, to test against another token."""
    if isinstance(token, str):
        return [token]
    if isinstance(token, tuple):
        lo, hi = token
        return [chr(c) for c in range(lo, min(hi, lo + 255) + 1)]
    return [chr(c) for c in range(32, 0x500)]


def _overlap(a: set, b: set) -> bool:
    if not a or not b:
        return False
    if _ANY in a or _ANY in b:
        return True
    return any(any(_member(ch, y) for ch in _sample(x)) for x in a for y in b)
