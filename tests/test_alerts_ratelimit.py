"""The limiter's arithmetic, on a clock the test moves by hand."""

from __future__ import annotations

import pytest

from bot.alerts.ratelimit import RateLimits
from bot.pacer import Busy, Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_minimum_interval_spaces_slots() -> None:
    clock = Clock()
    lim = Pacer(1.0, clock=clock)
    assert [lim.reserve() for _ in range(3)] == [0.0, 1.0, 2.0]
    clock.now = 10.0
    assert lim.reserve() == 0.0


def test_sliding_window_allows_bursts_up_to_its_count() -> None:
    clock = Clock()
    lim = Pacer(0.0, (3, 10.0), clock=clock)
    # Three at once, then the next three one window later, then the next window.
    assert [lim.reserve() for _ in range(7)] == [0, 0, 0, 10, 10, 10, 20]


def test_telegram_group_limit_is_one_per_second_and_twenty_per_minute() -> None:
    clock = Clock()
    lim = Pacer(1.0, (20, 60.0), clock=clock)
    delays = [lim.reserve() for _ in range(21)]
    # 1 s apart for the first twenty (0..19); the 21st waits for the first to leave the minute.
    assert delays[:20] == [float(n) for n in range(20)]
    assert delays[20] == 60.0


def test_a_wait_beyond_max_wait_is_refused_and_takes_no_slot() -> None:
    clock = Clock()
    lim = Pacer(1.0, clock=clock)
    lim.reserve(0.5)
    with pytest.raises(Busy) as exc:
        lim.reserve(0.5)
    assert exc.value.seconds == 1.0
    clock.now = 1.0
    assert lim.reserve(0.5) == 0.0  # the refused call did not push the schedule back


def test_hold_pushes_the_next_slot() -> None:
    clock = Clock()
    lim = Pacer(0.0, clock=clock)
    lim.hold(5.0)
    assert lim.reserve() == 5.0
    lim.hold(1.0)  # a shorter hold does not shorten a longer one
    assert lim.reserve() == 5.0


def test_limits_are_shared_per_webhook_and_per_chat() -> None:
    limits = RateLimits()
    assert limits.slack("https://a/1") is limits.slack("https://a/1")
    assert limits.slack("https://a/1") is not limits.slack("https://a/2")
    assert limits.telegram("api", "t", -100).window == (20, 60.0)
    assert limits.telegram("api", "t", 42).window is None  # a private chat: 1/s only
