"""Gateway capacity on one CPU core, beside the Opus-only bound of the same core.

The gateway runs as its own process (`lkdevice gateway`) pinned to core 0
(`taskset -c 0`); livekit-server and this load generator share the other core
(the script pins itself to core 1 before it starts the server, which inherits
that). The load generator is one asyncio process of DeviceClient instances
(host_tools/device_client.py, receive path trimmed to "timestamp and keep the
frame"; decoding happens after each step), PCM16, in pairs: each pair has its
own room, and each device hears its partner through the gateway

    device A -> gateway -> server -> gateway -> device B   (and B -> A)

Every device streams a 400 Hz tone continuously in 20 ms frames paced on the
monotonic clock (no silence, so no DTX gaps), and once a second, at a
per-device offset, replaces it with a marker: a 60 ms linear chirp 1 -> 4 kHz.
The receiver finds each marker by normalised cross-correlation
(bench/audio_rtt.py's detector); the path latency is "marker's first frame
handed to the client" -> "received frame holding its first sample".

Devices are added in steps (see the profiles below; up to --max-devices and
the --time-limit); earlier pairs keep streaming. Per step,
after --settle seconds, a --step-seconds window:

- frames: expected (what the partners sent in the window), received (arrived in
  the window), seq gaps (the gateway numbers each downlink frame; a gap is a
  frame it dropped), silent frames (RMS < 1 % of the tone's: a gap the pipeline
  filled with silence), and loss % = (max(0, expected - received) + silent) /
  expected, where expected counts the partners' frames sent in the window
  shifted back by the step's median marker latency (so the two windows hold
  the same frames);
- latency p50/p99 over all markers, and the load-added part: this step's p50 and
  p99 minus the smallest step's p50 (the same two-hop gateway path, nearly
  idle). For the gateway's cost against a direct client at low load see
  bench/gateway_latency.py;
- gateway process CPU % (utime+stime from /proc/<pid>/stat over the window),
  RSS, livekit-server CPU %, and the load generator's own CPU % and worst send
  lateness (if the generator falls behind, the step says so).

Capacity = the largest step with loss < 1 % and p99 load-added latency < 100 ms.

The official SDK, same run, after ours (the gateway stopped first): a child
process pinned to core 0 (bench/_official_capacity.py) runs the same load on
official `livekit` participants, N rooms of two in one process, as a gateway
built on the SDK would: per device an `rtc.AudioSource` at 16 kHz mono fed
the same tone and markers in 20 ms frames (queue 60 ms, the gateway's
microphone buffer) and an `rtc.AudioStream` of its partner at 16 kHz mono,
20 ms frames. The device's side of the protocol has no counterpart here, so
the load generation runs inside the pinned process. Same analysis (the
arrival time is when the frame reaches Python), plus the receivers' WebRTC
counters: the SDK plays out continuously and hides a lost packet with
concealment, so a step also fails on concealed samples >= 1 %.

Before either, a child process pinned to core 0 measures PyAV's libopus on
20 ms frames: encodes and decodes per second at 48 kHz mono (libopus default
bitrate) and stereo at 96 kb/s (aiortc's own encoder and decoder settings), and
the gateway's VoiceEncoder (rtc/opus.py: 16 kHz mono, 24 kb/s), turned into
devices = 1 / (50 * t_encode + 50 * t_decode).

Profiles: default (steps 2 ... 128, 8 s windows, 150 s a side, ~5 min in all)
and quick (4, 16, 32, 48, 64; 5 s windows; 75 s a side, ~3 min). A failing step
is measured once more (--retry-failed) before it counts, since on a shared
machine another process can stall core 0 for a moment (each step reports
core0_others_pct: core 0's busy time not spent by the measured process); a side
stops after --fail-steps (2) failing steps in a row. --baseline-tree DIR runs
ours a second time, first, with the `device/` package in DIR (before/after in
one run). --profile-gateway PATH runs the gateway under pyinstrument (text, or a
session to reload if PATH ends in .pyisession).

    host_tools/isolated.sh python bench/gateway_capacity.py [--profile quick] [--sides ours,official]
    git archive main device | tar -x -C /tmp/before
    host_tools/isolated.sh python bench/gateway_capacity.py --baseline-tree /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid

import numpy as np

import _common as common
import audio_rtt as rtt
from _gateway import CpuMeter, GatewayProcess

log = logging.getLogger("bench.gateway_capacity")

RATE16 = 16000
FRAME = 320
FRAME_S = 0.02
TONE_HZ = 400.0          # 40-sample period: every 20 ms frame is the same
TONE_AMPLITUDE = 0.1
MARKER_MS = 60


# -- the Opus-only bound (runs in a child pinned to core 0) --------------------------------

def opus_rate(seconds: float) -> dict:
    import fractions

    import av

    out: dict = {"pyav": av.__version__}
    t = np.arange(960 * 50) / 48000
    sig = (0.1 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
    for layout, channels, bitrate in (("mono", 1, None), ("stereo", 2, 96000)):
        enc = av.CodecContext.create("libopus", "w")
        if bitrate:
            enc.bit_rate = bitrate
        enc.format = "s16"
        enc.layout = layout
        enc.sample_rate = 48000
        enc.time_base = fractions.Fraction(1, 48000)
        frames = []
        for i in range(50):
            pcm = sig[i * 960:(i + 1) * 960]
            if channels == 2:
                pcm = np.repeat(pcm, 2)
            f = av.AudioFrame(format="s16", layout=layout, samples=960)
            f.planes[0].update(pcm.tobytes())
            f.sample_rate = 48000
            frames.append(f)
        packets: list[bytes] = []
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            f = frames[n % 50]
            f.pts = n * 960
            for p in enc.encode(f):
                if len(packets) < 500:
                    packets.append(bytes(p))
            n += 1
        t_enc = (time.perf_counter() - t0) / n
        dec = av.CodecContext.create("libopus", "r")
        dec.format = "s16"
        dec.layout = layout
        dec.sample_rate = 48000
        m = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            dec.decode(av.Packet(packets[m % len(packets)]))
            m += 1
        t_dec = (time.perf_counter() - t0) / m
        out[layout] = {
            "bitrate": bitrate or "libopus default",
            "encode_us": round(t_enc * 1e6, 1),
            "decode_us": round(t_dec * 1e6, 1),
            "encodes_per_s": round(1 / t_enc),
            "decodes_per_s": round(1 / t_dec),
            "devices_bound": round(1 / (50 * t_enc + 50 * t_dec), 1),
        }
    # what the gateway's microphone now runs: rtc/opus.py's VoiceEncoder at the device's
    # 16 kHz (no resampling), decoded as a far side does, at 48 kHz
    from lkdevice.rtc.opus import VoiceEncoder

    venc = VoiceEncoder(RATE16)
    sig16 = (0.1 * 32767 * np.sin(2 * np.pi * TONE_HZ * np.arange(FRAME * 50) / RATE16)).astype(np.int16)
    chunks = [sig16[i * FRAME:(i + 1) * FRAME] for i in range(50)]
    packets = []
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        p = venc.encode(chunks[n % 50], n * FRAME)
        if len(packets) < 500:
            packets.append(bytes(p))
        n += 1
    t_enc = (time.perf_counter() - t0) / n
    dec = av.CodecContext.create("libopus", "r")
    dec.format = "s16"
    dec.layout = "mono"
    dec.sample_rate = 48000
    m = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        dec.decode(av.Packet(packets[m % len(packets)]))
        m += 1
    t_dec = (time.perf_counter() - t0) / m
    out["voice16"] = {
        "bitrate": venc.bitrate, "encoder": "VoiceEncoder 16 kHz mono voip, decoded mono at 48 kHz",
        "encode_us": round(t_enc * 1e6, 1), "decode_us": round(t_dec * 1e6, 1),
        "encodes_per_s": round(1 / t_enc), "decodes_per_s": round(1 / t_dec),
        "devices_bound": round(1 / (50 * t_enc + 50 * t_dec), 1),
    }
    return out


def measure_opus_bound(seconds: float) -> dict:
    cmd = ["taskset", "-c", "0", sys.executable, os.path.abspath(__file__), "--opus-only",
           "--opus-seconds", str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 30)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-1000:]}
    res = json.loads(proc.stdout)
    res["pinned"] = "taskset -c 0"
    return res


# -- the load ----------------------------------------------------------------------------

def marker_chirp() -> np.ndarray:
    c48 = rtt.make_chirp(1000.0, 4000.0, MARKER_MS / 1000.0, 0.5)
    return np.ascontiguousarray(c48[::3])  # the same sweep sampled at 16 kHz


def _device_client_class():
    from lkdevice.host_tools.device_client import DeviceClient

    class LoadClient(DeviceClient):
        """DeviceClient whose receive path only timestamps and keeps each frame."""

        def __init__(self, url: str):
            super().__init__(url, codec="pcm16")
            self.rx_frames: list[tuple[float, bytes]] = []

        def _on_audio(self, frame: bytes) -> None:
            self.rx_frames.append((time.monotonic(), frame))

    return LoadClient


class LoadDevice:
    def __init__(self, index: int, identity: str, room: str, marker_frame: int):
        self.index = index
        self.identity = identity
        self.room = room
        self.marker_frame = marker_frame  # frame within each second where the marker starts
        self.client = None
        self.partner: "LoadDevice | None" = None
        self.sends: list[float] = []          # send time of every frame
        self.marker_sends: list[tuple[float, float]] = []  # (first frame, last frame) send times
        self.max_late = 0.0
        self.error: str | None = None
        self._task: asyncio.Task | None = None

    async def join(self, gateway_url: str, timeout: float) -> None:
        cls = _device_client_class()
        self.client = await cls(gateway_url).open()
        welcome = await self.client.hello(common.token(self.identity, self.room), timeout=timeout)
        if welcome["t"] != "welcome":
            raise RuntimeError(f"{self.identity}: {welcome}")

    def start(self, tone: np.ndarray, chirp: np.ndarray) -> None:
        self._task = asyncio.ensure_future(self._stream(tone, chirp))
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = repr(task.exception())
            log.warning("%s stopped streaming: %s", self.identity, self.error)

    async def _stream(self, tone: np.ndarray, chirp: np.ndarray) -> None:
        encode = self.client.encode
        ws = self.client.ws
        tone_b = np.ascontiguousarray(tone, dtype="<i2")
        chirp_b = [np.ascontiguousarray(chirp[i * FRAME:(i + 1) * FRAME], dtype="<i2")
                   for i in range(len(chirp) // FRAME)]
        n_marker = len(chirp_b)
        t0 = time.monotonic()
        k = 0
        first_t = 0.0
        while True:
            due = t0 + k * FRAME_S
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                self.max_late = max(self.max_late, now - due)
            pos = (k - self.marker_frame) % 50
            pcm = chirp_b[pos] if pos < n_marker and k >= 50 else tone_b
            frame = encode(pcm)
            t = time.monotonic()
            await ws.send(frame)
            self.sends.append(t)
            if k >= 50 and pos == 0:
                first_t = t
            elif k >= 50 and pos == n_marker - 1:
                self.marker_sends.append((first_t, t))
            k += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.send({"t": "leave", "reason": "bench done"})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), 3)


def proc_cpu_seconds(pid: int | str) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def analyse(flows: list[tuple[list[tuple[float, np.ndarray]], list[int] | None, list[float],
                               list[tuple[float, float]]]],
            w0: float, w1: float, chirp: np.ndarray, max_delay: float) -> dict:
    """One flow per receiving device: (received 20 ms frames as (arrival, pcm), their
    seq numbers or None, the partner's send times, the partner's marker send times).

    Markers first (their median delay d aligns the frame count: what the partner
    sent in [w0 - d, w1 - d] should arrive in [w0, w1]), then frames."""
    latencies: list[float] = []
    missed = 0
    windowed = []
    for rx_all, seqs_all, sends, marker_sends in flows:
        keep = [i for i, (t, _) in enumerate(rx_all) if w0 <= t <= w1]
        rx = [rx_all[i] for i in keep]
        seqs = [seqs_all[i] for i in keep] if seqs_all is not None else None
        windowed.append((rx, seqs, sends))
        markers = [(a, b) for a, b in marker_sends if w0 <= a <= w1 - max_delay]
        if markers and rx:
            found = rtt.detect(rx, chirp, [a for a, _ in markers], [b for _, b in markers], max_delay, 0.5)
            for r in found:
                if r["delay_ms"] is None:
                    missed += 1
                else:
                    latencies.append(r["delay_ms"])
    lat = np.asarray(latencies)
    shift = float(np.median(lat)) / 1000.0 if lat.size else 0.0
    expected = received = gaps = silent = 0
    silence_rms = 0.01 * TONE_AMPLITUDE * 32767 / np.sqrt(2)
    for rx, seqs, sends in windowed:
        expected += sum(1 for t in sends if w0 - shift <= t <= w1 - shift)
        received += len(rx)
        if seqs is not None:
            gaps += sum(max(0, ((b - a) & 0xFFFF) - 1) for a, b in zip(seqs, seqs[1:]))
        silent += sum(1 for _, x in rx if np.sqrt(np.mean(x.astype(np.float64) ** 2)) < silence_rms)
    lost = max(0, expected - received) + silent
    return {
        "frames_expected": expected,
        "frames_received": received,
        "seq_gaps": gaps,
        "silent_frames": silent,
        "loss_pct": round(100.0 * lost / expected, 3) if expected else None,
        "markers": int(lat.size),
        "markers_missed": missed,
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
        "latency_max_ms": round(float(lat.max()), 1) if lat.size else None,
    }


def our_flows(devices: list[LoadDevice]) -> list:
    flows = []
    for d in devices:
        frames = d.client.rx_frames
        rx = [(t, np.frombuffer(f, dtype="<i2", offset=8)) for t, f in frames]
        seqs = [(f[2] << 8) | f[3] for _, f in frames]
        flows.append((rx, seqs, d.partner.sends, d.partner.marker_sends))
    return flows


def judge(step: dict, baseline_p50: float | None) -> float | None:
    """Fill in added latency and ok; returns the baseline (the first step's p50)."""
    if baseline_p50 is None and step["latency_p50_ms"] is not None:
        baseline_p50 = step["latency_p50_ms"]
    if baseline_p50 is not None and step["latency_p50_ms"] is not None:
        step["added_p50_ms"] = round(step["latency_p50_ms"] - baseline_p50, 1)
        step["added_p99_ms"] = round(step["latency_p99_ms"] - baseline_p50, 1)
    step["ok"] = (step["loss_pct"] is not None and step["loss_pct"] < 1.0 and step.get("added_p99_ms") is not None
                  and step["added_p99_ms"] < 100.0 and step["markers"] > 0
                  and (step.get("concealed_pct") or 0.0) < 1.0)
    return baseline_p50


class Core0Meter:
    """Busy % of core 0 (everything on it: the measured process and whatever else the machine runs)."""

    def __init__(self):
        self.t0, self.busy0 = time.monotonic(), self._busy()

    @staticmethod
    def _busy() -> float | None:
        with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu0 "):
                    v = [int(x) for x in line.split()[1:]]
                    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        return None

    def read(self) -> float | None:
        busy = self._busy()
        if busy is None or self.busy0 is None:
            return None
        return 100.0 * (busy - self.busy0) / (time.monotonic() - self.t0)


def brief(step: dict) -> dict:
    return {k: step.get(k) for k in ("loss_pct", "added_p99_ms", "concealed_pct", "core0_others_pct")}


def far_past(step: dict, args) -> bool:
    return (step["loss_pct"] or 0) > args.stop_loss_pct or (step.get("added_p50_ms") or 0) > args.stop_added_ms


def stop_stepping(step: dict, failed_in_a_row: int, args) -> bool:
    return failed_in_a_row >= args.fail_steps or far_past(step, args)


def cpu_fit(steps: list[dict], key: str) -> dict | None:
    """CPU % = fixed + per_device * devices, least squares over the passing steps, and
    where it reaches a whole core. On a shared machine another process moves the
    latency (and so the capacity step) first; CPU time used per device moves little."""
    passing = [s for s in steps if s["ok"] and s.get(key) is not None]
    if len(passing) < 2:
        return None
    n = np.array([s["devices"] for s in passing], dtype=float)
    cpu = np.array([s[key] for s in passing], dtype=float)
    per_device, fixed = np.polyfit(n, cpu, 1)
    return {"fixed_pct": round(float(fixed), 1), "per_device_pct": round(float(per_device), 2),
            "devices_at_100_pct": round(float((100 - fixed) / per_device), 1) if per_device > 0 else None,
            "steps": [s["devices"] for s in passing]}


def capacity(steps: list[dict]) -> tuple[int, int | None]:
    passing = [s["devices"] for s in steps if s["ok"]]
    first_fail = next((s["devices"] for s in steps if not s["ok"]), None)
    return (max(passing) if passing else 0), first_fail


async def add_pairs(devices: list[LoadDevice], target: int, run_id: str, gw_url: str, args,
                    tone: np.ndarray, chirp: np.ndarray) -> list[str]:
    errors: list[str] = []
    new: list[LoadDevice] = []
    while len(devices) + len(new) < target:
        i = len(devices) + len(new)
        room = f"cap-{run_id}-{i // 2}"
        a = LoadDevice(i, f"dev{i}", room, (i * 7) % 50)
        b = LoadDevice(i + 1, f"dev{i + 1}", room, ((i + 1) * 7) % 50)
        a.partner, b.partner = b, a
        new += [a, b]
    sem = asyncio.Semaphore(args.join_concurrency)

    async def join(d: LoadDevice) -> None:
        async with sem:
            await d.join(gw_url, args.timeout)

    results = await asyncio.gather(*(join(d) for d in new), return_exceptions=True)
    for d, r in zip(new, results):
        if isinstance(r, BaseException):
            errors.append(f"{d.identity}: {r!r}")
    for d in new:
        if d.client is not None and d.client.welcome is not None:
            d.start(tone, chirp)
    devices.extend(new)
    return errors


async def run_ours(args, server, gw: GatewayProcess) -> dict:
    run_id = uuid.uuid4().hex[:6]
    tone = (TONE_AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * np.arange(FRAME) / RATE16)).astype(np.int16)
    chirp = marker_chirp()
    devices: list[LoadDevice] = []
    steps_out: list[dict] = []
    errors: list[str] = []
    baseline_p50: float | None = None
    failed = 0
    t_start = time.monotonic()
    steps = [s for s in args.steps if s <= args.max_devices]
    try:
        for n in steps:
            elapsed = time.monotonic() - t_start
            if elapsed + args.settle + args.step_seconds + 15 > args.time_limit:
                log.info("time limit: stopping before the %d-device step", n)
                break
            earlier: list[dict] = []
            for attempt in range(1 + args.retry_failed):
                tj = time.monotonic()
                errs = await add_pairs(devices, n, run_id, gw.url, args, tone, chirp)
                join_s = time.monotonic() - tj
                errors += errs
                await asyncio.sleep(args.settle)
                for d in devices:
                    d.max_late = 0.0
                meter = CpuMeter(gw)
                meter.start()
                srv0 = proc_cpu_seconds(server.proc.pid)
                me0 = proc_cpu_seconds("self")
                core0 = Core0Meter()
                w0 = time.monotonic()
                await asyncio.sleep(args.step_seconds)
                w1 = time.monotonic()
                gw_cpu = meter.read()
                srv_cpu = round(100 * (proc_cpu_seconds(server.proc.pid) - srv0) / (w1 - w0), 1)
                me_cpu = round(100 * (proc_cpu_seconds("self") - me0) / (w1 - w0), 1)
                core0_busy = core0.read()
                # let the markers sent near the end arrive before analysing
                await asyncio.sleep(0.3)
                live = [d for d in devices if d._task is not None]
                stats = analyse(our_flows(live), w0, w1, chirp, args.max_delay)
                step = {"devices": len(live), "join_s": round(join_s, 2), "join_errors": len(errs), **stats,
                        "gateway_cpu_pct": gw_cpu, "gateway_rss_mb": gw.rss_mb(), "server_cpu_pct": srv_cpu,
                        "core0_others_pct": round(max(0.0, core0_busy - gw_cpu), 1) if core0_busy is not None else None,
                        "loadgen_cpu_pct": me_cpu,
                        "loadgen_max_send_late_ms": round(1000 * max((d.max_late for d in live), default=0), 1)}
                baseline_p50 = judge(step, baseline_p50)
                # clear what the next window does not need
                for d in devices:
                    d.client.rx_frames.clear()
                    d.sends = [t for t in d.sends if t > w1 - 2.0]
                    d.marker_sends = [m for m in d.marker_sends if m[0] > w1]
                if step["ok"] or attempt == args.retry_failed or far_past(step, args):
                    break
                log.info("ours: %d devices failed (%s); measuring again", n, brief(step))
                earlier.append(brief(step))
            if earlier:
                step["failed_before"] = earlier
            failed = 0 if step["ok"] else failed + 1
            log.info("ours step %s", json.dumps(step))
            steps_out.append(step)
            if stop_stepping(step, failed, args):
                log.info("past capacity at %d devices; stopping", step["devices"])
                break
    finally:
        await asyncio.gather(*(d.stop() for d in devices), return_exceptions=True)
    cap, first_fail = capacity(steps_out)
    return {"capacity_devices": cap, "first_failing_step": first_fail, "baseline_p50_ms": baseline_p50,
            "cpu_fit": cpu_fit(steps_out, "gateway_cpu_pct"),
            "steps": steps_out, "errors": errors[:20], "error_count": len(errors)}


