"""Per-destination rate limits: a minimum interval plus an optional sliding window.

A limiter hands out *reservations*: the slot time is decided synchronously (no lock, so one
limiter can serve any event loop) and the caller then sleeps until it. A wait longer than
`max_wait` is not slept through: the send is refused with RetryAfter so that the outbox
reschedules it, instead of a worker sitting on a leased delivery until the lease runs out.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from bot.alerts.model import RetryAfter


class Limiter:
    def __init__(
        self,
        interval: float = 0.0,
        window: tuple[int, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.window = window
        self._clock = clock
        self._next = float("-inf")  # earliest time of the next slot
        self._slots: deque[float] = deque()  # the last `window[0]` slots handed out

    def _slot(self, now: float) -> float:
        at = max(now, self._next)
        if self.window:
            count, period = self.window
            if len(self._slots) >= count:
                at = max(at, self._slots[-count] + period)
        return at

    def reserve(self, max_wait: float = float("inf")) -> float:
        """Take the next slot and return how long to wait for it; refuse one beyond `max_wait`."""
        now = self._clock()
        at = self._slot(now)
        if at - now > max_wait:
            raise RetryAfter("rate limited by tgsentinel's own limiter", at - now)
        self._next = at + self.interval
        if self.window:
            self._slots.append(at)
            while len(self._slots) > self.window[0]:
                self._slots.popleft()
        return at - now

    def hold(self, seconds: float) -> None:
        """Send nothing for `seconds` (the provider said so: a 429, or a bucket at zero)."""
        self._next = max(self._next, self._clock() + max(0.0, seconds))

    async def acquire(self, max_wait: float = float("inf")) -> None:
        delay = self.reserve(max_wait)
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """The providers' published limits; tests pass faster ones."""

    slack_interval: float = 1.0  # per webhook
    telegram_interval: float = 1.0  # per chat
    telegram_group: tuple[int, float] = (20, 60.0)  # per group (chat id < 0)
    max_wait: float = 10.0  # longer waits become RetryAfter


class RateLimits:
    """The limiters of one process, shared by every sender that targets the same webhook or chat.

    Keys are held in memory only (they may contain webhook URLs) and never logged.
    """

    def __init__(self, policy: RatePolicy | None = None) -> None:
        self.policy = policy or RatePolicy()
        self._limiters: dict[Hashable, Limiter] = {}

    def get(self, key: Hashable, make: Callable[[], Limiter]) -> Limiter:
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = make()
        return limiter

    def slack(self, url: str) -> Limiter:
        return self.get(("slack", url), lambda: Limiter(self.policy.slack_interval))

    def discord(self, url: str) -> Limiter:
        # Discord publishes its limits per response; the limiter only holds when told to.
        return self.get(("discord", url), Limiter)

    def telegram(self, api: str, token: str, chat: int | str) -> Limiter:
        group = isinstance(chat, int) and chat < 0
        return self.get(
            ("telegram", api, token, chat),
            lambda: Limiter(self.policy.telegram_interval, self.policy.telegram_group if group else None),
        )

    def webhook(self, url: str) -> Limiter:
        return self.get(("webhook", url), Limiter)


DEFAULT = RateLimits()
