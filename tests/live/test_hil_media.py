"""Latency, loss and the lossy network in the harness: healthy targets pass, broken ones are caught, and why.

A device whose speaker stops after 20 s fails the long call with "the speaker
stopped at 20 s"; a link that drops 10 % of the media fails it with the loss
figure; the lossy network of the core issue (2 % loss, 30 ± 30 ms per hop)
passes on a healthy sim-esp32 and sim-pi, and its loss shows in the figures.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from lkdevice.hil import broken
from lkdevice.hil.lab import Lab
from lkdevice.hil.runner import Runner
from lkdevice.hil.scenario import PROFILES
from lkdevice.hil.scenarios import SCENARIOS
from lkdevice.hil.sim_esp32 import SimEsp32

SHORT = dataclasses.replace(PROFILES["ci"], long_call_s=30.0)


@pytest.fixture(scope="module")
def lab(server):
    lab = Lab(server)
    yield lab
    lab.stop()


def fig(result, name):
    f = result.figures.get(name)
    return None if f is None else f.value


async def test_a_device_whose_speaker_stops_after_20s_fails_the_long_call_saying_so(lab):
    profile = dataclasses.replace(SHORT, long_call_s=35.0)
    result = await Runner(broken.SpeakerStopsEsp32(after_s=20.0), lab, profile).run_one(SCENARIOS["long-call"], 1)
    assert result.status == "failed", result.figures
    m = re.search(r"the speaker stopped at (\d+) s \((\d+) s into the call\): silent from there", result.reason)
    assert m, result.reason
    assert 19 <= int(m.group(1)) <= 22, result.reason


async def test_a_link_that_drops_10_percent_fails_the_long_call_with_the_loss():
    lab = broken.lossy_link(10.0)
    try:
        result = await Runner(SimEsp32(), lab, dataclasses.replace(SHORT, long_call_s=20.0)).run_one(
            SCENARIOS["long-call"], 1)
    finally:
        lab.stop()
    assert result.status == "failed", result.figures
    found = dict(re.findall(r"(uplink|downlink) loss (\d+\.\d) % \(limit 5 %\)", result.reason))
    assert found, result.reason
    for direction, pct in found.items():
        assert 6.0 <= float(pct) <= 16.0, result.reason
    assert fig(result, "uplink_loss_pct") >= 6.0, result.figures