class OfficialProcess:
    """bench/_official_capacity.py in a child (pinned like the gateway), driven a step at a time."""

    def __init__(self, url: str, cpus: str | None, out_dir: str, args):
        here = os.path.dirname(os.path.abspath(__file__))
        cmd = [sys.executable, os.path.join(here, "_official_capacity.py"), "--url", url,
               "--run-id", f"sdk-{uuid.uuid4().hex[:6]}", "--out-dir", out_dir,
               "--join-concurrency", str(args.join_concurrency), "--timeout", str(args.timeout)]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))

    async def read(self, timeout: float) -> dict:
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            raise RuntimeError(f"official child ended (exit {self.proc.poll()})")
        return json.loads(line)

    def send(self, obj: dict) -> None:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.send({"cmd": "quit"})
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def official_flows(path: str, n: int) -> list:
    data = np.load(path)
    flows = []
    for i in range(n):
        p = i ^ 1  # the partner: devices come in pairs
        if not (bool(data[f"ok{i}"][0]) and bool(data[f"ok{p}"][0])):
            continue
        pcm = data[f"rx_pcm{i}"]
        rx = [(float(t), pcm[k * FRAME:(k + 1) * FRAME]) for k, t in enumerate(data[f"rx_t{i}"])]
        flows.append((rx, None, list(data[f"sends{p}"]), [tuple(m) for m in data[f"markers{p}"]]))
    return flows


