"""`sim-pi`: the robot app (`lkdevice robot`) as a subprocess: synthetic camera, WAV audio, the sim drive.

Its console is the app's stdout and stderr (`-v`: the drive's lines too). The
microphone is a WAV file read at real-time pace once the app has joined; the
speaker is written to a WAV file at real-time pace from the app's start. The
app has no API to send data or call an RPC of its own, and leaves the room only
when it exits: those capabilities are absent. It runs with a group id of its
own (host_tools/linkcut.py), so `drop_link` cuts its network and only its: the
far-side peer talks to the same server on the same ports throughout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import shutil
from collections import deque
from pathlib import Path

import numpy as np

from lkdevice.host_tools import linkcut
from lkdevice.host_tools.simulator import write_wav

from . import target as t
from .procinfo import git_commit, open_handles, rss_bytes

SPEAKER_RATE = 48000  # the wav backend records at 48 kHz
WAV_HEADER = 44
ERROR_LINE = re.compile(r"Traceback|error: |ERROR")
PLAYOUT_LINE = re.compile(r"speaker stats (\{.*\})")  # the app's -v line every 5 s
MISSING = {
    t.DATA_OUT: "the robot app has no API for sending data of its own (plugins only answer)",
    t.RPC_OUT: "the robot app has no API for calling an RPC in the room",
    t.REJOIN: "the robot app leaves the room only when it exits: no rejoin within one process",
    t.LED: "the robot app has no LED (its set_led is logged by the sim drive)",
    t.HEAP: "the robot app is CPython: RSS and open handles, no firmware heap",
    t.GATEWAY: "the robot app joins LiveKit itself: there is no gateway on its path",
}


class SimPi(t.Target):
    name = "sim-pi"
    capabilities = frozenset({t.JOIN, t.MIC, t.SPEAKER, t.DATA_IN, t.RPC_IN, t.AGENT_STATE, t.RSS, t.HANDLES})
    identity_name = "robot"

    rss_of = "the robot app"

    def __init__(self, *, sample_every: float = 2.0, duration: float = 3600.0, mic_tail_s: float = 300.0):
        super().__init__()
        self._no_cut = linkcut.can_cut()
        if self._no_cut is None:
            self.capabilities = type(self).capabilities | {t.LINK_DROP}
        self.mic_tail_s = mic_tail_s
        self.sample_every = sample_every
        self.duration = duration
        self.proc: subprocess.Popen | None = None
        self.dir: Path | None = None
        self._samples: deque[t.Sample] = deque(maxlen=10_000)
        self._sampler: asyncio.Task | None = None
        self._readers: list[threading.Thread] = []
        self._spk_origin: float | None = None
        self._args: list[str] = []

    async def start(self, url: str, room: str, token: str) -> None:
        self.console = t.Console()
        self._samples.clear()
        self.dir = Path(tempfile.mkdtemp(prefix="lkd-hil-pi-"))
        mic = self.dir / "mic.wav"
        # silence after the words, else the wav backend loops the file and asks the question again
        pcm = self._mic if self._mic is not None else np.zeros(0, np.int16)
        write_wav(mic, np.concatenate([pcm, np.zeros(int(self.mic_tail_s * 16000), np.int16)]))
        self.speaker_path = self.dir / "speaker.wav"
        self._args = [sys.executable, "-m", "lkdevice.cli", "-v", "robot", "--url", url, "--token", token,
                      "--camera", "test", "--plugin", "sim", "--audio", "wav", "--play", str(mic),
                      "--record", str(self.speaker_path), "--duration", str(self.duration)]
        self._spawn()
        self._sampler = asyncio.ensure_future(self._sample())

    def _spawn(self) -> None:
        self._spk_origin = None
        own_group = {"group": linkcut.LINK_GID} if self._no_cut is None else {}
        self.proc = subprocess.Popen(self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env={**os.environ}, **own_group)
        self.console.reopen()
        self._readers = [threading.Thread(target=self._read, args=(s,), daemon=True)
                         for s in (self.proc.stdout, self.proc.stderr)]
        for r in self._readers:
            r.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.console.feed(line.rstrip("\n"))

    async def _sample(self) -> None:
        last = 0.0
        while self.proc is not None and self.proc.poll() is None:
            if self._spk_origin is None:
                self._estimate_origin()
            if time.monotonic() - last >= self.sample_every:
                last = time.monotonic()
                pid = self.proc.pid
                self._samples.append(t.Sample(last, rss=rss_bytes(pid), handles=open_handles(pid)))
            await asyncio.sleep(0.25)

    async def _end(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
                return -9
            for r in self._readers:
                r.join(2)
            return 0 if self.proc.returncode in (0, 130, -15) else self.proc.returncode
        for r in self._readers:
            r.join(2)
        return self.proc.returncode

    async def stop(self) -> list[str]:
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        self._final = self.recording()
        code = await self._end()
        self.console.close()
        errors = self.errors()
        if code not in (None, 0):
            errors.append(f"the robot app exited with code {code}")
        if self.dir is not None:
            self._final = self.recording()
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        return errors

    async def reset(self) -> None:
        await self._end()
        self._spawn()
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.ensure_future(self._sample())

    async def drop_link(self, seconds: float) -> None:
        """Every packet of the robot app's sockets dropped both ways for `seconds` (a dead Wi-Fi link)."""
        if self._no_cut is not None:
            raise t.TargetError(self._no_cut)
        if self.proc is None or self.proc.poll() is not None:
            raise t.TargetError("the robot app is not running")
        cut = linkcut.LinkCut(max_seconds=seconds + 30)
        try:
            await asyncio.sleep(seconds)
        finally:
            cut.close()

    def errors(self) -> list[str]:
        return [l for l in self.console.lines() if ERROR_LINE.search(l)][:20]

    def mic_origin(self) -> float | None:
        # the mic loop waits for the published track: the join line is its start, to a frame or two
        found = self.console.find(r"joined room ")
        return found[0] if found else None

    def _estimate_origin(self) -> None:
        # the speaker is written at real-time pace, but a stalled loop skips ahead rather than fill
        # the gap: the first estimate, made in the app's first seconds, is the one closest to the truth
        try:
            n = (self.speaker_path.stat().st_size - WAV_HEADER) // 2
        except (OSError, AttributeError):
            return
        if n > 0:
            self._spk_origin = time.monotonic() - n / SPEAKER_RATE

    def recording(self) -> t.Recording:
        if self.dir is None:
            return getattr(self, "_final", t.Recording(np.zeros(0, np.int16), SPEAKER_RATE, 0.0))
        try:
            data = self.speaker_path.read_bytes()[WAV_HEADER:]
        except OSError:
            data = b""
        pcm = np.frombuffer(data[:len(data) // 2 * 2], dtype="<i2").copy()
        if len(pcm) and self._spk_origin is None and self.proc is not None and self.proc.poll() is None:
            self._estimate_origin()
        return t.Recording(pcm, SPEAKER_RATE, self._spk_origin or 0.0)

    def playout(self) -> list[t.Playout]:
        out = []
        for ts, line in self.console.timed_lines():
            m = PLAYOUT_LINE.search(line)
            if m is None:
                continue
            try:
                # lost: packets missing at their turn (late ones too); not `concealed`, which also
                # counts the first frames of every pause in the sender's audio (an underrun looks like a loss)
                st = json.loads(m.group(1))
                out.append(t.Playout(ts, "robot", float(st["target_delay_ms"]), int(st["decoded"]),
                                     int(st["jitter_lost"])))
            except (ValueError, KeyError, TypeError):
                pass  # a line cut short: one sample fewer
        return out

    def identity(self) -> t.Identity:
        import lkdevice
        pkg = Path(lkdevice.__file__).resolve().parent
        digest = hashlib.sha256()
        for p in sorted(pkg.rglob("*.py")):
            if "__pycache__" not in p.parts:
                digest.update(str(p.relative_to(pkg)).encode() + b"\0" + p.read_bytes())
        return t.Identity(self.name, firmware_hash=digest.hexdigest()[:16], micropython=None,
                          board="robot app (--camera test --audio wav --plugin sim)",
                          git_commit=git_commit(pkg.parent),
                          extra={"python": sys.version.split()[0], "lkdevice": lkdevice.__version__})

    def samples(self) -> list[t.Sample]:
        return list(self._samples)

    def describe_missing(self, capability: str) -> str:
        if capability == t.LINK_DROP and self._no_cut is not None:
            return f"sim-pi cannot cut the robot app's link: {self._no_cut}"
        return MISSING.get(capability, super().describe_missing(capability))

    def data_probe(self, sender: str) -> tuple[str, bytes, str]:
        # the joystick topic of the sim drive: a move with no answer, logged by the drive
        return "robot.drive", b'{"direction": "left", "speed": 0.25, "duration_ms": 200}', \
            rf"drive: move left at speed 0.25 for 200 ms \(from {re.escape(sender)}\)"

    def rpc_probe(self) -> tuple[str, str, str]:
        return "get_battery", "", r"\d"

    def agent_state_line(self, agent: str, state: str) -> str:
        return rf"agent {re.escape(agent)}: {state}$"
