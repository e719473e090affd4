"""The harness's fuzz against a real gateway, and a gateway broken on purpose that `cycles` must catch."""

from __future__ import annotations

import dataclasses
import re

import pytest

from lkdevice.hil.leaky_gateway import LEAK_BYTES
from lkdevice.hil.lab import Lab
from lkdevice.hil.runner import Runner
from lkdevice.hil.scenario import PROFILES
from lkdevice.hil.scenarios import SCENARIOS
from lkdevice.hil.sim_esp32 import SimEsp32


@pytest.fixture(scope="module")
def lab(server):
    lab = Lab(server)
    yield lab
    lab.stop()


async def test_the_fuzz_on_a_healthy_gateway_passes_with_every_answer_as_the_spec_says(lab):
    result = await Runner(SimEsp32(), lab, PROFILES["ci"]).run_one(SCENARIOS["fuzz"], 1)
    fig = {k: v.value for k, v in result.figures.items()}
    assert result.status == "passed", (result.reason, fig)
    assert fig["frames_sent"] >= 20_000 and fig["answered_wrong"] == 0 and fig["unanswered"] == 0
    # the fuzz reached every family of answer the spec has for a device's mistakes
    for code in ("malformed", "too_large", "unexpected", "unsupported_version", "unsupported_codec",
                 "token_rejected", "unknown_session", "bad_frame", "data_failed", "close 1007", "close 1009", "pong"):
        assert fig.get(f"answers[{code}]", 0) > 0, code
    assert fig["session_resumes"] > 100  # the joined-session cases ran, on resumed links
    assert fig["audio_max_gap_ms"] <= 200 and fig["audio_frames_missing_pct"] <= 2


async def test_a_gateway_that_leaks_per_session_fails_cycles_stating_the_bytes_per_cycle(lab):
    profile = dataclasses.replace(PROFILES["ci"], cycles=8, warmup_cycles=2)
    result = await Runner(SimEsp32(gateway="leaky"), lab, profile).run_one(SCENARIOS["cycles"], 1)
    assert result.status == "failed", result.figures
    m = re.search(r"the RSS of the gateway grows (\d+) B/cycle after warm-up \(limit 262144\)", result.reason)
    assert m, result.reason
    # the leak, plus the real gateway's own allocator warm-up (~0.1-0.2 MB a cycle over the first cycles)
    assert 0.8 * LEAK_BYTES <= int(m.group(1)) <= LEAK_BYTES + 400 * 1024, result.reason
