"""The loss-driven bitrate controller, on its own clock."""

from __future__ import annotations

import pytest

from lkdevice.robot.bitrate import BitrateController


def feed(c: BitrateController, losses, start: float = 0.0, step: float = 1.0):
    out, t = [], start
    for loss in losses:
        out.append(c.on_report(loss, t))
        t += step
    return out


def test_heavy_loss_cuts_the_rate_in_proportion():
    c = BitrateController(max_bps=1_000_000)
    assert c.on_report(0.0, 0.0) is None  # already at the ceiling
    assert c.on_report(0.4, 1.0) == 800_000  # 1 - 0.4 / 2
    assert c.on_report(0.4, 2.0) == 640_000


def test_one_burst_reported_twice_is_one_cut():
    c = BitrateController(max_bps=1_000_000)
    assert c.on_report(0.3, 10.0) == 850_000
    assert c.on_report(0.3, 10.1) is None
    assert c.on_report(0.3, 10.4) == 722_500


def test_moderate_loss_holds():
    c = BitrateController(max_bps=1_000_000, start_bps=500_000)
    assert feed(c, [0.05] * 5) == [None] * 5
    assert c.target == 500_000


def test_clean_reports_grow_8_percent_a_second_up_to_the_ceiling():
    c = BitrateController(max_bps=1_000_000, start_bps=500_000)
    feed(c, [0.0] * 5, step=1.0)
    assert c.bitrate == pytest.approx(500_000 * 1.08 ** 4)
    feed(c, [0.0] * 20, start=5.0)
    assert c.target == 1_000_000


def test_never_below_the_floor():
    c = BitrateController(max_bps=1_000_000, min_bps=200_000)
    feed(c, [1.0] * 20)
    assert c.target == 200_000


def test_small_changes_are_not_sent_to_the_encoder():
    c = BitrateController(max_bps=1_000_000, start_bps=500_000)
    assert c.on_report(0.0, 0.0) is None
    assert c.on_report(0.0, 0.25) is None  # +1.9 %
    assert c.on_report(0.0, 0.5) is None  # +3.9 % since the last one sent
    assert c.on_report(0.0, 0.75) == int(500_000 * 1.08 ** 0.75)  # +5.9 %


def test_a_long_gap_between_reports_is_no_licence_to_jump():
    c = BitrateController(max_bps=10_000_000, start_bps=500_000)
    c.on_report(0.0, 0.0)
    assert c.on_report(0.0, 60.0) == int(500_000 * 1.08 ** 2)


def test_bounds_are_checked():
    with pytest.raises(ValueError):
        BitrateController(max_bps=100, min_bps=1000)


def test_clean_reports_between_lossy_ones_do_not_win_the_rate_back():
    """livekit-server's reports under steady uplink loss alternate 0 % and ~20 % (the
    NACKed packets it recovered count as received in the next one)."""
    c = BitrateController(max_bps=400_000)
    feed(c, [0.0, 0.21, 0.0, 0.22, 0.0, 0.25, 0.0, 0.0], step=1.1)
    assert c.target < 0.8 * 400_000


def test_growth_resumes_once_the_loss_has_been_gone_a_while():
    c = BitrateController(max_bps=1_000_000, start_bps=500_000)
    c.on_report(0.3, 0.0)
    low = c.bitrate
    feed(c, [0.0] * 10, start=1.0)
    assert c.bitrate > low * 1.2
