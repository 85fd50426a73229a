"""A channel's boilerplate: the lines that recur across many of its posts, learned from its history.

Headers ("⚡️ Срочно"), footers ("Подписаться | Прислать новость"), "Read / Watch" lines: a channel
adds them to post after post, so on their own they would make every two posts of that channel look
alike, and a copy in another channel look different. A line counts as the channel's boilerplate once
it has appeared in at least `min_posts` posts and in at least `min_share` of the posts seen.

Memory is bounded per channel: at most `capacity` lines are counted. When the table is full the lines
seen once are dropped first (nearly every line of real text is seen once), then the rarest. Every
`horizon` posts the counts halve, so a footer a channel stopped using fades out. Only short lines
(`max_words`) are counted: boilerplate is short, and a repeated sentence of a story is not it. The
number of channels is bounded too (least recently used first out).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Channel:
    posts: int = 0
    counts: dict[bytes, int] = field(default_factory=dict)
    known: frozenset[bytes] = frozenset()  # the boilerplate now: recounted every `_RECOUNT` posts
    since: int = 0


_RECOUNT = 32


class Boilerplate:
    def __init__(
        self,
        *,
        min_posts: int = 3,
        min_share: float = 0.05,
        capacity: int = 256,
        horizon: int = 2000,
        max_words: int = 24,
        max_channels: int = 20_000,
    ) -> None:
        self.min_posts = min_posts
        self.min_share = min_share
        self.capacity = capacity
        self.horizon = horizon
        self.max_words = max_words
        self.max_channels = max_channels
        self._channels: OrderedDict[str, _Channel] = OrderedDict()

    def learn(self, channel: str, lines: Iterable[bytes]) -> None:
        """Count one post's short lines (cleaned, as `bot.stories.shingles.short_lines` gives them);
        each distinct line once."""
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
            if len(self._channels) > self.max_channels:
                self._channels.popitem(last=False)
        else:
            self._channels.move_to_end(channel)
        state.posts += 1
        counts = state.counts
        need = max(self.min_posts, self.min_share * state.posts)
        fresh = []
        for key in set(lines):
            count = counts[key] = counts.get(key, 0) + 1
            if count >= need and key not in state.known:
                fresh.append(key)
        if fresh:
            state.known = state.known.union(fresh)
        if len(counts) > self.capacity:
            self._prune(state)
        if state.posts >= self.horizon:
            state.posts //= 2
            state.counts = {k: c // 2 for k, c in state.counts.items() if c > 1}
        state.since += 1
        if state.since >= _RECOUNT or len(counts) != len(state.counts):
            self._recount(state)

    def _recount(self, state: _Channel) -> None:
        need = max(self.min_posts, self.min_share * state.posts)
        state.known = frozenset(k for k, c in state.counts.items() if c >= need)
        state.since = 0

    def _prune(self, state: _Channel) -> None:
        counts = state.counts
        kept = {k: c for k, c in counts.items() if c > 1}
        if len(kept) > self.capacity * 3 // 4:
            floor = sorted(kept.values(), reverse=True)[self.capacity * 3 // 4 - 1]
            kept = {k: c for k, c in kept.items() if c > floor} or dict(
                sorted(kept.items(), key=lambda kc: -kc[1])[: self.capacity * 3 // 4]
            )
        state.counts = kept

    def lines(self, channel: str) -> frozenset[bytes]:
        """The channel's boilerplate lines now (cleaned, as they are learned)."""
        state = self._channels.get(channel)
        return state.known if state is not None else frozenset()

    def __len__(self) -> int:
        return len(self._channels)
