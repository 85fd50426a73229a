"""The rule engine: Aho-Corasick automata over the literal terms, built once per rule set.

Per post: normalise once, scan once, verify word boundaries on the candidates, then evaluate only
the rules a verified term belongs to (plus the few rules that can match without any literal hit,
such as `none`-only or regex-only groups).

Word terms (one word of word characters only, the common case) get their own automaton in
leftmost-longest mode. Such a term hits only as a whole run of word characters, and a pattern made of
word characters cannot reach across a non-word character, so at the start of every run the
leftmost-longest scan reports the longest term starting there: the run itself whenever it is a term.
Non-overlapping matches keep the raw occurrences (and so the boundary checks) down to about one per
word that contains a term. Word terms that the one-byte codec cp1251 can write (Latin and Cyrillic,
the common case) are scanned over the text in that codec: characters outside it become "?", so a
byte offset is a character offset, and Cyrillic takes half the bytes of UTF-8 through a much smaller
automaton; other word terms keep an automaton over the str. Prefixes, phrases and terms with other
characters need every occurrence, so they share one more, overlapping automaton, usually over a
handful of patterns.

Regex terms are the one kind whose cost a post can blow up (a pattern that backtracks
catastrophically). Each gets REGEX_TIMEOUT per post; a `Budget` caps what all of them may cost per
post and per batch, so one bad rule delays the others' alerts by a bounded time; past it the terms
are skipped and counted. A term that times out `disable_after` times in a row is disabled for the
life of the engine, that is, until the rules are reloaded.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import ahocorasick_rs
import regex

from bot import metrics
from bot.channel import scope_key
from bot.rules.model import Hit, RuleMatch
from bot.rules.rule import RegexTerm
from bot.rules.terms import (
    HASHTAG,
    PREFIX,
    WORD,
    Literal,
    Normalised,
    compile_literal,
    compile_regex,
    hashtag_key,
    normalise_mapped,
)

if TYPE_CHECKING:
    from bot.rules.rule import Group, Rule

log = logging.getLogger(__name__)

REGEX_TIMEOUT = 0.05  # seconds per regex term and post: a catastrophic pattern must not stall the monitor
_WORDS = regex.compile(r"\w*")
_WORD = regex.compile(r"\w")
_RUN = regex.compile(r"\w+")
_DFA_LIMIT = 50_000  # word patterns
# A one-byte-per-character codec for word terms: a scan over it touches half the bytes of UTF-8 for
# Cyrillic and a much smaller automaton.
_NARROW = "cp1251"


class _WordChars(dict):
    """char -> is it a word character (`regex`'s `\\w`); a dict lookup is much cheaper than a regex call."""

    def __missing__(self, ch: str) -> bool:
        value = self[ch] = _WORD.match(ch) is not None
        return value


_IS_WORD = _WordChars()


# The engine builds a RuleMatch and its Hits for every match. A frozen dataclass's __init__ goes
# through object.__setattr__ once per field, which costs about twice as much as creating the instance
# and filling its slots directly; the result is the same frozen object.
_new = object.__new__
_hit_term, _hit_start, _hit_end = (getattr(Hit, f.name).__set__ for f in fields(Hit))
_rm_id, _rm_severity, _rm_notify, _rm_terms, _rm_hits = (
    getattr(RuleMatch, f.name).__set__ for f in fields(RuleMatch)
)


def _hit(term: str, start: int, end: int) -> Hit:
    hit = _new(Hit)
    _hit_term(hit, term)
    _hit_start(hit, start)
    _hit_end(hit, end)
    return hit


def _rule_match(
    rule_id: str, severity: str, notify: tuple[str, ...], terms: tuple[str, ...], hits: tuple[Hit, ...]
) -> RuleMatch:
    match = _new(RuleMatch)
    _rm_id(match, rule_id)
    _rm_severity(match, severity)
    _rm_notify(match, notify)
    _rm_terms(match, terms)
    _rm_hits(match, hits)
    return match


# Node kinds of a compiled group tree.
_LIT, _RE, _GROUP = 0, 1, 2
_ALL, _ANY, _NONE = "all", "any", "none"


@dataclass(frozen=True, slots=True)
class MatchInput:
    text: str
    hashtags: Sequence[str] = ()
    channel_names: frozenset[str] = frozenset()
    is_forward: bool = False
    is_edit: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """What regex terms may cost, in seconds: each term per post, all of them per post and per batch;
    and how many full-length timeouts in a row disable a term until the rules are reloaded."""

    term: float = REGEX_TIMEOUT
    post: float = 0.25
    batch: float = 2.0
    disable_after: int = 3


# Why a regex term was not run (the `reason` of tgsentinel_regex_skipped_total).
POST_BUDGET, BATCH_BUDGET, DISABLED = "post_budget", "batch_budget", "disabled"


PAGE = 100  # posts the batch budget is for


class Budget:
    """The regex time one batch has left, and the post in hand within it (wall-clock seconds).

    `regex`'s own timeout counts the process's CPU time, which on a busy machine runs slower than the
    clock a delayed alert is measured by: the budget counts the clock, and gives each term what is
    left of it, at most its own timeout."""

    __slots__ = ("batch_left", "limits", "post_left", "skipped", "spent")

    def __init__(self, limits: Limits = Limits(), posts: int = 1) -> None:
        self.limits = limits
        # The batch budget is per page of posts (a t.me page, a Telethon sweep page): a replay's or
        # an import's 1,000-post batch gets ten of them, not one page's worth for all.
        self.batch_left = limits.batch * max(1, math.ceil(posts / PAGE))
        self.post_left = limits.post
        self.spent = 0.0
        self.skipped: Counter[str] = Counter()

    def next_post(self) -> None:
        self.post_left = self.limits.post

    def allowance(self) -> tuple[float, str]:
        """The timeout the next regex term gets, and what limits it if that is nothing."""
        if self.batch_left <= self.post_left:
            return min(self.limits.term, self.batch_left), BATCH_BUDGET
        return min(self.limits.term, self.post_left), POST_BUDGET

    def spend(self, seconds: float) -> None:
        self.post_left -= seconds
        self.batch_left -= seconds
        self.spent += seconds

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1
        metrics.REGEX_SKIPPED.labels(reason).inc()


@dataclass(frozen=True, slots=True)
class Disabled:
    """A regex term the engine stopped running, and the rules it belongs to."""

    term: str
    rule_ids: tuple[str, ...]
    timeouts: int


@dataclass(slots=True)
class Ahead:
    """A batch's matches worked out before its transaction (in the match thread), by `Engine.key`,
    and the batch's regex budget, which whatever is matched later in the batch goes on spending."""

    engine: Engine
    budget: Budget
    found: dict[MatchInput, list[RuleMatch]] = field(default_factory=dict)

    def get(self, engine: Engine, post: MatchInput) -> list[RuleMatch] | None:
        if engine is not self.engine:
            return None  # another rule set's: never mix two in one batch
        return self.found.get(engine.key(post))


@dataclass(slots=True)
class _Rule:
    index: int
    rule: Any
    tree: tuple
    channels: frozenset[str]
    exclude: frozenset[str]
    positive: list[tuple]  # leaves outside any `none`, for reporting which terms hit
    notify: tuple[str, ...] = field(default=())
    severity: str = "medium"
    single: int | None = None  # the literal id when the whole rule is one literal term (the common case)
    rule_id: str = ""
    terms: tuple[str, ...] = ()  # what a single-term rule reports
    plain: bool = True  # no scope, forwards or edits policy to check


@lru_cache(maxsize=1024)
def _channel_keys(names: frozenset[str]) -> frozenset[str]:
    keys = set()
    for name in names:
        try:
            keys.add(scope_key(name))
        except ValueError:
            keys.add(name.lower())
    return frozenset(keys)


class Engine:
    def __init__(self, rules: Sequence[Rule]) -> None:
        self._literals: list[Literal] = []
        self._literal_ids: dict[str, int] = {}
        self._regexes: list[tuple[str, regex.Pattern[str]]] = []
        self._regex_ids: dict[tuple[str, str], int] = {}
        self._rules: list[_Rule] = []
        self._timed_out: set[int] = set()
        self._streak: dict[int, int] = {}  # regex id -> full-length timeouts in a row
        self._disabled: set[int] = set()
        self._newly_disabled: list[int] = []  # not yet taken by `take_disabled`
        self._regex_rules: dict[int, list[str]] = {}
        lit_rules: dict[int, list[int]] = {}
        always: list[int] = []
        for rule in rules:
            if not rule.enabled:
                continue
            tree = self._compile(rule.match)
            positive: list[tuple] = []
            _leaves(tree, True, positive)
            compiled = _Rule(
                index=len(self._rules),
                rule=rule,
                tree=tree,
                channels=frozenset(rule.channels),
                exclude=frozenset(rule.exclude_channels),
                positive=positive,
                notify=tuple(rule.notify),
                severity=str(rule.severity),
                single=_single_literal(tree),
                rule_id=rule.id,
                plain=not rule.channels
                and not rule.exclude_channels
                and rule.forwards == "include"
                and rule.edits == "rematch",
            )
            self._rules.append(compiled)
            for ident in _regex_ids(tree):
                self._regex_rules.setdefault(ident, []).append(rule.id)
            if _needs_literal(tree):
                for kind, ident in positive:
                    if kind == _LIT:
                        lit_rules.setdefault(ident, []).append(compiled.index)
            else:
                always.append(compiled.index)
        for r in self._rules:
            if r.single is not None:
                r.terms = (self._literals[r.single].source,)
        self._always = tuple(always)
        # What a post's matches can depend on besides its text, so that `key` leaves out the rest.
        self._by_scope = any(r.channels or r.exclude for r in self._rules)
        self._by_forward = any(r.rule.forwards != "include" for r in self._rules)
        self._by_edit = any(r.rule.edits == "ignore" for r in self._rules)
        self._lit_rules = {k: tuple(dict.fromkeys(v)) for k, v in lit_rules.items()}

        # One automaton key may serve several terms ("global" and "global majority", "BRICS" and "brics").
        words: dict[str, list[int]] = {}
        keys: dict[str, list[int]] = {}
        self._hashtags: dict[str, list[int]] = {}
        for ident, lit in enumerate(self._literals):
            if lit.kind == HASHTAG:
                self._hashtags.setdefault(lit.key, []).append(ident)
            elif lit.kind == WORD and lit.phrase is None and _RUN.fullmatch(lit.key):
                words.setdefault(lit.key, []).append(ident)
            else:
                keys.setdefault(lit.key, []).append(ident)
        # Words in the narrow codec (the common Latin and Cyrillic case) are scanned as one byte per
        # character; the rest keep a str automaton.
        narrow = {k: v for k, v in words.items() if _narrow_key(k)}
        wide = {k: v for k, v in words.items() if k not in narrow}
        self._narrow_ids = [tuple(ids) for ids in narrow.values()]
        self._narrow = _word_automaton([k.encode(_NARROW) for k in narrow], ahocorasick_rs.BytesAhoCorasick)
        self._word_ids = [tuple(ids) for ids in wide.values()]
        self._words = _word_automaton(list(wide), ahocorasick_rs.AhoCorasick)
        self._patterns = [
            tuple(
                (i, lit.bound_start, lit.bound_end, lit.phrase, lit.kind == PREFIX)
                for i, lit in ((i, self._literals[i]) for i in ids)
            )
            for ids in keys.values()
        ]
        self._automaton = (
            ahocorasick_rs.AhoCorasick(list(keys), matchkind=ahocorasick_rs.MATCHKIND_STANDARD)
            if keys
            else None
        )

    @property
    def rule_count(self) -> int:
        return len(self._rules)

    def key(self, post: MatchInput) -> MatchInput:
        """`post` without what no rule of this set looks at: two posts with one key match alike."""
        return MatchInput(
            text=post.text,
            hashtags=tuple(post.hashtags),
            channel_names=post.channel_names if self._by_scope else frozenset(),
            is_forward=post.is_forward and self._by_forward,
            is_edit=post.is_edit and self._by_edit,
        )

    def take_disabled(self) -> list[Disabled]:
        """The regex terms disabled since the last call, each reported once."""
        out = []
        while self._newly_disabled:
            ident = self._newly_disabled.pop(0)
            rule_ids = tuple(dict.fromkeys(self._regex_rules.get(ident, ())))
            out.append(Disabled(self._regexes[ident][0], rule_ids, self._streak.get(ident, 0)))
        return out

    def _search(self, ident: int, nfc: Normalised, budget: Budget | None) -> list[tuple[int, int]]:
        """A regex term's spans in the post's (NFC) text, within the budget; [] when skipped or slow."""
        label, pattern = self._regexes[ident]
        if budget is None:
            timeout = REGEX_TIMEOUT
        else:
            if ident in self._disabled:
                budget.skip(DISABLED)
                return []
            timeout, limit = budget.allowance()
            if timeout <= 0:
                budget.skip(limit)
                return []
        started = time.perf_counter()
        try:
            # concurrent: `regex` lets go of the GIL while it matches, so a slow pattern in the
            # match thread does not also stall the event loop and the store's thread.
            found = [
                nfc.span(*m.span())
                for m in pattern.finditer(nfc.text, timeout=timeout, concurrent=True)
                if m.end() > m.start()
            ]
        except TimeoutError:
            found = []
            if ident not in self._timed_out:
                self._timed_out.add(ident)
                log.warning("regex term %s timed out after %ss; counted as no hit", label, timeout)
            metrics.REGEX_TIMEOUTS.inc()
            # Only a timeout at the term's full allowance is held against it: one cut short by a
            # spent budget says nothing about the term.
            if budget is not None and timeout >= budget.limits.term:
                self._strike(ident, budget.limits.disable_after)
        else:
            self._streak.pop(ident, None)  # in a row: a post it finished on starts the count again
        if budget is not None:
            budget.spend(time.perf_counter() - started)
        return found

    def _strike(self, ident: int, limit: int) -> None:
        streak = self._streak[ident] = self._streak.get(ident, 0) + 1
        if streak >= limit and ident not in self._disabled:
            self._disabled.add(ident)
            self._newly_disabled.append(ident)

    # --- compile ------------------------------------------------------------------------------

    def _compile(self, group: Group) -> tuple:
        parts = []
        for key, items in group.parts():
            parts.append((key, tuple(self._compile_item(item) for item in items)))
        return (_GROUP, tuple(parts))

    def _compile_item(self, item: Any) -> tuple:
        if isinstance(item, str):
            if item not in self._literal_ids:
                self._literal_ids[item] = len(self._literals)
                self._literals.append(compile_literal(item))
            return (_LIT, self._literal_ids[item])
        if isinstance(item, RegexTerm):
            key = (item.regex, item.flags)
            if key not in self._regex_ids:
                self._regex_ids[key] = len(self._regexes)
                self._regexes.append((_regex_label(item), compile_regex(item.regex, item.flags)))
            return (_RE, self._regex_ids[key])
        return self._compile(item)

    # --- match --------------------------------------------------------------------------------

    def _scan(self, text: str, narrow: bytes | None = None) -> dict[int, list[tuple[int, int]]]:
        """Verified occurrences of every literal term, as spans in the normalised text, by literal id."""
        hits: dict[int, list[tuple[int, int]]] = {}
        n = len(text)
        word = _IS_WORD
        if self._narrow is not None:
            # Every character encodes to one byte (those outside the codec to "?", which is in no
            # pattern and is not a word character), so byte offsets are character offsets.
            # ASCII is the same bytes in the codec, and UTF-8 has the fast encoder.
            data = narrow or (text.encode() if text.isascii() else text.encode(_NARROW, "replace"))
            found = self._narrow.find_matches_as_indexes(data)
            _add_words(hits, text, found, self._narrow_ids)
        if self._words is not None:
            _add_words(hits, text, self._words.find_matches_as_indexes(text), self._word_ids)
        if self._automaton is not None:
            patterns = self._patterns
            for pattern, start, end in self._automaton.find_matches_as_indexes(text, overlapping=True):
                for ident, bound_start, bound_end, phrase, prefix in patterns[pattern]:
                    if bound_start and start and word[text[start - 1]]:
                        continue
                    stop = end
                    if phrase is not None:
                        m = phrase.match(text, start)
                        if m is None:
                            continue
                        stop = m.end()
                    elif prefix:
                        stop = _WORDS.match(text, end).end()
                    elif bound_end and end < n and word[text[end]]:
                        continue
                    spans = hits.get(ident)
                    if spans is None:
                        hits[ident] = [(start, stop)]
                    else:
                        spans.append((start, stop))
        return hits

    def match(self, post: MatchInput, budget: Budget | None = None) -> list[RuleMatch]:
        """The rules `post` matches. With a `budget` (the monitor's), regex terms spend it, and one
        that keeps timing out is disabled; without (`rules test`), each term gets REGEX_TIMEOUT."""
        if budget is not None:
            budget.next_post()
        norm = normalise_mapped(post.text)
        hits = self._scan(norm.text, norm.narrow)
        if self._hashtags and post.hashtags:
            for tag in post.hashtags:
                for ident in self._hashtags.get(hashtag_key(tag), ()):
                    hits.setdefault(ident, []).extend(_hashtag_spans(norm.text, self._literals[ident].key))

        lit_rules = self._lit_rules
        candidates = list(self._always)
        for ident in hits:
            found = lit_rules.get(ident)
            if found is not None:
                candidates += found
        if not candidates:
            return []
        if len(candidates) > 1:
            candidates = sorted(set(candidates))
        names = None
        state = _PostState(self, post.text, hits, norm, budget)
        hit_objects = state.hit_objects
        identity = norm.origin is None
        rules = self._rules
        out = []
        for index in candidates:
            r = rules[index]
            if not r.plain:
                rule = r.rule
                if post.is_edit and rule.edits == "ignore":
                    continue
                if (rule.forwards == "exclude" and post.is_forward) or (
                    rule.forwards == "only" and not post.is_forward
                ):
                    continue
                if r.channels or r.exclude:
                    if names is None:
                        names = _channel_keys(post.channel_names) if post.channel_names else frozenset()
                    if (r.channels and not (r.channels & names)) or (r.exclude and r.exclude & names):
                        continue
            ident = r.single
            if ident is None:
                if state.eval(r.tree):
                    out.append(state.report(r))
                continue
            # A single-term rule is a candidate only because its term hit.
            found = hit_objects.get(ident)
            if found is None:
                if identity:
                    # Spans are already in the original text, one per start and in order (the common case).
                    source = r.terms[0]
                    found = tuple([_hit(source, s, e) for s, e in hits[ident]])
                    hit_objects[ident] = found
                else:
                    found = state.literal_hits(ident)
            out.append(_rule_match(r.rule_id, r.severity, r.notify, r.terms, found))
        return out


class _PostState:
    """Per-post lazy regex evaluation, so a regex runs at most once per post and only when needed."""

    __slots__ = ("budget", "engine", "hit_objects", "hits", "nfc", "norm", "raw", "regex_hits")

    def __init__(
        self,
        engine: Engine,
        raw: str,
        hits: dict[int, list[tuple[int, int]]],
        norm: Normalised,
        budget: Budget | None = None,
    ) -> None:
        self.engine = engine
        self.budget = budget
        self.raw = raw
        self.hits = hits
        self.norm = norm
        self.nfc = None
        self.regex_hits: dict[int, list[tuple[int, int]]] = {}
        self.hit_objects: dict[int, tuple[Hit, ...]] = {}

    def literal_hits(self, ident: int) -> tuple[Hit, ...]:
        """A literal's hits in original-text positions, built once per post however many rules share it."""
        found = self.hit_objects.get(ident)
        if found is None:
            norm = self.norm
            source = self.engine._literals[ident].source
            spans = self.hits[ident]
            if norm.origin is None:
                # The automaton reports one occurrence per start, in order: nothing to merge or sort.
                found = tuple([_hit(source, s, e) for s, e in spans])
            else:
                found = tuple(sorted({Hit(source, *norm.span(s, e)) for s, e in spans}, key=_hit_key))
            self.hit_objects[ident] = found
        return found

    def regex(self, ident: int) -> list[tuple[int, int]]:
        found = self.regex_hits.get(ident)
        if found is not None:
            return found
        if self.nfc is None:
            self.nfc = normalise_mapped(self.raw, fold=False)
        found = self.regex_hits[ident] = self.engine._search(ident, self.nfc, self.budget)
        return found

    def eval(self, node: tuple) -> bool:
        kind = node[0]
        if kind == _LIT:
            return node[1] in self.hits
        if kind == _RE:
            return bool(self.regex(node[1]))
        for op, items in node[1]:
            if op == _ALL:
                if not all(self.eval(i) for i in items):
                    return False
            elif op == _ANY:
                if not any(self.eval(i) for i in items):
                    return False
            elif any(self.eval(i) for i in items):
                return False
        return True

    def report(self, r: _Rule) -> RuleMatch:
        terms: dict[str, None] = {}
        spans: set[Hit] = set()
        for kind, ident in r.positive:
            if kind == _LIT:
                found = self.hits.get(ident)
                if found is None:
                    continue
                terms[self.engine._literals[ident].source] = None
                spans.update(self.literal_hits(ident))
            else:
                found = self.regex(ident)
                if not found:
                    continue
                source = self.engine._regexes[ident][0]
                terms[source] = None
                spans.update(Hit(source, s, e) for s, e in found)
        return RuleMatch(r.rule_id, r.severity, r.notify, tuple(terms), tuple(sorted(spans, key=_hit_key)))


def _narrow_key(key: str) -> bool:
    try:
        key.encode(_NARROW)
    except UnicodeEncodeError:
        return False
    return True


def _word_automaton(patterns: list, kind: type) -> Any:
    if not patterns:
        return None
    return kind(
        patterns,
        matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_LONGEST,
        # The DFA scans fastest; past a point its build time and memory are not worth it.
        implementation=ahocorasick_rs.Implementation.DFA if len(patterns) <= _DFA_LIMIT else None,
    )


def _add_words(
    hits: dict[int, list[tuple[int, int]]],
    text: str,
    found: list[tuple[int, int, int]],
    word_ids: list[tuple[int, ...]],
) -> None:
    """Keep the word-automaton matches that are whole runs of word characters."""
    n = len(text)
    word = _IS_WORD
    for pattern, start, end in found:
        if (start and word[text[start - 1]]) or (end < n and word[text[end]]):
            continue
        for ident in word_ids[pattern]:
            spans = hits.get(ident)
            if spans is None:
                hits[ident] = [(start, end)]
            else:
                spans.append((start, end))


def _hit_key(hit: Hit) -> tuple[int, int, str]:
    return hit.start, hit.end, hit.term


def _single_literal(tree: tuple) -> int | None:
    parts = tree[1]
    if (
        len(parts) == 1
        and parts[0][0] in (_ALL, _ANY)
        and len(parts[0][1]) == 1
        and parts[0][1][0][0] == _LIT
    ):
        return parts[0][1][0][1]
    return None


def _regex_label(term: RegexTerm) -> str:
    return term.regex


def _hashtag_spans(text: str, key: str) -> list[tuple[int, int]]:
    """Where `#tag` is written in the (normalised) text; a tag known only from entities has no span."""
    needle = "#" + key
    spans = []
    start = text.find(needle)
    while start >= 0:
        end = start + len(needle)
        if end >= len(text) or not _WORD.match(text, end, end + 1):
            spans.append((start, end))
        start = text.find(needle, start + 1)
    return spans


def _regex_ids(node: tuple) -> list[int]:
    """Every regex term of a tree, `none` ones too: a disabled one changes what the rule means."""
    if node[0] == _RE:
        return [node[1]]
    if node[0] == _LIT:
        return []
    return [ident for _, items in node[1] for item in items for ident in _regex_ids(item)]


def _leaves(node: tuple, positive: bool, out: list[tuple]) -> None:
    kind = node[0]
    if kind != _GROUP:
        if positive and node not in out:
            out.append(node)
        return
    for op, items in node[1]:
        for item in items:
            _leaves(item, positive and op != _NONE, out)


def _needs_literal(node: tuple) -> bool:
    """True when the tree can only hold if some positive literal term hits (so it can wait for one)."""
    kind = node[0]
    if kind == _LIT:
        return True
    if kind == _RE:
        return False
    for op, items in node[1]:
        if op == _ALL and any(_needs_literal(i) for i in items):
            return True
        if op == _ANY and all(_needs_literal(i) for i in items):
            return True
    return False
