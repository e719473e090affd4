"""The real-hardware targets, against the stand-ins this machine has: real tools, simulated hardware.

`esp32:<port>` drives a PtyBoard (the real MicroPython REPL behind a PTY, which
the board tools use exactly like USB serial): install, provision, console,
soft reset, heap from the firmware's own RPC. `pi:<user@host>` deploys with
`lkdevice deploy` to the real sshd of test_deploy.py (FakePi, with the systemd
stand-in) and reads the service's journal and /proc over ssh.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpremote")

from lkdevice.host_tools.sim_pty import PtyBoard  # noqa: E402


def hil(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lkdevice.cli", "hil", "run", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def statuses(report: Path) -> dict[str, tuple[str, str]]:
    d = json.loads((report / "report.json").read_text())
    return {r["scenario"]: (r["status"], r["reason"]) for r in d["results"]}


@pytest.fixture
def board():
    b = PtyBoard().start()
    yield b
    b.stop()
    b.cleanup()


def test_esp32_on_a_serial_port_installs_provisions_and_passes(board, tmp_path):
    out = tmp_path / "rep"
    r = hil("--target", f"esp32:{board.port}", "--board", "sim", "--scenario", "join", "--scenario", "data-rpc-in",
            "--scenario", "data-rpc-out", "--scenario", "agent-state", "--scenario", "talk", "--report", str(out))
    got = statuses(out)
    assert r.returncode == 0, (got, r.stderr[-3000:])
    assert {k: v[0] for k, v in got.items()} == {"join": "passed", "data-rpc-in": "passed", "data-rpc-out": "passed",
                                                 "agent-state": "passed", "talk": "skipped"}, got
    assert "sound card" in got["talk"][1] and "hil/README.md" in got["talk"][1]
    ident = json.loads((out / "report.json").read_text())["identity"]
    assert ident["target"] == f"esp32:{board.port}" and ident["board"] == "boards/sim.json"
    assert re.match(r"\d+\.\d+\.\d+ \(", ident["micropython"]) and len(ident["firmware_hash"]) == 16
    # the board's flash holds what install and provision put there, app.py included
    flash = board.flash
    assert (flash / "app.py").read_text().strip().startswith("def setup(device):")
    token = json.loads((flash / "config.json").read_text())["token"]
    shown = r.stdout + r.stderr + "".join(p.read_text() for p in out.iterdir() if p.suffix in (".json", ".md",
                                                                                                ".html", ".xml"))
    assert token not in shown


async def test_esp32_cycles_leave_and_join_through_a_cut_link_with_the_heap_sampled(board, server):
    from lkdevice.hil.esp32_serial import Esp32Serial
    from lkdevice.hil.lab import Lab
    from lkdevice.hil.runner import Runner
    from lkdevice.hil.scenario import PROFILES
    from lkdevice.hil.scenarios import SCENARIOS

    lab = Lab(server)
    profile = dataclasses.replace(PROFILES["ci"], cycles=6, warmup_cycles=2)
    target = Esp32Serial(board.port, sample_every=1.0)
    try:
        result = await Runner(target, lab, profile).run_one(SCENARIOS["cycles"], 1)
    finally:
        lab.stop()
    # every cycle a leave and a join seen by the room (the memory verdict is the gateway's too: asserted below
    # for the firmware's heap only, the gateway's RSS over a few cycles being its warm-up)
    cycles = [s for s in result.steps if s.name.startswith("cycle ")]
    assert len(cycles) == 6 and all(s.status == "passed" for s in cycles), (result.reason, result.steps)
    assert not result.device_errors, result.device_errors
    figures = {k: v.value for k, v in result.figures.items()}
    # the heap is the firmware's own answer to lkdevice.info, sampled through the cycles (the gateway away in each)
    assert figures["heap_samples"] >= 6 and figures["rss_samples"] >= 10, figures
    heaps = [s.heap for s in target.samples() if s.heap is not None]
    assert all(20_000 < h < 136 * 1024 for h in heaps), heaps
    assert abs(figures["heap_growth_per_cycle"]) < profile.heap_per_cycle, figures
    # each leave was the link cut: the firmware saw it drop and said hello again each time
    assert board.output().count(b"[lkd] welcome ") >= 7


def test_a_missing_port_or_an_unknown_kind_is_one_line_and_exit_2():
    for args, expected in ((["--target", "esp32:/dev/lkd-no-such-port"], "error: no board on /dev/lkd-no-such-port"),
                           (["--target", "esp32:"], "error: target 'esp32:': say which serial port"),
                           (["--target", "sim-pi", "--board", "sim"], "error: --board is for sim-esp32 and esp32"),
                           (["--target", "pic:x"], "error: unknown target 'pic:x'")):
        r = hil(*args, "--scenario", "join", timeout=60)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), (args, r.stderr)


# the "Pi": test_deploy.py's real sshd on 10.77.0.2 with the systemd stand-in (its own, for this module)
from .test_deploy import HOST, PORT, FakePi, pi  # noqa: E402,F401


def pi_args(fake: FakePi) -> list[str]:
    return ["--ssh-key", str(fake.user_key), "--known-hosts", str(fake.known_hosts), "--pi-any-arch",
            "--pi-offline", "--pi-python", sys.executable]


def test_pi_over_ssh_deploys_runs_the_robot_service_and_passes(pi, tmp_path):
    out = tmp_path / "rep"
    r = hil("--target", f"pi:pi@{HOST}:{PORT}", *pi_args(pi), "--scenario", "join", "--scenario", "data-rpc-in",
            "--scenario", "agent-state", "--scenario", "data-rpc-out", "--report", str(out))
    got = statuses(out)
    assert r.returncode == 0, (got, r.stderr[-3000:])
    assert {k: v[0] for k, v in got.items()} == {"join": "passed", "data-rpc-in": "passed", "agent-state": "passed",
                                                 "data-rpc-out": "skipped"}, got
    d = json.loads((out / "report.json").read_text())
    ident = d["identity"]
    assert ident["target"] == f"pi:pi@{HOST}:{PORT}" and ident["extra"]["wheel"].startswith("lkdevice-")
    assert len(ident["firmware_hash"]) == 16 and ident["extra"]["lkdevice"]
    # the service it ran is the deployed one, and it is stopped after the run
    assert pi.standin_state()["argv"][0].endswith("/lkdevice-robot/venv/bin/lkdevice")
    assert pi.standin_state()["state"] == "inactive"
    cfg = (pi.home / ".config" / "lkdevice" / "robot.toml")
    assert cfg.stat().st_mode & 0o777 == 0o600
    token = cfg.read_text().split('token = "')[1].split('"')[0]
    shown = r.stdout + r.stderr + "".join(p.read_text() for p in out.iterdir() if p.suffix in (".json", ".md",
                                                                                                ".html", ".xml"))
    assert token not in shown


def test_an_unreachable_pi_is_one_line_and_exit_2(pi):
    for target, expected in ((f"pi:pi@{HOST}:{PORT + 1}", "refused the connection"),
                             ("pi:pi@nosuch.invalid", "no such host: nosuch.invalid")):
        r = hil("--target", target, *pi_args(pi), "--scenario", "join", timeout=60)
        assert r.returncode == 2 and r.stdout == "", (target, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (target, r.stderr)


async def test_pi_cycles_are_service_restarts_with_rss_and_handles_read_over_ssh(pi, server):
    from lkdevice.hil.lab import Lab
    from lkdevice.hil.pi_ssh import PiSsh
    from lkdevice.hil.runner import Runner
    from lkdevice.hil.scenario import PROFILES
    from lkdevice.hil.scenarios import SCENARIOS

    lab = Lab(server)
    target = PiSsh(f"pi@{HOST}:{PORT}", ssh_key=str(pi.user_key), known_hosts=str(pi.known_hosts),
                   python=sys.executable, offline=True, any_arch=True, sample_every=1.0)
    try:
        result = await Runner(target, lab, dataclasses.replace(PROFILES["ci"], cycles=3, warmup_cycles=1)).run_one(
            SCENARIOS["cycles"], 1)
    finally:
        lab.stop()
    cycles = [s for s in result.steps if s.name.startswith("cycle ")]
    assert len(cycles) == 3 and all(s.status == "passed" for s in cycles), (result.reason, result.steps)
    assert not result.device_errors, result.device_errors
    # each cycle a new robot process, its memory read in the Pi's /proc
    rss = [s.rss for s in target.samples() if s.rss is not None]
    assert len(rss) >= 5 and all(1 << 20 < r < 2 << 30 for r in rss), rss  # from its start (~12 MB) on
    assert result.figures["handles_samples"].value >= 5
    assert pi.standin_state()["state"] == "inactive"  # stopped after the run
