"""The rule engine: one Aho-Corasick automaton over every literal term, built once per rule set.

Per post: normalise once, scan once, verify word boundaries on the candidates, then evaluate only
the rules a verified term belongs to (plus the few rules that can match without any literal hit,
such as `none`-only or regex-only groups).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import ahocorasick_rs
import regex

from bot.config import RegexTerm, channel_key
from bot.rules.model import Hit, RuleMatch
from bot.rules.terms import (
    HASHTAG,
    PREFIX,
    Literal,
    compile_literal,
    compile_regex,
    hashtag_key,
    normalise_mapped,
)

if TYPE_CHECKING:
    from bot.config import Group, Rule

log = logging.getLogger(__name__)

REGEX_TIMEOUT = 0.05  # seconds per regex term and post: a catastrophic pattern must not stall the monitor
_WORDS = regex.compile(r"\w*")
_WORD = regex.compile(r"\w")

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


@lru_cache(maxsize=1024)
def _channel_keys(names: frozenset[str]) -> frozenset[str]:
    keys = set()
    for name in names:
        try:
            keys.add(channel_key(name))
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
            )
            self._rules.append(compiled)
            if _needs_literal(tree):
                for kind, ident in positive:
                    if kind == _LIT:
                        lit_rules.setdefault(ident, []).append(compiled.index)
            else:
                always.append(compiled.index)
        self._always = always
        self._lit_rules = {k: tuple(dict.fromkeys(v)) for k, v in lit_rules.items()}

        # One automaton key may serve several terms ("global" and "global majority").
        keys: dict[str, list[int]] = {}
        self._hashtags: dict[str, list[int]] = {}
        for ident, lit in enumerate(self._literals):
            (self._hashtags if lit.kind == HASHTAG else keys).setdefault(lit.key, []).append(ident)
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

    def match(self, post: MatchInput) -> list[RuleMatch]:
        norm = normalise_mapped(post.text)
        text = norm.text
        hits: dict[int, list[tuple[int, int]]] = {}
        if self._automaton is not None:
            n = len(text)
            patterns = self._patterns
            word = _WORD.match
            for pattern, start, end in self._automaton.find_matches_as_indexes(text, overlapping=True):
                for ident, bound_start, bound_end, phrase, prefix in patterns[pattern]:
                    if bound_start and start and word(text, start - 1, start):
                        continue
                    stop = end
                    if phrase is not None:
                        m = phrase.match(text, start)
                        if m is None:
                            continue
                        stop = m.end()
                    elif prefix:
                        stop = _WORDS.match(text, end).end()
                    elif bound_end and end < n and word(text, end, end + 1):
                        continue
                    spans = hits.get(ident)
                    if spans is None:
                        hits[ident] = [(start, stop)]
                    else:
                        spans.append((start, stop))
        if self._hashtags and post.hashtags:
            for tag in post.hashtags:
                for ident in self._hashtags.get(hashtag_key(tag), ()):
                    hits.setdefault(ident, []).extend(_hashtag_spans(text, self._literals[ident].key))

        candidates = set(self._always)
        for ident in hits:
            candidates.update(self._lit_rules.get(ident, ()))
        if not candidates:
            return []
        names = _channel_keys(post.channel_names) if post.channel_names else frozenset()
        state = _PostState(self, post.text, hits)
        out = []
        for index in sorted(candidates):
            r = self._rules[index]
            rule = r.rule
            if post.is_edit and rule.edits == "ignore":
                continue
            if (rule.forwards == "exclude" and post.is_forward) or (
                rule.forwards == "only" and not post.is_forward
            ):
                continue
            if (r.channels and not (r.channels & names)) or (r.exclude and r.exclude & names):
                continue
            if r.single is not None:
                if r.single in hits:
                    ident = r.single
                    out.append(
                        RuleMatch(
                            r.rule.id,
                            r.severity,
                            r.notify,
                            (self._literals[ident].source,),
                            state.literal_hits(ident, norm),
                        )
                    )
            elif state.eval(r.tree):
                out.append(state.report(r, norm))
        return out


class _PostState:
    """Per-post lazy regex evaluation, so a regex runs at most once per post and only when needed."""

    __slots__ = ("engine", "hit_objects", "hits", "nfc", "raw", "regex_hits")

    def __init__(self, engine: Engine, raw: str, hits: dict[int, list[tuple[int, int]]]) -> None:
        self.engine = engine
        self.raw = raw
        self.hits = hits
        self.nfc = None
        self.regex_hits: dict[int, list[tuple[int, int]]] = {}
        self.hit_objects: dict[int, tuple[Hit, ...]] = {}

    def literal_hits(self, ident: int, norm: Any) -> tuple[Hit, ...]:
        """A literal's hits in original-text positions, built once per post however many rules share it."""
        found = self.hit_objects.get(ident)
        if found is None:
            source = self.engine._literals[ident].source
            spans = self.hits[ident]
            if norm.origin is None:
                # The automaton reports one occurrence per start, in order: nothing to merge or sort.
                found = tuple([Hit(source, s, e) for s, e in spans])
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
        label, pattern = self.engine._regexes[ident]
        try:
            found = [
                self.nfc.span(*m.span())
                for m in pattern.finditer(self.nfc.text, timeout=REGEX_TIMEOUT)
                if m.end() > m.start()
            ]
        except TimeoutError:
            found = []
            if ident not in self.engine._timed_out:
                self.engine._timed_out.add(ident)
                log.warning("regex term %s timed out after %ss; counted as no hit", label, REGEX_TIMEOUT)
        self.regex_hits[ident] = found
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

    def report(self, r: _Rule, norm: Any) -> RuleMatch:
        terms: dict[str, None] = {}
        spans: set[Hit] = set()
        for kind, ident in r.positive:
            if kind == _LIT:
                found = self.hits.get(ident)
                if found is None:
                    continue
                terms[self.engine._literals[ident].source] = None
                spans.update(self.literal_hits(ident, norm))
            else:
                found = self.regex(ident)
                if not found:
                    continue
                source = self.engine._regexes[ident][0]
                terms[source] = None
                spans.update(Hit(source, s, e) for s, e in found)
        return RuleMatch(r.rule.id, r.severity, r.notify, tuple(terms), tuple(sorted(spans, key=_hit_key)))


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
