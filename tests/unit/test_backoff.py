"""rtc/backoff.py: capped exponential backoff with full jitter.

Full jitter: attempt n waits a delay drawn uniformly from [0, cap(n)], with
cap(n) = min(maximum, initial * factor**n). The statistical tests use an
unseeded generator and bounds many standard deviations wide: they fail on any
other distribution (equal jitter never goes below cap/2), not by bad luck.
"""

from __future__ import annotations

import random

from lkdevice.rtc.backoff import Backoff


class Extreme:
    """A generator that always draws the low or the high end of the range."""

    def __init__(self, high: bool):
        self.high = high
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return b if self.high else a


def cap(n: int, initial: float, maximum: float, factor: float) -> float:
    return min(maximum, initial * factor ** n)


def test_each_attempt_draws_from_zero_to_its_cap():
    rng = Extreme(high=True)
    b = Backoff(initial=0.5, maximum=4.0, factor=2.0, rng=rng)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [lo for lo, _ in rng.calls] == [0.0] * 6
    b = Backoff(initial=0.5, maximum=4.0, rng=Extreme(high=False))
    assert [b.next_delay() for _ in range(3)] == [0.0, 0.0, 0.0]


def test_delays_are_uniform_between_zero_and_the_cap():
    rng = random.Random()  # unseeded: the property must hold for any draw
    samples = 600
    for n in range(12):
        c = cap(n, 0.3, 10.0, 2.0)
        delays = []
        for _ in range(samples):
            b = Backoff(initial=0.3, maximum=10.0, factor=2.0, rng=rng)
            b.attempts = n
            delays.append(b.next_delay())
        assert all(0.0 <= d <= c for d in delays)
        # uniform on [0, c]: half below c/2 (sd 2 %), a tenth below c/10 (sd 1.2 %)
        below_half = sum(d < c / 2 for d in delays) / samples
        below_tenth = sum(d < c / 10 for d in delays) / samples
        assert 0.38 <= below_half <= 0.62, (n, below_half)
        assert 0.03 <= below_tenth <= 0.17, (n, below_tenth)
        mean = sum(delays) / samples
        assert 0.42 * c <= mean <= 0.58 * c, (n, mean / c)


def test_default_generator_is_full_jitter_too():
    b = Backoff(initial=1.0, maximum=1.0)
    delays = [b.next_delay() for _ in range(1000)]
    assert max(delays) <= 1.0
    assert 0.38 <= sum(d < 0.5 for d in delays) / 1000 <= 0.62


def test_reset_starts_over():
    b = Backoff(initial=0.3, maximum=10.0, rng=Extreme(high=True))
    for _ in range(10):
        b.next_delay()
    assert b.attempts == 10
    b.reset()
    assert b.attempts == 0
    assert b.next_delay() == 0.3


def test_hours_of_attempts_stay_capped():
    # a device keeps retrying for ever: thousands of attempts must neither
    # overflow the exponent nor exceed the cap
    b = Backoff(initial=0.3, maximum=10.0, rng=Extreme(high=True))
    delays = [b.next_delay() for _ in range(5000)]
    assert max(delays) == 10.0
    assert delays[-1] == 10.0
