"""The harness itself, against a real livekit-server: it passes healthy targets and catches broken ones.

A harness that cannot fail is worthless: a firmware whose heap is too small to
join fails `join` with the reason, and a device that leaks a fixed amount per
join/leave cycle fails `cycles` with the bytes per cycle.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from lkdevice.hil.lab import Lab
from lkdevice.hil.runner import Runner
from lkdevice.hil.scenario import PROFILES
from lkdevice.hil.scenarios import SCENARIOS
from lkdevice.hil.sim_esp32 import SimEsp32
from lkdevice.hil.sim_pi import SimPi

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def lab(server):
    lab = Lab(server)
    yield lab
    lab.stop()


def scenarios(*names: str):
    return [SCENARIOS[n] for n in names]


async def test_a_heap_too_small_to_join_fails_join_and_the_report_says_memoryerror(lab):
    lines: list[str] = []
    result = await Runner(SimEsp32(heap="48K"), lab, PROFILES["ci"], progress=lines.append).run_one(
        SCENARIOS["join"], 1)
    assert result.status == "failed"
    assert re.search(r"esp32 (did not join within 60 s|stopped before it joined)", result.reason), result.reason
    assert "MemoryError" in result.reason, result.reason
    assert any("MemoryError" in e for e in result.device_errors)
    assert lines[-1].startswith("[hil]") and "FAILED" in lines[-1]


LEAK = 8192


class LeakyEsp32(SimEsp32):
    """Broken on purpose: its heap samples grow by LEAK bytes with every join/leave cycle (what a
    firmware that kept one buffer per session would show)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.cycled_at: list[float] = []

    async def rejoin(self, timeout: float) -> None:
        await super().rejoin(timeout)
        self.cycled_at.append(time.monotonic())

    def samples(self):
        out = super().samples()
        for s in out:
            if s.heap is not None:
                s.heap += LEAK * sum(1 for c in self.cycled_at if c <= s.t)
        return out


async def test_a_device_that_leaks_per_cycle_fails_cycles_with_the_bytes_per_cycle(lab):
    profile = dataclasses.replace(PROFILES["ci"], cycles=6, warmup_cycles=1)
    result = await Runner(LeakyEsp32(), lab, profile).run_one(SCENARIOS["cycles"], 1)
    assert result.status == "failed", result.figures
    m = re.search(r"the firmware heap grows (-?\d+) B/cycle after warm-up \(limit 512\)", result.reason)
    assert m, result.reason
    assert abs(int(m.group(1)) - LEAK) < 0.3 * LEAK, result.reason
    assert len(result.series["heap at each cycle's end"]["points"]) == 6


async def test_sim_pi_runs_what_it_can_and_skips_the_rest_with_the_reason(lab):
    run = await Runner(SimPi(), lab, PROFILES["ci"]).run(scenarios("data-rpc-in", "data-rpc-out", "cycles"))
    got = {r.scenario: (r.status, r.reason) for r in run.results}
    assert got["data-rpc-in"][0] == "passed", got
    assert got["data-rpc-out"] == ("skipped", "the robot app has no API for sending data of its own (plugins only "
                                              "answer); the robot app has no API for calling an RPC in the room")
    assert got["cycles"][0] == "skipped" and "no rejoin" in got["cycles"][1]


def test_the_command_line_and_the_pytest_plugin_run_and_write_reports(tmp_path):
    cli = subprocess.run([sys.executable, "-m", "lkdevice.cli", "hil", "run", "--target", "sim-pi", "--scenario",
                          "join", "--scenario", "cycles", "--repeat", "2", "--report", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "| join | pass | pass |" in cli.stdout and "| cycles | skip | skip |" in cli.stdout
    assert re.search(r"\[hil\] +\d+\.\ds join#2 › boot: waiting for sim-pi to start", cli.stderr)
    assert "Traceback" not in cli.stderr and "secret" not in (tmp_path / "cli" / "report.json").read_text()

    plug = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                           "lkdevice.hil.pytest_plugin", "--lkd-target", "sim-pi", "--lkd-scenario", "join",
                           "--lkd-scenario", "cycles", "--lkd-report", str(tmp_path / "plug"), "hil/"],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert plug.returncode == 0, plug.stdout[-3000:] + plug.stderr[-2000:]
    assert re.search(r"1 passed, 1 skipped", plug.stdout), plug.stdout[-2000:]
    cases = ET.parse(tmp_path / "plug" / "junit.xml").getroot().findall("testcase")
    assert [c.get("name") for c in cases] == ["join[1]", "cycles[1]"]