async def run_official(args, server, cpus: str | None) -> dict:
    """The same load on official-SDK participants, all in one process on the gateway's core."""
    import tempfile

    chirp = marker_chirp()
    steps_out: list[dict] = []
    errors: list[str] = []
    baseline_p50: float | None = None
    failed = 0
    t_start = time.monotonic()
    ended = None
    with tempfile.TemporaryDirectory(prefix="lkd-cap-") as out_dir:
        child = OfficialProcess(server.url, cpus, out_dir, args)
        n = 0
        try:
            await child.read(60)  # ready
            for n in [s for s in args.steps if s <= args.max_devices]:
                if time.monotonic() - t_start + args.settle + args.step_seconds + 30 > args.time_limit:
                    log.info("official: time limit, stopping before the %d-device step", n)
                    n = 0
                    break
                earlier: list[dict] = []
                for attempt in range(1 + args.retry_failed):
                    child.send({"cmd": "step", "devices": n, "settle": args.settle, "seconds": args.step_seconds})
                    await child.read(60 + n)  # window start (joins done)
                    c0, srv0, t0 = proc_cpu_seconds(child.proc.pid), proc_cpu_seconds(server.proc.pid), time.monotonic()
                    core0 = Core0Meter()
                    await child.read(args.step_seconds + 30)  # window end
                    dt = time.monotonic() - t0
                    cpu = round(100 * (proc_cpu_seconds(child.proc.pid) - c0) / dt, 1)
                    srv_cpu = round(100 * (proc_cpu_seconds(server.proc.pid) - srv0) / dt, 1)
                    core0_busy = core0.read()
                    rss = GatewayProcess.rss_of(child.proc.pid)
                    info = (await child.read(120))["step"]
                    errors += info["errors"]
                    flows = official_flows(info["path"], info["devices"])
                    stats = analyse(flows, info["w0"], info["w1"], chirp, args.max_delay)
                    ib = info["inbound"]
                    step = {"devices": info["devices"], "join_s": info["join_s"], "join_errors": info["join_errors"],
                            **stats,
                            "concealed_pct": round(100 * ib["concealed"] / ib["samples"], 3) if ib["samples"] else None,
                            "packets_lost": ib["packets_lost"],
                            "sdk_process_cpu_pct": cpu, "sdk_process_rss_mb": rss, "server_cpu_pct": srv_cpu,
                            "core0_others_pct": round(max(0.0, core0_busy - cpu), 1) if core0_busy is not None else None,
                            "max_send_late_ms": info["max_send_late_ms"]}
                    baseline_p50 = judge(step, baseline_p50)
                    if step["ok"] or attempt == args.retry_failed or far_past(step, args):
                        break
                    log.info("official: %d devices failed (%s); measuring again", n, brief(step))
                    earlier.append(brief(step))
                if earlier:
                    step["failed_before"] = earlier
                failed = 0 if step["ok"] else failed + 1
                log.info("official step %s", json.dumps(step))
                steps_out.append(step)
                if stop_stepping(step, failed, args):
                    log.info("official: past capacity at %d devices; stopping", step["devices"])
                    n = 0
                    break
            n = 0
        except Exception as exc:
            # past capacity the SDK's process can starve until it cannot join or dies
            # (FFI panic on its own timeouts): that step failed, the earlier ones stand
            log.warning("official: the %d-device step did not complete: %r", n, exc)
            ended = repr(exc)
            if n:
                steps_out.append({"devices": n, "ok": False, "collapsed": ended})
        finally:
            child.stop()
    cap, first_fail = capacity(steps_out)
    return {"capacity_devices": cap, "first_failing_step": first_fail, "baseline_p50_ms": baseline_p50,
            "cpu_fit": cpu_fit(steps_out, "sdk_process_cpu_pct"),
            "steps": steps_out, "ended": ended, "errors": errors[:20], "error_count": len(errors)}


