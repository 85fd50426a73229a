"""Run a rule set over history (a dump, or stored messages) before it pages anyone."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from bot.rules.engine import Engine, MatchInput


def backtest(posts: Iterable[tuple[int, str, MatchInput]], engine: Engine) -> Iterator[dict[str, Any]]:
    """One record per matching post: `{"index", "title", "matches": [{"rule", "terms"}]}`.

    `posts` yields `(index, title, input)`: the dump position or the stored message id.
    """
    for index, title, post in posts:
        matches = engine.match(post)
        if matches:
            yield {
                "index": index,
                "title": title,
                "matches": [{"rule": m.rule_id, "terms": list(m.terms)} for m in matches],
            }
