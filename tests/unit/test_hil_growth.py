"""The harness's growth figures: slopes after a warm-up, per minute and per join/leave cycle."""

from __future__ import annotations

import random

from lkdevice.hil import growth


def test_a_flat_series_grows_nothing_after_its_warm_up_jump():
    pts = [(0.0, 1000.0), (5.0, 9000.0)] + [(10.0 + 5 * i, 9000.0 + (i % 2) * 16) for i in range(12)]
    assert abs(growth.per_minute(pts, warmup_s=10.0)) < 100
    # the same series with the warm-up counted shows the jump
    assert growth.per_minute(pts, warmup_s=0.0) > 1000


def test_a_leak_per_cycle_is_stated_in_bytes_per_cycle_whatever_the_sampling():
    rng = random.Random(7)
    period, leak = 3.2, 4096.0
    ends = [period * (i + 1) for i in range(12)]
    # samples every 5 s (not one per cycle), with allocator noise
    pts = [(t, 100_000 + leak * (t / period) + rng.uniform(-300, 300)) for t in [5.0 * k for k in range(9)]]
    got = growth.per_cycle(pts, ends, warmup_cycles=2)
    assert abs(got - leak) < 0.1 * leak, got


def test_too_few_points_give_no_figure_rather_than_a_wrong_one():
    assert growth.slope([(0, 1), (1, 2)]) is None
    assert growth.slope([(1, 1), (1, 2), (1, 3)]) is None
    assert growth.per_cycle([(0, 1), (1, 1), (2, 1)], [1.0, 2.0], warmup_cycles=2) is None
    assert growth.per_minute([], 10) is None


def test_percentile():
    assert growth.percentile([3, 1, 2], 0.5) == 2
    assert growth.percentile([], 0.9) is None
