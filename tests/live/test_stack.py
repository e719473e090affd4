"""`lkdevice up` and `lkdevice demo` as a user runs them: subprocesses, the real server, agent and firmware.

Run inside host_tools/isolated.sh (the stack's ports are the namespace's own).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lkdevice.host_tools.demo import MicFeeder, speak, voiced_seconds
from lkdevice.host_tools.livekit_server import free_port
from lkdevice.host_tools.simulator import SimulatedDevice
from lkdevice.rtc.wavfile import read_wav

LKDEVICE = [sys.executable, "-m", "lkdevice.cli"]


@pytest.fixture(autouse=True)
def isolated():
    if os.environ.get("LKDEVICE_ISOLATED") != "1":
        pytest.fail("live tests run inside host_tools/isolated.sh")


class Up:
    """`lkdevice up` in its own session, as a terminal runs it: Ctrl-C reaches its whole group."""

    def __init__(self, *args: str):
        self.server_port = free_port()
        self.gateway_port = free_port()
        argv = LKDEVICE + ["up", "--server-port", str(self.server_port),
                           "--gateway-listen", f"127.0.0.1:{self.gateway_port}", *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))

    def tree(self) -> set[int]:
        return descendants(self.proc.pid) | {self.proc.pid}

    def stop(self, sig: int, group: bool, timeout: float = 40.0) -> int:
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        for pid in self.tree():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pids: set[int]) -> set[int]:
    left = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(pid)
    return left


def cmdlines(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
        except OSError:
            pass
    return out


def run_printed(command: str) -> str:
    """A command `up` printed, run as the user would (lkdevice as this tree's module)."""
    argv = shlex.split(command)
    assert argv[0] == "lkdevice", command
    r = subprocess.run(LKDEVICE + argv[1:], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_up_status_lines_token_command_device_answered_and_ctrl_c_leaves_nothing(tmp_path):
    up = Up("--echo", "--room", "up-test")
    try:
        up.wait_line(rf"^server  ready ws://127\.0\.0\.1:{up.server_port}$", 60)
        gateway = up.wait_line(r"^gateway ready (ws://\S+)$", 30).group(1)
        up.wait_line(r"^agent   ready lkdevice-agent \(echo\)$", 150)
        assert up.wait_line(r"^device URL: +(\S+)$", 10).group(1) == gateway
        command = up.wait_line(r"^device token: +(.+)$", 10).group(1)
        assert command == "lkdevice token --identity esp32 --room up-test --agent lkdevice-agent"
        up.wait_line(r"^Ctrl-C stops all three$", 10)
        assert not any("secret" in line for line in up.lines)
        tree = up.tree()
        assert any("livekit-server" in c for c in cmdlines(tree)) and any(" agent " in c for c in cmdlines(tree))

        # a device joins with the printed token, and the (echo) agent answers it
        question = speak("what time is it", tmp_path / "q.wav")
        dev = SimulatedDevice(gateway, run_printed(command), play=np.zeros(2 * 16000, np.int16))
        dev.start()
        feeder = MicFeeder(dev.mic_path, time.monotonic()).start(2 * 16000)
        try:
            dev.wait_for_line(r"\[lkd\] welcome room=up-test identity=esp32", 30)
            dev.wait_for_line(r"agent_state agent=\S+ state=listening", 60)
            heard_before = len(dev.speaker_pcm())
            asked = dev.mark()
            feeder.play(question)
            spoke = dev.wait_for_line(r"agent_state agent=\S+ state=speaking", 30, since=asked)
            dev.wait_for_line(r"agent_state agent=\S+ state=listening", 30, since=dev.lines().index(spoke.string, asked))
            time.sleep(1.0)
        finally:
            feeder.stop()
            dev.stop()
        answer = dev.speaker_pcm()[heard_before:]
        dev.cleanup()
        # the echo of about 0.7 s of speech
        assert voiced_seconds(answer, 16000) >= 0.4, voiced_seconds(answer, 16000)

        tree = up.tree()
        code = up.stop(signal.SIGINT, group=True)  # Ctrl-C in a terminal: the whole foreground group
        assert code == 0, "\n".join(up.lines)
        assert up.lines[-1] == "stopped: agent, gateway and server"
        time.sleep(0.5)
        assert not alive(tree), cmdlines(alive(tree))
    finally:
        up.kill()


def test_up_sigterm_stops_all_three():
    up = Up("--echo")
    try:
        up.wait_line(r"^Ctrl-C stops all three$", 150)
        tree = up.tree()
        assert len(tree) >= 3
        assert up.stop(signal.SIGTERM, group=False) == 0
        time.sleep(0.5)
        assert not alive(tree), cmdlines(alive(tree))
    finally:
        up.kill()


def test_up_says_which_part_died_and_stops_the_rest():
    up = Up("--echo")
    try:
        up.wait_line(r"^Ctrl-C stops all three$", 150)
        tree = up.tree()
        agent = [pid for pid in descendants(up.proc.pid) if " agent " in " ".join(cmdlines({pid}))
                 and "lkdevice.cli" in " ".join(cmdlines({pid}))]
        assert len(agent) == 1
        os.kill(agent[0], signal.SIGKILL)
        code = up.proc.wait(40)
        up._reader.join(5)
        out = "\n".join(up.lines)
        assert code == 1, out
        assert "error: agent exited with -9" in out
        assert "--- the end of the agent's log:" in out
        time.sleep(0.5)
        assert not alive(tree), cmdlines(alive(tree))
    finally:
        up.kill()


def test_up_busy_port_is_one_line_exit_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag in (["--server-port", str(port)], ["--gateway-listen", f"127.0.0.1:{port}"]):
            r = subprocess.run(LKDEVICE + ["up", "--echo", *flag], capture_output=True, text=True, timeout=30)
            assert r.returncode == 2, r.stderr
            lines = (r.stdout + r.stderr).strip().splitlines()
            assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and flag[0] in lines[0], lines


@pytest.mark.parametrize("args, words", [(["--device", "foo"], "--device must be one of esp32-sim, robot-sim"),
                                         (["--audio", "speakers"], "--audio must be one of"),
                                         (["--record", "/no/such/dir/a.wav"], "no directory")])
def test_demo_user_mistake_is_one_line_exit_2(args, words):
    r = subprocess.run(LKDEVICE + ["demo", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines


@pytest.mark.parametrize("device", ["esp32-sim", "robot-sim"])
def test_demo_echo_records_the_agent_replaying_the_question(device, tmp_path):
    out = tmp_path / "answer.wav"
    r = subprocess.run(LKDEVICE + ["demo", "--echo", "--device", device, "--audio", "wav", "--record", str(out)],
                       capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"recording: {out}" in r.stdout
    pcm, rate = read_wav(str(out))
    assert voiced_seconds(pcm, rate) >= 0.4, r.stdout


@pytest.mark.parametrize("device, question, answer", [
    ("esp32-sim", "what time is it", r"\bthe time is\b"),
    # the agent calls the robot's get_battery and says what it returned (the sim drive: 100 %)
    ("robot-sim", "what is your battery", r"battery is at one hundred percent")])
def test_demo_wav_asks_the_voice_agent_and_prints_its_answer(device, question, answer, tmp_path):
    r = subprocess.run(LKDEVICE + ["demo", "--device", device, "--audio", "auto"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    heard = re.search(r"^heard: +(.+)$", out, re.M).group(1)
    said = re.search(r"^said: +(.+)$", out, re.M).group(1)
    assert question in heard.lower(), out
    assert re.search(answer, said.lower()), out
    assert "recording: demo-answer.wav" in out
    pcm, rate = read_wav(str(tmp_path / "demo-answer.wav"))
    assert voiced_seconds(pcm, rate) >= 1.0
