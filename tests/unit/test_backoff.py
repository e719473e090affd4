"""device/backoff.py: exponential backoff with jitter."""

from __future__ import annotations

import random

import pytest

from lkdevice.rtc.backoff import Backoff


def caps(b: Backoff, n: int) -> list[float]:
    return [min(b.maximum, b.initial * b.factor ** i) for i in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_every_delay_within_half_cap_and_cap(seed):
    random.seed(seed)
    b = Backoff(initial=0.3, maximum=10.0, factor=2.0)
    for cap in caps(b, 12):
        delay = b.next_delay()
        assert cap / 2 <= delay <= cap


def test_delays_grow_until_capped():
    random.seed(1)
    b = Backoff(initial=0.3, maximum=10.0)
    delays = [b.next_delay() for _ in range(7)]  # caps 0.3 0.6 1.2 2.4 4.8 9.6 10
    # each delay is at least the previous cap, so they never shrink
    assert all(later >= earlier for earlier, later in zip(delays, delays[1:]))
    assert delays[-1] > 10 * delays[0]


def test_capped_at_maximum():
    b = Backoff(initial=1.0, maximum=5.0, factor=3.0)
    delays = [b.next_delay() for _ in range(50)]
    assert max(delays) <= 5.0
    assert all(2.5 <= d <= 5.0 for d in delays[2:])  # 1, 3, then 9 -> capped at 5


def test_bounds_are_reached(monkeypatch):
    b = Backoff(initial=0.5, maximum=4.0)
    monkeypatch.setattr(random, "uniform", lambda lo, hi: hi)
    assert [b.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    b.reset()
    monkeypatch.setattr(random, "uniform", lambda lo, hi: lo)
    assert [b.next_delay() for _ in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]


def test_reset_starts_over():
    b = Backoff(initial=0.3, maximum=10.0)
    for _ in range(10):
        b.next_delay()
    assert b.attempts == 10
    b.reset()
    assert b.attempts == 0
    assert 0.15 <= b.next_delay() <= 0.3


def test_many_attempts_stay_capped():
    # Room._reconnect with a long reconnect_window reaches ~1024 attempts after roughly 1.5-3 hours of outage
    # (each delay is at least 5 s once capped).
    b = Backoff(initial=0.3, maximum=10.0)
    for _ in range(1100):
        delay = b.next_delay()
        assert delay <= 10.0
    assert 5.0 <= delay
