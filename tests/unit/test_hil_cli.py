"""`lkdevice hil run`: a user's mistake is one line and exit 2, before anything starts."""

from __future__ import annotations

import subprocess
import sys


def hil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lkdevice.cli", "hil", "run", *args], capture_output=True,
                          text=True, timeout=60)


def test_an_unknown_scenario_is_one_line_naming_the_known_ones():
    r = hil("--scenario", "joni")
    assert r.returncode == 2 and r.stdout == ""
    from lkdevice.hil.scenarios import SCENARIOS
    known = ", ".join(SCENARIOS)  # every scenario, in the table's order (more come with each part of the harness)
    assert known.startswith("join, talk, data-rpc-in, data-rpc-out, agent-state, long-call, cycles")
    assert r.stderr.strip().splitlines() == [f"error: unknown scenario 'joni'; scenarios: {known}"]


def test_an_unknown_target_is_one_line():
    r = hil("--target", "esp8266:/dev/ttyUSB0", "--scenario", "join")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: unknown target 'esp8266:/dev/ttyUSB0'; targets: sim-esp32, sim-pi, esp32:PORT, pi:USER@HOST, "
        "sim-esp32-leaky-gateway"]


def test_an_option_for_another_kind_of_target_is_one_line():
    r = hil("--target", "sim-esp32", "--ssh-key", "k", "--scenario", "join")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: --ssh-key is for pi targets, not sim-esp32"]


def test_the_help_shows_an_example():
    r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "hil", "run", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "example: " in r.stdout and "--repeat N" in r.stdout
