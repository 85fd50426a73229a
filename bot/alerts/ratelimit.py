"""Per-destination rate limits: one Pacer per webhook or chat, with the providers' published limits.

A wait longer than `max_wait` is not slept through: the pacer says Busy and the worker reschedules
the delivery, instead of sitting on a leased row until the lease runs out.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from bot.pacer import Pacer


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
        self._limiters: dict[Hashable, Pacer] = {}

    def get(self, key: Hashable, make: Callable[[], Pacer]) -> Pacer:
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = make()
        return limiter

    def slack(self, url: str) -> Pacer:
        return self.get(("slack", url), lambda: Pacer(self.policy.slack_interval))

    def discord(self, url: str) -> Pacer:
        # Discord publishes its limits per response; the limiter only holds when told to.
        return self.get(("discord", url), Pacer)

    def telegram(self, api: str, token: str, chat: int | str) -> Pacer:
        group = isinstance(chat, int) and chat < 0
        return self.get(
            ("telegram", api, token, chat),
            lambda: Pacer(self.policy.telegram_interval, self.policy.telegram_group if group else None),
        )

    def webhook(self, url: str) -> Pacer:
        return self.get(("webhook", url), Pacer)


DEFAULT = RateLimits()
