"""The resilience scenarios' pure parts: when a tone is heard again, what a drop must be, the plot's points."""

from __future__ import annotations

import asyncio

import numpy as np

from lkdevice.hil import target as t
from lkdevice.hil.audio import sine, tone_levels
from lkdevice.hil.resilience import binned, heard_from, heard_share, must_resume, speaker_levels
from lkdevice.hil.sim_esp32 import SimEsp32


def frames(t0: float, t1: float, level: float, step: float = 0.02) -> list[tuple[float, float]]:
    return [(t0 + i * step, level) for i in range(int(round((t1 - t0) / step)))]


def test_heard_from_is_the_start_of_the_first_steady_run_after_the_moment():
    levels = frames(0, 2, 5000) + frames(2, 5, 0) + frames(5, 5.2, 5000) + frames(5.2, 5.4, 0) + frames(5.4, 7, 5000)
    assert heard_from(levels, 0.0) == 0.0
    # a blip shorter than the hold does not count: the run from 5.4 s does
    assert abs(heard_from(levels, 2.0) - 5.4) < 1e-9
    assert heard_from(levels, 6.8) is None  # too little left after it


def test_a_gap_in_arrivals_breaks_a_run():
    levels = frames(0, 0.3, 5000) + frames(1.0, 1.3, 5000)  # 0.6 s of heard audio, but a 0.7 s hole
    assert heard_from(levels, 0.0) is None
    assert heard_from(levels + frames(1.3, 1.6, 5000), 0.0) == 1.0


def test_heard_share_counts_frames_that_carry_the_tone_and_zero_when_none_arrived():
    levels = frames(0, 1, 5000) + frames(1, 2, 100)
    assert heard_share(levels, 0, 2) == 0.5
    assert heard_share(levels, 5, 6) == 0.0


def test_a_drop_well_inside_the_grace_must_resume_a_longer_one_or_an_unknown_grace_is_reported():
    assert must_resume(5, 15)
    assert not must_resume(30, 15) and not must_resume(13, 15)
    assert not must_resume(5, None)


def test_binned_means_per_bin_relative_to_the_event_and_skips_empty_bins():
    levels = frames(10, 10.2, 100) + frames(10.2, 10.4, 300) + frames(11, 11.1, 50)
    pts = binned(levels, 10, 12, zero=10.5, step=0.1)
    assert [round(x, 6) for x, _ in pts] == [-0.5, -0.4, -0.3, -0.2, 0.5]
    assert [round(y) for _, y in pts] == [100, 100, 300, 300, 50]


def test_tone_levels_follow_one_tone_and_ignore_another():
    mix = sine(440, 1, 48000) // 2 + sine(1000, 1, 48000) // 2
    assert 3000 < tone_levels(mix, 48000, 440).mean() < 3800
    assert 3000 < tone_levels(mix, 48000, 1000).mean() < 3800
    assert tone_levels(sine(440, 1, 48000), 48000, 1000).max() < 50


def test_speaker_levels_are_on_the_harness_clock():
    pcm = np.concatenate([np.zeros(16000, np.int16), sine(1000, 1, 16000)])
    rec = t.Recording(pcm, 16000, origin=100.0)
    lv = speaker_levels(rec, since=100.5)
    assert abs(lv[0][0] - 100.5) < 1e-9
    assert abs(heard_from(lv, 100.5) - 101.0) < 0.03


def test_sim_esp32_gives_a_scenario_the_grace_it_asks_for_one_boot():
    dev = SimEsp32()
    assert dev.ask(link_grace_s=15) == {"link_grace_s": 15.0} and dev._grace == 15.0
    assert dev.ask(other=1) == {"other": None}
    asyncio.run(dev.stop())  # nothing was started: stop only forgets what was asked
    assert dev._grace == dev.grace == 1.0
