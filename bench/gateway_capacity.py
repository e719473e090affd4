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

Devices are added in steps (2, 4, 8, 12, 16, 24, 32, 48, 64 by default, up to
--max-devices and the --time-limit); earlier pairs keep streaming. Per step,
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
Before the gateway starts, a child process pinned to core 0 measures PyAV's
libopus (what aiortc uses) on 20 ms 48 kHz frames: encodes and decodes per
second, mono (as asked) and stereo at 96 kb/s (aiortc's own encoder and decoder
settings), turned into devices = 1 / (50 * t_encode + 50 * t_decode).

    host_tools/isolated.sh python bench/gateway_capacity.py [--max-devices 64] [--step-seconds 10]
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
DEFAULT_STEPS = (2, 4, 8, 12, 16, 24, 32, 48, 64)


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


def analyse(devices: list[LoadDevice], w0: float, w1: float, chirp: np.ndarray, max_delay: float) -> dict:
    """Markers first (their median delay d aligns the frame count: what the partner
    sent in [w0 - d, w1 - d] should arrive in [w0, w1]), then frames."""
    latencies: list[float] = []
    missed = 0
    per_device = []
    for d in devices:
        p = d.partner
        frames = [(t, f) for t, f in d.client.rx_frames if w0 <= t <= w1]
        pcms = [np.frombuffer(f, dtype="<i2", offset=8) for _, f in frames]
        per_device.append((d, frames, pcms))
        markers = [(a, b) for a, b in p.marker_sends if w0 <= a <= w1 - max_delay]
        if markers and frames:
            rx = [(t, x) for (t, _), x in zip(frames, pcms)]
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
    for d, frames, pcms in per_device:
        expected += sum(1 for t in d.partner.sends if w0 - shift <= t <= w1 - shift)
        received += len(frames)
        seqs = [(f[2] << 8) | f[3] for _, f in frames]
        gaps += sum(max(0, ((b - a) & 0xFFFF) - 1) for a, b in zip(seqs, seqs[1:]))
        silent += sum(1 for x in pcms if np.sqrt(np.mean(x.astype(np.float64) ** 2)) < silence_rms)
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


