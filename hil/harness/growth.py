"""How much a quantity grows: a least-squares slope over the samples after a warm-up. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than 3 points or no spread in x."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def after(points: Sequence[tuple[float, float]], x0: float) -> list[tuple[float, float]]:
    return [(x, y) for x, y in points if x >= x0]


def per_minute(points: Sequence[tuple[float, float]], warmup_s: float) -> float | None:
    """Bytes per minute of (seconds, bytes) points, those before `warmup_s` left out."""
    if not points:
        return None
    s = slope(after(points, points[0][0] + warmup_s))
    return None if s is None else s * 60.0


def per_cycle(points: Sequence[tuple[float, float]], cycle_ends: Sequence[float], warmup_cycles: int,
              tail_s: float = 7.0) -> float | None:
    """Growth per join/leave cycle: the slope over time, after the warm-up cycles, times the mean period.

    Samples come at their own pace (every few seconds), not one per cycle: a time slope
    over all of them, scaled by how long a cycle took, uses every sample and no guess of
    which cycle a sample belongs to. Samples up to `tail_s` after the last cycle count:
    nothing happens then, they show where the last cycle left the device."""
    if len(cycle_ends) < warmup_cycles + 2:
        return None
    start = cycle_ends[warmup_cycles - 1] if warmup_cycles else cycle_ends[0]
    s = slope([(x, y) for x, y in points if start <= x <= cycle_ends[-1] + tail_s])
    if s is None:
        return None
    used = cycle_ends[warmup_cycles - 1 if warmup_cycles else 0:]
    period = (used[-1] - used[0]) / (len(used) - 1)
    return s * period


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)