def baseline_path(tree: str) -> str:
    """A PYTHONPATH entry whose `lkdevice` is DIR/device."""
    import tempfile

    src = os.path.join(os.path.abspath(tree), "device")
    if not os.path.isfile(os.path.join(src, "__init__.py")):
        raise SystemExit(f"--baseline-tree: no device/__init__.py under {tree}")
    shim = tempfile.mkdtemp(prefix="lkd-baseline-")
    os.symlink(src, os.path.join(shim, "lkdevice"))
    return shim


PROFILES = {
    # steps, step seconds, settle, time limit per side
    "default": ("2,4,8,16,24,32,48,64,96,128", 8.0, 3.0, 150.0),
    "quick": ("4,16,32,48,64", 5.0, 2.0, 75.0),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="default",
                   help="default: ~6 min in all; quick: ~3 min, coarser steps, shorter windows")
    p.add_argument("--max-devices", type=int, default=128)
    p.add_argument("--steps", help="device counts (even numbers)")
    p.add_argument("--step-seconds", type=float)
    p.add_argument("--settle", type=float, help="seconds after adding devices before measuring")
    p.add_argument("--time-limit", type=float, help="per side: no new step starts past this (seconds)")
    p.add_argument("--sides", default="ours,official", help="which of ours,official to run")
    p.add_argument("--baseline-tree", metavar="DIR",
                   help="also run ours with the `device/` package found in DIR (e.g. `git archive "
                        "<commit> device | tar -x -C DIR`): before/after in the same run, as side `baseline`")
    p.add_argument("--join-concurrency", type=int, default=4)
    p.add_argument("--max-delay", type=float, default=0.8, help="marker search window, seconds")
    p.add_argument("--fail-steps", type=int, default=2, help="stop after this many failing steps in a row")
    p.add_argument("--retry-failed", type=int, default=1,
                   help="measure a failing step again this many times (a shared machine stalls now and then)")
    p.add_argument("--stop-loss-pct", type=float, default=10.0, help="stop stepping past this loss")
    p.add_argument("--stop-added-ms", type=float, default=500.0, help="stop stepping past this added p50")
    p.add_argument("--opus-seconds", type=float, default=4.0)
    p.add_argument("--opus-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--gateway-args", default="", help="extra arguments for `lkdevice gateway`")
    p.add_argument("--profile-gateway", metavar="PATH",
                   help="run the gateway under pyinstrument, its text report to PATH (use with --sides ours)")
    p.add_argument("--no-pin", action="store_true", help="do not pin (machines with one core)")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--deadline", type=float, help="hard stop, seconds (default: sides x time limit + 240)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    if args.opus_only:
        print(json.dumps(opus_rate(args.opus_seconds)))
        return 0
    steps, step_s, settle, limit = PROFILES[args.profile]
    args.steps = sorted({int(s) for s in (args.steps or steps).split(",") if s})
    args.step_seconds = args.step_seconds or step_s
    args.settle = args.settle if args.settle is not None else settle
    args.time_limit = args.time_limit or limit
    sides = {s.strip() for s in args.sides.split(",") if s.strip()}
    args.deadline = args.deadline or (len(sides) + bool(args.baseline_tree)) * args.time_limit + 240
    if any(s % 2 for s in args.steps):
        p.error("--steps: device counts must be even (devices come in pairs)")
    common.require_isolation()
    common.setup_logging(args.verbose)
    t_start = time.monotonic()
    cpus = os.sched_getaffinity(0)
    pin = not args.no_pin and {0, 1} <= cpus
    if pin:
        os.sched_setaffinity(0, {1})  # the server (started next) inherits core 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    opus = measure_opus_bound(args.opus_seconds) if pin else {"error": "not pinned"}
    log.info("opus bound: %s", opus)

    result: dict = {
        "benchmark": "gateway_capacity",
        "setup": {
            "ours": "lkdevice gateway, own process, taskset -c 0; DeviceClient load generator on core 1",
            "official": "official livekit SDK, N rooms of 2 participants in one process, taskset -c 0",
            "server": "core 1",
            "device_audio": "16 kHz mono 20 ms frames both ways (ours: PCM16 device protocol)",
            "signal": f"{TONE_HZ:.0f} Hz tone, continuous; {MARKER_MS} ms chirp 1-4 kHz once a second per device",
            "pairs": "2 devices per room, each hears its partner",
            "profile": args.profile, "steps": args.steps,
            "step_seconds": args.step_seconds, "settle_seconds": args.settle,
            "added_latency": "step p50/p99 minus the side's smallest step's p50",
        },
        "capacity_rule": "largest step with loss < 1 %, p99 added latency < 100 ms (official: and concealed < 1 %)",
    }
    servers: list = []
    ok = True
    with common.watchdog(args.deadline, servers):
        server = common.start_server()
        servers.append(server)
        try:
            ours_runs = [("ours", None)]
            if args.baseline_tree:
                sides.add("baseline")
                ours_runs.insert(0, ("baseline", baseline_path(args.baseline_tree)))
                result["setup"]["baseline"] = os.path.abspath(args.baseline_tree)
            for side, pythonpath in ours_runs:
                if side not in sides:
                    continue
                gw = None
                try:
                    gw = GatewayProcess(server.url, cpus="0" if pin else None,
                                        extra_args=args.gateway_args.split(), pythonpath=pythonpath,
                                        profile_to=args.profile_gateway if side == "ours" else None).start()
                    servers.append(gw)
                    result[side] = asyncio.run(asyncio.wait_for(run_ours(args, server, gw),
                                                                args.time_limit + 60))
                except Exception as exc:
                    log.exception("%s failed", side)
                    result[side] = {"error": repr(exc), "gateway_log_tail": gw.lines[-20:] if gw else None}
                finally:
                    if gw is not None:
                        gw.stop()
            if "official" in sides:
                try:
                    result["official"] = asyncio.run(asyncio.wait_for(
                        run_official(args, server, "0" if pin else None), args.time_limit + 150))
                except Exception as exc:
                    log.exception("official failed")
                    result["official"] = {"error": repr(exc)}
        finally:
            ok = all(bool(result.get(s, {}).get("steps")) for s in sides)
            common.stop_server(server, keep_workdir=not ok)
    if "baseline" in result:
        result["baseline_devices"] = result["baseline"].get("capacity_devices")
    result["ours_devices"] = result.get("ours", {}).get("capacity_devices")
    result["official_devices"] = result.get("official", {}).get("capacity_devices")
    result["ratio_ours_over_official"] = common.ratio(result["ours_devices"], result["official_devices"])
    for side in ("baseline", "ours", "official"):
        if side in result:
            result[f"{side}_devices_at_full_core_estimate"] = ((result[side].get("cpu_fit") or {})
                                                               .get("devices_at_100_pct"))
    result["opus_bound"] = opus
    for key in ("mono", "stereo", "voice16"):
        result[f"opus_bound_devices_{key}"] = (opus.get(key) or {}).get("devices_bound")
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    result["loadavg_before"] = load_before
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["environment"] = common.environment()
    result["environment"]["pinned"] = pin
    common.emit(result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