async def run(args, server, gw: GatewayProcess, opus: dict, t_start: float) -> dict:
    run_id = uuid.uuid4().hex[:6]
    tone = (TONE_AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * np.arange(FRAME) / RATE16)).astype(np.int16)
    chirp = marker_chirp()
    devices: list[LoadDevice] = []
    steps_out: list[dict] = []
    errors: list[str] = []
    baseline_p50: float | None = None
    steps = [s for s in args.steps if s <= args.max_devices]
    try:
        for n in steps:
            elapsed = time.monotonic() - t_start
            if elapsed + args.settle + args.step_seconds + 15 > args.time_limit:
                log.info("time limit: stopping before the %d-device step", n)
                break
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
            w0 = time.monotonic()
            await asyncio.sleep(args.step_seconds)
            w1 = time.monotonic()
            gw_cpu = meter.read()
            srv_cpu = round(100 * (proc_cpu_seconds(server.proc.pid) - srv0) / (w1 - w0), 1)
            me_cpu = round(100 * (proc_cpu_seconds("self") - me0) / (w1 - w0), 1)
            # let the markers sent near the end arrive before analysing
            await asyncio.sleep(0.3)
            live = [d for d in devices if d._task is not None]
            stats = analyse(live, w0, w1, chirp, args.max_delay)
            step = {"devices": len(live), "join_s": round(join_s, 2), "join_errors": len(errs), **stats,
                    "gateway_cpu_pct": gw_cpu, "gateway_rss_mb": gw.rss_mb(), "server_cpu_pct": srv_cpu,
                    "loadgen_cpu_pct": me_cpu,
                    "loadgen_max_send_late_ms": round(1000 * max((d.max_late for d in live), default=0), 1)}
            if baseline_p50 is None and step["latency_p50_ms"] is not None:
                baseline_p50 = step["latency_p50_ms"]
            if baseline_p50 is not None and step["latency_p50_ms"] is not None:
                step["added_p50_ms"] = round(step["latency_p50_ms"] - baseline_p50, 1)
                step["added_p99_ms"] = round(step["latency_p99_ms"] - baseline_p50, 1)
            step["ok"] = (step["loss_pct"] is not None and step["loss_pct"] < 1.0 and step.get("added_p99_ms") is not None
                          and step["added_p99_ms"] < 100.0 and step["markers"] > 0)
            log.info("step %s", json.dumps(step))
            steps_out.append(step)
            # clear what the next step does not need
            for d in devices:
                d.client.rx_frames.clear()
                d.sends = [t for t in d.sends if t > w1 - 2.0]
                d.marker_sends = [m for m in d.marker_sends if m[0] > w1]
            if (step["loss_pct"] or 0) > args.stop_loss_pct or (step.get("added_p50_ms") or 0) > args.stop_added_ms:
                log.info("far past capacity at %d devices; stopping", step["devices"])
                break
    finally:
        await asyncio.gather(*(d.stop() for d in devices), return_exceptions=True)
    passing = [s["devices"] for s in steps_out if s["ok"]]
    first_fail = next((s["devices"] for s in steps_out if not s["ok"]), None)
    return {
        "benchmark": "gateway_capacity",
        "setup": {
            "gateway": "own process, taskset -c 0",
            "server_and_loadgen": "core 1",
            "codec": "pcm16",
            "signal": f"{TONE_HZ:.0f} Hz tone, continuous; {MARKER_MS} ms chirp 1-4 kHz once a second per device",
            "pairs": "2 devices per room, each hears its partner through the gateway",
            "step_seconds": args.step_seconds,
            "settle_seconds": args.settle,
            "added_latency": "step p50/p99 minus the smallest step's p50 (same path, 2 devices)",
        },
        "capacity_devices": max(passing) if passing else 0,
        "capacity_rule": "largest step with loss < 1 % and p99 added latency < 100 ms",
        "first_failing_step": first_fail,
        "opus_bound": opus,
        "opus_bound_devices_mono": (opus.get("mono") or {}).get("devices_bound"),
        "opus_bound_devices_stereo_aiortc": (opus.get("stereo") or {}).get("devices_bound"),
        "baseline_p50_ms": baseline_p50,
        "steps": steps_out,
        "errors": errors[:20],
        "error_count": len(errors),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-devices", type=int, default=64)
    p.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)), help="device counts (even numbers)")
    p.add_argument("--step-seconds", type=float, default=10.0)
    p.add_argument("--settle", type=float, default=3.0, help="seconds after adding devices before measuring")
    p.add_argument("--time-limit", type=float, default=270.0, help="no new step starts past this (seconds)")
    p.add_argument("--join-concurrency", type=int, default=4)
    p.add_argument("--max-delay", type=float, default=0.8, help="marker search window, seconds")
    p.add_argument("--stop-loss-pct", type=float, default=10.0, help="stop stepping past this loss")
    p.add_argument("--stop-added-ms", type=float, default=500.0, help="stop stepping past this added p50")
    p.add_argument("--opus-seconds", type=float, default=4.0)
    p.add_argument("--opus-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-pin", action="store_true", help="do not pin (machines with one core)")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--deadline", type=float, default=330.0)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    if args.opus_only:
        print(json.dumps(opus_rate(args.opus_seconds)))
        return 0
    args.steps = sorted({int(s) for s in args.steps.split(",") if s})
    if any(s % 2 for s in args.steps):
        p.error("--steps: device counts must be even (devices come in pairs)")
    common.require_isolation()
    common.setup_logging(args.verbose)
    t_start = time.monotonic()
    cpus = os.sched_getaffinity(0)
    pin = not args.no_pin and {0, 1} <= cpus
    if pin:
        os.sched_setaffinity(0, {1})  # the server (started next) inherits core 1
    opus = measure_opus_bound(args.opus_seconds) if pin else {"error": "not pinned"}
    log.info("opus bound: %s", opus)

    servers: list = []
    ok = False
    with common.watchdog(args.deadline, servers):
        server = common.start_server()
        servers.append(server)
        gw = None
        try:
            gw = GatewayProcess(server.url, cpus="0" if pin else None).start()
            servers.append(gw)
            result = asyncio.run(asyncio.wait_for(run(args, server, gw, opus, t_start), args.deadline - 20))
            ok = bool(result["steps"])
        except Exception as exc:
            log.exception("gateway_capacity failed")
            result = {"benchmark": "gateway_capacity", "error": repr(exc), "server_log": str(server.log_path),
                      "gateway_log_tail": gw.lines[-20:] if gw else None}
        finally:
            if gw is not None:
                gw.stop()
            common.stop_server(server, keep_workdir=not ok)
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    result["environment"] = common.environment()
    result["environment"]["pinned"] = pin
    common.emit(result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
