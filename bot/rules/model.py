"""What the rule engine reports for a post."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hit:
    """A term that hit, and its span [start, end) in the post's text (Python str indices)."""

    term: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RuleMatch:
    rule_id: str
    severity: str
    notify: tuple[str, ...]
    terms: tuple[str, ...]  # the terms that hit, as written in the rule
    hits: tuple[Hit, ...]  # spans in the post's text, for emphasis in alerts
