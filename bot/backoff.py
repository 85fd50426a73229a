"""Waiting after a failure, decided once: exponential backoff with jitter, and a server's Retry-After.

Delivery retries, web polls, Telegram reconnects and channel subscriptions all back off through
`Backoff`; every Retry-After header goes through `retry_after`, capped, so a hostile or broken server
cannot park a channel or a destination for a year.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_AFTER_CAP = 3600.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """`base * 2**(attempt-1)`, capped at `cap`, times a factor drawn from `jitter`.

    The default jitter (0, 1) is "full jitter": retries of many clients spread over the whole window.
    """

    base: float
    cap: float
    jitter: tuple[float, float] = (0.0, 1.0)
    rng: random.Random = field(default_factory=random.Random, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try number `attempt + 1` (`attempt` failures so far, at least 1)."""
        exponent = min(max(0, attempt - 1), 64)  # 2**64 times any base is past every cap
        return min(self.cap, self.base * 2**exponent) * self.rng.uniform(*self.jitter)

    def due(self, attempt: int) -> float:
        """The clock's time at which to try again."""
        return self.clock() + self.delay(attempt)


def retry_after(value: str | float | None, cap: float = RETRY_AFTER_CAP) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date) or a provider's JSON
    `retry_after` number, within [0, cap]; None if absent or unreadable."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)
