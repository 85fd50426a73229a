"""Spacing requests out: a minimum interval, an optional sliding window, and holds a server asks for.

One pacer serves the web preview's global requests-per-minute cap, Telegram's resolve and join
requests, and every destination's rate limit. It hands out *reservations*: the slot is decided
synchronously (no lock, so concurrent callers get successive slots in call order), then the caller
sleeps until it. The clock is a parameter so tests need not wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class Busy(Exception):
    """The next slot is further away than the caller is willing to wait."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the next slot is {seconds:.1f}s away")
        self.seconds = seconds


class Pacer:
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
        """Take the next slot and return how long to wait for it; raise Busy for one beyond `max_wait`
        (and take nothing)."""
        now = self._clock()
        at = self._slot(now)
        if at - now > max_wait:
            raise Busy(at - now)
        self._next = at + self.interval
        if self.window:
            self._slots.append(at)
            while len(self._slots) > self.window[0]:
                self._slots.popleft()
        return at - now

    def hold(self, seconds: float) -> None:
        """Hand out nothing for `seconds` (the server said so: a 429, a FloodWait, a bucket at zero)."""
        self._next = max(self._next, self._clock() + max(0.0, seconds))

    async def acquire(self, max_wait: float = float("inf")) -> None:
        delay = self.reserve(max_wait)
        if delay > 0:
            await asyncio.sleep(delay)
