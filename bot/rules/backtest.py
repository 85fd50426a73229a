"""Run a rule set over history (a dump, or stored messages) before it pages anyone."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from bot.rules.engine import Engine, MatchInput


def backtest(
    posts: Iterable[tuple[Mapping[str, Any], MatchInput]], engine: Engine
) -> Iterator[dict[str, Any]]:
    """One record per matching post: what identifies the post, then `"matches": [{"rule", "terms"}]`.

    `posts` yields `(fields, input)`; `fields` start the record as given: `{"index", "title"}` for a
    dump (its 0-based position), `{"message_id", "channel", "date", "url", "title"}` for a stored
    message.
    """
    for fields, post in posts:
        matches = engine.match(post)
        if matches:
            yield {**fields, "matches": [{"rule": m.rule_id, "terms": list(m.terms)} for m in matches]}
