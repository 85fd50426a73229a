"""The query language, read once for both stores: words, "phrases", -exclusions, #tags, prefix*.

- `word`: a word in any form (`санкции` finds `санкциям`); several words must all be there;
- `"two words"`: the words next to each other, in this order;
- `-word`, `-"two words"`, `-#tag`: posts without it;
- `#tag`: posts with that hashtag (case and ё/е ignored), not the word in the text;
- `prefix*`: words that start so. A prefix is matched against the indexed stems: `санкц*` and
  `санкци*` find `санкции`, `negotiat*` finds `negotiations` (whose stem, `negoti`, is shorter than the
  prefix). A word that folds into two (`covid-19`) is a phrase of both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.parse.hashtags import hashtag_spans
from bot.rules.terms import normalise_mapped
from bot.search import tokens
from bot.search.model import QueryError

MIN_PREFIX = 3  # letters before '*': a shorter prefix stands for too many words to search fast
_PIECE = re.compile(r'(-?)"([^"]*)"(\*?)|([^\s"]+)')


@dataclass(frozen=True, slots=True)
class Term:
    """One part of a query: `stems` in order (a phrase when more than one), or a hashtag.

    For a prefix, `stems` are the words before the last, and the last word is any stem that starts
    with one of `prefixes` or is one of `near` (the shorter stems a word with that prefix may have).
    """

    stems: tuple[str, ...]
    tag: bool = False
    negated: bool = False
    prefixes: tuple[str, ...] = ()
    near: tuple[str, ...] = ()

    @property
    def prefix(self) -> bool:
        return bool(self.prefixes)

    def alternatives(self) -> list[tuple[tuple[str, ...], bool]]:
        """The term as phrases: (stems, whether the last is a prefix); any of them will do."""
        if not self.prefixes:
            return [(self.stems, False)]
        return [((*self.stems, p), True) for p in self.prefixes] + [
            ((*self.stems, n), False) for n in self.near
        ]

    def last_hits(self, stem: str) -> bool:
        """Whether a word of the text, by its stem, is this term's last word."""
        if self.prefixes:
            return stem.startswith(self.prefixes) or stem in self.near
        return stem == self.stems[-1]

    @property
    def length(self) -> int:
        return len(self.stems) + (1 if self.prefixes else 0)


@dataclass(frozen=True, slots=True)
class Query:
    terms: tuple[Term, ...]

    @property
    def positive(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if not t.negated)

    @property
    def negative(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.negated)

    def __bool__(self) -> bool:
        return bool(self.terms)


def parse(query: str) -> Query:
    """The terms of a query; QueryError (one line) for one that cannot be searched."""
    if query.count('"') % 2:
        raise QueryError('the query has an unclosed quote (")')
    terms: list[Term] = []
    for m in _PIECE.finditer(query):
        negated, quoted, star, bare = m.group(1) == "-", m.group(2), m.group(3), m.group(4)
        if quoted is not None:
            if star or quoted.rstrip().endswith("*"):  # "foreign minis"* or "foreign minis*"
                terms.append(_prefix(quoted.rstrip().rstrip("*"), negated, f'"{quoted}"{star}'))
                continue
            stems = tokens.stems(quoted)
            if not stems:
                if not quoted.strip():
                    continue  # "" asks for nothing
                raise QueryError(f'"{quoted}" has no letters or digits to search for')
            terms.append(Term(tuple(stems), negated=negated))
            continue
        piece = bare
        if piece.startswith("-") and len(piece) > 1:
            negated, piece = True, piece[1:]
        if piece == "-":
            continue
        terms.append(_bare(piece, negated))
    if terms and all(t.negated for t in terms):
        raise QueryError("a query needs something to find besides what it excludes (-word)")
    return Query(tuple(terms))


def _bare(piece: str, negated: bool) -> Term:
    if piece.startswith("#"):
        if piece.endswith("*"):
            raise QueryError(f"a hashtag takes no '*': {piece}")
        tag = tokens.tag(piece)
        if not tag:
            raise QueryError(f"'#' needs a tag after it: {piece}")
        return Term((tag,), tag=True, negated=negated)
    if piece.endswith("*"):
        body = piece.rstrip("*")
        if "*" in body:
            raise QueryError(f"'*' goes only at the end of a word: {piece}")
        return _prefix(body, negated, piece)
    if "*" in piece:
        raise QueryError(f"'*' goes only at the end of a word: {piece}")
    stems = tokens.stems(piece)
    if not stems:
        raise QueryError(f"{piece!r} has no letters or digits to search for")
    return Term(tuple(stems), negated=negated)


def _prefix(body: str, negated: bool, piece: str) -> Term:
    """A prefix term: `body`'s words, the last of them a prefix."""
    if "*" in body:
        raise QueryError(f"'*' goes only at the end of a word: {piece}")
    folded = tokens.folded_words(body)
    if not folded:
        raise QueryError(f"'*' needs a prefix before it: {piece}")
    if len(folded[-1]) < MIN_PREFIX:
        raise QueryError(f"a prefix needs at least {MIN_PREFIX} letters before '*': {piece}")
    *head, last = folded
    stem = tokens.stem(last)
    prefixes = (stem,) if last.startswith(stem) else (stem, last)
    # A word's stem may be shorter than the prefix typed (`negotiat*` for `negotiations`, whose
    # stem is `negoti`): the prefix cut by up to three letters, as a whole stem, finds it.
    near = tuple(
        cut
        for cut in dict.fromkeys(last[:k] for k in range(len(last) - 1, len(last) - 4, -1) if k >= 4)
        if not cut.startswith(prefixes)
    )
    return Term(tuple(tokens.stem(w) for w in head), negated=negated, prefixes=prefixes, near=near)


# --- highlighting ----------------------------------------------------------------------------------


def spans(text: str, query: Query) -> list[tuple[int, int]]:
    """Where in `text` (original offsets, sorted, not overlapping) the query's positive terms are."""
    wanted = query.positive
    if not wanted:
        return []
    norm = normalise_mapped(text)
    found: list[tuple[int, int]] = []
    if any(not t.tag for t in wanted):
        words = tokens.words(norm)
        stems = [w.stem for w in words]
        for term in wanted:
            if term.tag:
                continue
            n, head = term.length, list(term.stems)
            first = head[0] if head else None
            for i in range(len(words) - n + 1):
                if first is not None and stems[i] != first:
                    continue
                if term.prefix:
                    if stems[i : i + n - 1] != head or not term.last_hits(stems[i + n - 1]):
                        continue
                elif n > 1 and stems[i : i + n] != head:
                    continue
                found.append(norm.span(words[i].start, words[i + n - 1].end))
    tag_terms = {t.stems[0] for t in wanted if t.tag}
    if tag_terms:
        for start, end in hashtag_spans(text):
            if tokens.tag(text[start:end]) in tag_terms:
                found.append((start, end))
    found.sort()
    merged: list[tuple[int, int]] = []
    for start, end in found:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def pieces(text: str, marks: list[tuple[int, int]]) -> list[tuple[str, bool]]:
    """`text` cut at `marks`: (piece, is_hit), covering it whole."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for start, end in marks:
        if start > pos:
            out.append((text[pos:start], False))
        out.append((text[start:end], True))
        pos = end
    if pos < len(text) or not out:
        out.append((text[pos:], False))
    return out
