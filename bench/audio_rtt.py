"""Audio round trip through a local livekit-server: lkdevice vs the official SDK.

Path: device -> server -> echo peer -> server -> device. The echo peer is an
official-SDK `rtc.Room` that subscribes to the device's microphone
(rtc.AudioStream, 48 kHz mono, 10 ms frames) and pushes every frame it gets into
its own rtc.AudioSource (48 kHz mono, small queue), which it publishes. The
device is either our lkdevice client ("ours") or an official-SDK rtc.Room in the
same role ("official"); the echo peer is set up the same way for both.

The device feeds its microphone in real time: 10 ms chunks handed over on a
monotonic-clock schedule (MicrophoneTrack.write for ours, AudioSource.capture_frame
for the official SDK), silence with a chirp (linear sweep, 1 -> 4 kHz, 100 ms)
every second. Every chunk's hand-over time and every received 10 ms frame's
arrival time are taken from the same monotonic clock. Each chirp is found in
the received audio by normalised cross-correlation (numpy FFT) inside a window
after its known send time; its delay is

    arrival time of the received frame holding the chirp's first sample
  - hand-over time of the sent chunk holding the chirp's first sample

i.e. "first sample handed to the client" to "first sample available from the
client". Runs alternate ours/official (ABBA order with --rounds 2), each with
a fresh room and a fresh echo peer. Prints one JSON object on stdout.

Each run is measured under every network profile (`--profiles`): `clean`,
`loss3` and `loss10` (nftables drops 3 % / 10 % of the server's media to its
subscribers, host_tools/netimpair.py, from the moment both clients are up) and
`loss2_jitter30` (2 % loss, every client's media through a user-space relay
that holds each datagram 30 ms +- 30 ms, uniform: 0..60 ms, on a server of its
own that advertises only the relay's address), and `outage500` (all media both
ways dropped for 500 ms halfway through the call, between two chirps). Per
profile and client: median, p90 and drift (median of the last quarter of the
chirps minus the first quarter's, per run). `--stall-ms N` also blocks the
bench's event loop for N ms halfway through every call (a CPU hog, a GC pause).

    host_tools/isolated.sh python bench/audio_rtt.py [--chirps 8] [--rounds 2] [--profiles clean,loss3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time

import numpy as np

import _common as common
from lkdevice.host_tools.netimpair import RELAY_ADDRESS, Impairment

log = logging.getLogger("bench.audio_rtt")

RATE = 48000
CHUNK = RATE // 100  # 10 ms
ECHO_IDENTITY = "echo"
ECHO_STANDING_FRAMES = 50  # 0.5 s of 10 ms frames
ECHO_STANDING_S = 0.03
# name -> (loss % to subscribers, relay delay ms, relay jitter ms)
PROFILES = {
    "clean": (0, 0, 0),
    "loss3": (3, 0, 0),
    "loss10": (10, 0, 0),
    "loss2_jitter30": (2, 30, 30),
}
# name -> blackout of all media both ways halfway through the call, seconds
OUTAGES = {"outage500": 0.5}


def make_chirp(f0: float, f1: float, duration: float, amplitude: float) -> np.ndarray:
    """A linear sweep with 2 ms raised-cosine edges, int16, length a whole number of chunks."""
    n = int(round(duration * RATE / CHUNK)) * CHUNK
    t = np.arange(n) / RATE
    dur = n / RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * dur))
    x = np.sin(phase)
    edge = int(0.002 * RATE)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, edge))
    x[:edge] *= ramp
    x[-edge:] *= ramp[::-1]
    return (amplitude * 32767 * x).astype(np.int16)


# -- the echo peer (official SDK in both measurements) --------------------------------


class EchoPeer:
    def __init__(self, device_identity: str, queue_ms: int, dtx: bool | None = None, capacity: int = 0,
                 shed: bool = False):
        from livekit import rtc

        self.rtc = rtc
        self.device_identity = device_identity
        self.queue_ms = queue_ms
        self.dtx = dtx
        self.capacity = capacity
        self.shed = shed
        self.room = rtc.Room()
        self.source: "rtc.AudioSource | None" = None
        self.frames = 0
        self.rx: list[tuple[float, np.ndarray]] = []  # what the echo peer heard, for the uplink split
        self.queued: list[float] = []  # its AudioSource queue after each captured frame
        self.sheds = 0
        self._shed_at = 0
        self._task: asyncio.Task | None = None
        self._stream = None

        @self.room.on("track_subscribed")
        def _on_track(track, publication, participant) -> None:
            if participant.identity == self.device_identity and track.kind == rtc.TrackKind.KIND_AUDIO:
                if self._task is None:
                    self._task = asyncio.ensure_future(self._pump(track))

    async def start(self, url: str, room_name: str, timeout: float) -> None:
        rtc = self.rtc
        await asyncio.wait_for(self.room.connect(url, common.token(ECHO_IDENTITY, room_name)), timeout)
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=self.queue_ms)
        track = rtc.LocalAudioTrack.create_audio_track("echo", self.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        if self.dtx is not None:  # unset: the SDK's default (DTX on, as an agent publishes)
            opts.dtx = self.dtx
        await asyncio.wait_for(self.room.local_participant.publish_track(track, opts), timeout)

    async def _pump(self, track) -> None:
        # bounded, oldest dropped: after a hiccup of this process the echo catches up instead
        # of keeping what queued meanwhile as delay for the rest of the call
        self._stream = self.rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=10,
                                            capacity=self.capacity)
        async for ev in self._stream:
            now = time.monotonic()
            self.frames += 1
            await self.source.capture_frame(ev.frame)
            f = ev.frame
            self.rx.append((now, np.frombuffer(f.data, dtype=np.int16).reshape(-1, f.num_channels)[:, 0].copy()))
            self.queued.append(self.source.queued_duration)
            if self.shed:
                self._shed_standing()

    def _shed_standing(self) -> None:
        """Clear the echo's AudioSource queue when it stayed above ECHO_STANDING_S for a while.

        It fills up after any hiccup of this process (frames captured in a burst)
        and, filled and drained at the same rate, would stay full: delay the echo
        adds to every later chirp, for either client.
        """
        window = self.queued[-ECHO_STANDING_FRAMES:]
        if len(window) == ECHO_STANDING_FRAMES and min(window) > ECHO_STANDING_S and self.frames > self._shed_at:
            self.source.clear_queue()
            self.sheds += 1
            self._shed_at = self.frames + ECHO_STANDING_FRAMES

    def queue_at(self, t: float) -> float | None:
        """The echo's own AudioSource queue right after the frame that arrived at `t`."""
        i = int(np.searchsorted([a for a, _ in self.rx], t))
        return round(self.queued[i] * 1000, 1) if i < len(self.queued) else None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stream.aclose(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 10)
        if self.source is not None:
            with contextlib.suppress(Exception):
                await self.source.aclose()


# -- the device under test ----------------------------------------------------------------


class Device:
    """Common receive bookkeeping: (arrival monotonic time, int16 samples) per frame."""

    identity = "device"

    def __init__(self) -> None:
        self.rx: list[tuple[float, np.ndarray]] = []
        self._rx_task: asyncio.Task | None = None

    def queued_seconds(self) -> float:
        return 0.0


class OursDevice(Device):
    identity = "device-ours"

    def __init__(self) -> None:
        super().__init__()
        self.room = None
        self.mic = None

    async def start(self, url: str, room_name: str, timeout: float) -> None:
        import lkdevice

        self.room = await asyncio.wait_for(lkdevice.connect(url, common.token(self.identity, room_name)), timeout)
        track = await self.room.wait_for_audio_track(ECHO_IDENTITY, timeout=timeout)
        self._rx_task = asyncio.ensure_future(self._receive(track))
        self.mic = await asyncio.wait_for(self.room.publish_audio(None), timeout)

    async def _receive(self, track) -> None:
        async for chunk in self.room.audio_stream(track, sample_rate=RATE, frame_ms=10):
            self.rx.append((time.monotonic(), chunk.samples))

    async def write(self, samples: np.ndarray) -> None:
        await self.mic.track.write(samples, RATE)

    def queued_seconds(self) -> float:
        return self.mic.track.buffered

    def stats(self) -> dict:
        t = self.mic.track
        return {"frames_sent": t.frames_sent, "samples_dropped": t.samples_dropped}

    async def stop(self) -> None:
        if self._rx_task is not None:
            self._rx_task.cancel()
            with contextlib.suppress(BaseException):
                await self._rx_task
        if self.room is not None:
            await asyncio.wait_for(self.room.disconnect(), 10)


class OfficialDevice(Device):
    identity = "device-official"

    def __init__(self, queue_ms: int) -> None:
        from livekit import rtc

        super().__init__()
        self.rtc = rtc
        self.queue_ms = queue_ms
        self.room = rtc.Room()
        self.source = None
        self._stream = None
        self._echo_track = asyncio.get_running_loop().create_future()

        @self.room.on("track_subscribed")
        def _on_track(track, publication, participant) -> None:
            if participant.identity == ECHO_IDENTITY and track.kind == rtc.TrackKind.KIND_AUDIO:
                if not self._echo_track.done():
                    self._echo_track.set_result(track)

    async def start(self, url: str, room_name: str, timeout: float) -> None:
        rtc = self.rtc
        await asyncio.wait_for(self.room.connect(url, common.token(self.identity, room_name)), timeout)
        track = await asyncio.wait_for(self._echo_track, timeout)
        self._rx_task = asyncio.ensure_future(self._receive(track))
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=self.queue_ms)
        mic = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await asyncio.wait_for(self.room.local_participant.publish_track(mic, opts), timeout)

    async def _receive(self, track) -> None:
        self._stream = self.rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=10)
        async for ev in self._stream:
            now = time.monotonic()
            f = ev.frame
            pcm = np.frombuffer(f.data, dtype=np.int16)
            if f.num_channels > 1:
                pcm = pcm.reshape(-1, f.num_channels)[:, 0]
            self.rx.append((now, pcm.copy()))

    async def write(self, samples: np.ndarray) -> None:
        frame = self.rtc.AudioFrame(samples.tobytes(), RATE, 1, len(samples))
        await self.source.capture_frame(frame)

    def queued_seconds(self) -> float:
        return self.source.queued_duration

    def stats(self) -> dict:
        return {}

    async def stop(self) -> None:
        if self._rx_task is not None:
            self._rx_task.cancel()
            with contextlib.suppress(BaseException):
                await self._rx_task
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stream.aclose(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 10)
        if self.source is not None:
            with contextlib.suppress(Exception):
                await self.source.aclose()


# -- feeding and detection ------------------------------------------------------------------


async def feed(device: Device, echo: EchoPeer, chirp: np.ndarray, args,
               midway=None) -> tuple[list[float], list[float], list[float]]:
    """Hand 10 ms chunks to the device in real time.

    `midway()` is called once, 0.3 s after the onset of the chirp halfway through
    (when the stall or outage of a profile happens, between two chirps).

    Returns the hand-over times of each chirp's first and last chunk, and the
    sender's queued audio right after each chirp's first chunk.
    """
    period_chunks = int(round(args.period * 100))
    chirp_chunks = len(chirp) // CHUNK
    silence = np.zeros(CHUNK, np.int16)
    send_times: list[float] = []
    end_times: list[float] = []
    queue_levels: list[float] = []
    ready_deadline = time.monotonic() + args.ready_timeout
    first_chirp: int | None = None
    last_chunk: int | None = None
    t0 = time.monotonic()
    k = 0
    midway_chunk: int | None = None
    while last_chunk is None or k <= last_chunk:
        if midway is not None and k == midway_chunk:
            midway()
        await common.sleep_until(t0 + k * CHUNK / RATE)
        if first_chirp is None:
            # Start the chirps once audio flows both ways (plus a short settle).
            flowing = echo.frames >= args.settle_frames and len(device.rx) >= args.settle_frames
            if flowing or time.monotonic() > ready_deadline:
                if not flowing:
                    log.warning("audio not flowing both ways after %.0fs (echo got %d frames, device %d); "
                                "sending chirps anyway", args.ready_timeout, echo.frames, len(device.rx))
                first_chirp = k + 10
                midway_chunk = first_chirp + (args.chirps // 2) * period_chunks + 30
                last_chunk = first_chirp + (args.chirps - 1) * period_chunks + chirp_chunks + int(args.tail * 100)
        samples = silence
        onset = end = False
        if first_chirp is not None and k >= first_chirp:
            j, pos = divmod(k - first_chirp, period_chunks)
            if j < args.chirps and pos < chirp_chunks:
                samples = chirp[pos * CHUNK:(pos + 1) * CHUNK]
                onset = pos == 0
                end = pos == chirp_chunks - 1
        t = time.monotonic()
        await device.write(samples)
        if onset:
            send_times.append(t)
            queue_levels.append(device.queued_seconds())
        if end:
            end_times.append(t)
        k += 1
    return send_times, end_times, queue_levels


def detect(rx: list[tuple[float, np.ndarray]], chirp: np.ndarray, send_times: list[float],
           end_times: list[float], max_delay: float, threshold: float) -> list[dict]:
    """Find each chirp in the received audio.

    For chirp i, `delay_ms` is the arrival time of the received frame holding its
    first sample minus `send_times[i]`; `tail_delay_ms` the same for its last
    sample against `end_times[i]`. None where no window position correlates
    above `threshold`.
    """
    missing = {"delay_ms": None, "tail_delay_ms": None, "score": 0.0}
    if not rx:
        return [dict(missing) for _ in send_times]
    arrivals = np.array([t for t, _ in rx])
    lengths = np.array([len(s) for _, s in rx])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    signal = np.concatenate([s for _, s in rx]).astype(np.float64)
    ref = chirp.astype(np.float64)
    L = len(ref)
    ref_norm = float(np.linalg.norm(ref))

    def frame_of(sample: int) -> int:
        return int(np.searchsorted(starts, sample, side="right") - 1)

    out = []
    for ts, te in zip(send_times, end_times):
        first = int(np.searchsorted(arrivals, ts - 0.005))
        last = int(np.searchsorted(arrivals, ts + max_delay, side="right"))
        if first >= last:
            out.append(dict(missing))
            continue
        lo = int(starts[first])
        hi = min(len(signal), int(starts[last - 1] + lengths[last - 1]) + L)
        seg = signal[lo:hi]
        if len(seg) < L:
            out.append(dict(missing))
            continue
        nfft = 1 << int(np.ceil(np.log2(len(seg) + L)))
        xc = np.fft.irfft(np.fft.rfft(seg, nfft) * np.conj(np.fft.rfft(ref, nfft)), nfft)[: len(seg) - L + 1]
        energy = np.concatenate([[0.0], np.cumsum(seg * seg)])
        win = np.sqrt(np.maximum(energy[L:] - energy[:-L], 0.0))
        score = xc / (ref_norm * win + 1.0)
        i = int(np.argmax(score))
        best = round(float(score[i]), 3)
        onset = lo + i
        f = frame_of(onset)
        if best < threshold or arrivals[f] > ts + max_delay:
            out.append({**missing, "score": best})
            continue
        g = frame_of(min(onset + L - 1, len(signal) - 1))
        out.append({
            "delay_ms": round(float(arrivals[f] - ts) * 1000.0, 2),
            "tail_delay_ms": round(float(arrivals[g] - te) * 1000.0, 2),
            "score": best,
        })
    return out


def receive_gaps(rx: list[tuple[float, np.ndarray]], since: float) -> dict:
    """How continuously frames arrived after `since`: audio seconds vs wall seconds, longest gap."""
    times = np.array([t for t, _ in rx if t >= since])
    if times.size < 2:
        return {"audio_s": 0.0, "wall_s": 0.0, "max_gap_ms": None, "gaps_over_100ms": 0}
    audio = sum(len(s) for t, s in rx if t >= since) / RATE
    gaps = np.diff(times)
    return {
        "audio_s": round(audio, 2),
        "wall_s": round(float(times[-1] - times[0]), 2),
        "max_gap_ms": round(float(gaps.max()) * 1000, 1),
        "gaps_over_100ms": int((gaps > 0.1).sum()),
    }


def drift_ms(delays: list[float | None]) -> float | None:
    """Median delay of the last quarter of the chirps minus that of the first quarter."""
    found = [d for d in delays if d is not None]
    if len(found) < 2:
        return None
    q = max(1, len(found) // 4)
    return round(float(np.median(found[-q:]) - np.median(found[:q])), 2)


async def measure(kind: str, url: str, chirp: np.ndarray, args, net: Impairment | None = None,
                  loss: float = 0, outage: float = 0) -> dict:
    room_name = common.fresh_room(f"rtt-{kind}")
    device: Device = OursDevice() if kind == "ours" else OfficialDevice(args.device_queue_ms)
    # gateway_latency.py calls this with its own options: its echo peers stay as they were
    echo = EchoPeer(device.identity, args.echo_queue_ms, False if args.echo_no_dtx else None,
                    getattr(args, "echo_capacity", 0), shed=hasattr(args, "echo_capacity"))
    stall_ms = getattr(args, "stall_ms", 0)
    try:
        t0 = time.monotonic()
        await echo.start(url, room_name, args.timeout)
        await device.start(url, room_name, args.timeout)
        setup = time.monotonic() - t0
        dropped0 = 0
        if net is not None:
            dropped0 = net.dropped()
            net.loss(loss, args.loss_direction)
        t_feed = time.monotonic()

        def midway() -> None:
            if outage:
                net.outage(outage)
            if stall_ms:  # the whole event loop blocks, as under a CPU hog or a long GC pause
                time.sleep(stall_ms / 1000)

        try:
            send_times, end_times, queue_levels = await feed(device, echo, chirp, args, midway)
        finally:
            if net is not None:
                net.loss(0, args.loss_direction)
        await asyncio.sleep(0.05)
        results = detect(device.rx, chirp, send_times, end_times, args.max_delay, args.threshold)
        # The same chirps as the echo peer heard them: the uplink half of the trip.
        uplink = detect(echo.rx, chirp, send_times, end_times, args.max_delay, args.threshold)
        delays = [r["delay_ms"] for r in results]
        up = [r["delay_ms"] for r in uplink]
        found = [d / 1000.0 for d in delays if d is not None]
        run = {
            "client": kind,
            "room": room_name,
            "setup_ms": round(setup * 1000, 1),
            "delays_ms": delays,
            "drift_ms": drift_ms(delays),
            "tail_delays_ms": [r["tail_delay_ms"] for r in results],
            "uplink_ms": up,
            "rest_ms": [round(d - u, 2) if d is not None and u is not None else None for d, u in zip(delays, up)],
            "scores": [r["score"] for r in results],
            "detected": len(found),
            "sent": len(send_times),
            "sender_queue_ms_at_onset": [round(q * 1000, 1) for q in queue_levels],
            "frames_received": len(device.rx),
            "receive_continuity": receive_gaps(device.rx, t_feed),
            "echo_frames": echo.frames,
            "echo_queue_clears": echo.sheds,
            "echo_queue_ms_at_chirp": [echo.queue_at(ts + u / 1000) if u is not None else None
                                       for ts, u in zip(send_times, up)],
            "packets_dropped": (net.dropped() - dropped0) if net is not None else 0,
            **common.summary_ms(found),
        }
        if isinstance(device, OursDevice):
            run["mic"] = device.stats()
        log.info("%-8s delays %s ms (scores %s)", kind, delays, run["scores"])
        return run
    finally:
        await device.stop()
        await echo.stop()


def summarize(runs: list[dict]) -> dict:
    """Per client over `runs`: delays, median/p90, drift, the uplink/rest split, missed chirps."""
    out: dict = {}
    for kind in ("ours", "official"):
        mine = [x for x in runs if x["client"] == kind]
        delays = [d for x in mine for d in x["delays_ms"] if d is not None]
        entry = common.summary_ms([d / 1000.0 for d in delays])
        drifts = [x["drift_ms"] for x in mine if x["drift_ms"] is not None]
        entry["drift_ms"] = round(float(np.median(drifts)), 2) if drifts else None
        entry["drift_ms_runs"] = drifts
        entry["delays_ms"] = delays
        tails = [d for x in mine for d in x["tail_delays_ms"] if d is not None]
        entry["tail"] = common.summary_ms([d / 1000.0 for d in tails])
        for part in ("uplink_ms", "rest_ms"):
            vals = [d for x in mine for d in x[part] if d is not None]
            entry[part.replace("_ms", "")] = common.summary_ms([d / 1000.0 for d in vals])
        entry["missed"] = sum(x["sent"] - x["detected"] for x in mine)
        queue = [q for x in mine for q in x["sender_queue_ms_at_onset"]]
        entry["sender_queue_ms_at_onset_median"] = round(float(np.median(queue)), 1) if queue else None
        entry["packets_dropped"] = sum(x["packets_dropped"] for x in mine)
        out[kind] = entry
    out["ratio_ours_over_official_median"] = common.ratio(out["ours"]["median_ms"], out["official"]["median_ms"])
    out["ratio_ours_over_official_p90"] = common.ratio(out["ours"]["p90_ms"], out["official"]["p90_ms"])
    return out


async def run(args, server) -> dict:
    chirp = make_chirp(args.f0, args.f1, args.chirp_ms / 1000.0, args.amplitude)
    runs: list[dict] = []
    errors: list[dict] = []
    profiles: dict = {}
    for name in args.profiles:
        loss, delay, jitter = PROFILES.get(name, (0, 0, 0))
        outage = OUTAGES.get(name, 0)
        relay_stats = None
        # a relayed profile gets a server of its own that advertises only the relay's address
        srv = common.start_server(RELAY_ADDRESS, loopback=False) if (delay or jitter) else server
        net = None
        try:
            if loss or delay or jitter or outage:
                net = Impairment(srv.config.rtc_udp_port, max_seconds=args.deadline)
            if delay or jitter:
                net.relay(delay, jitter)  # before the clients connect: NAT takes new flows only
            mine: list[dict] = []
            for r in range(args.rounds):
                order = ["ours", "official"] if r % 2 == 0 else ["official", "ours"]
                for kind in order:
                    try:
                        m = await measure(kind, srv.url, chirp, args, net, loss, outage)
                        m["profile"] = name
                        mine.append(m)
                    except Exception as exc:
                        log.exception("%s round %d %s failed", name, r, kind)
                        errors.append({"profile": name, "client": kind, "round": r, "error": repr(exc)})
        finally:
            if net is not None:
                relay_stats = net.relay_stats()
                net.close()
            if srv is not server:
                common.stop_server(srv, keep_workdir=bool(errors))
        entry = {"loss_percent": loss, "outage_s": outage, "stall_ms": args.stall_ms, "loss_direction": args.loss_direction if loss else None,
                 "relay_delay_ms": delay, "relay_jitter_ms": jitter, "relay": relay_stats, **summarize(mine)}
        profiles[name] = entry
        runs += mine
        log.info("%-15s ours median %s p90 %s drift %s | official median %s p90 %s drift %s", name,
                 entry["ours"]["median_ms"], entry["ours"]["p90_ms"], entry["ours"]["drift_ms"],
                 entry["official"]["median_ms"], entry["official"]["p90_ms"], entry["official"]["drift_ms"])
    first = profiles[args.profiles[0]]
    out: dict = {
        "benchmark": "audio_rtt",
        "path": "device -> server -> echo peer (official SDK) -> server -> device",
        "chirp": {"f0_hz": args.f0, "f1_hz": args.f1, "ms": args.chirp_ms, "period_s": args.period,
                  "count_per_run": args.chirps},
        "rounds": args.rounds,
        "echo_queue_ms": args.echo_queue_ms,
        "echo_stream_capacity_frames": args.echo_capacity,
        "echo_dtx": "off" if args.echo_no_dtx else "sdk default (on)",
        "official_device_queue_ms": args.device_queue_ms,
        # the first profile's figures at the top, as before profiles existed
        "profile": args.profiles[0],
        "ours": first["ours"],
        "official": first["official"],
        "ratio_ours_over_official_median": first["ratio_ours_over_official_median"],
        "ratio_ours_over_official_p90": first["ratio_ours_over_official_p90"],
        "profiles": {n: {k: v for k, v in p.items()} for n, p in profiles.items()},
        "table": {n: {kind: {k: p[kind][k] for k in ("median_ms", "p90_ms", "drift_ms", "missed")}
                      for kind in ("ours", "official")} for n, p in profiles.items()},
    }
    out["runs"] = runs
    out["errors"] = errors
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chirps", type=int, default=8, help="chirps per measurement (default 8)")
    p.add_argument("--rounds", type=int, default=2, help="rounds; each measures ours and official (default 2)")
    p.add_argument("--period", type=float, default=1.0, help="seconds between chirp onsets")
    p.add_argument("--chirp-ms", type=float, default=100.0)
    p.add_argument("--f0", type=float, default=1000.0)
    p.add_argument("--f1", type=float, default=4000.0)
    p.add_argument("--amplitude", type=float, default=0.5, help="chirp peak, fraction of full scale")
    p.add_argument("--echo-queue-ms", type=int, default=50, help="echo peer AudioSource queue_size_ms")
    p.add_argument("--echo-capacity", type=int, default=5,
                   help="echo peer AudioStream queue, 10 ms frames, oldest dropped when full (0: unbounded)")
    p.add_argument("--echo-no-dtx", action="store_true",
                   help="echo peer publishes with DTX off (default: the SDK's default, DTX on)")
    p.add_argument("--device-queue-ms", type=int, default=50,
                   help="official device AudioSource queue_size_ms (ours buffers up to 200 ms)")
    p.add_argument("--max-delay", type=float, default=0.8, help="search window after each send, seconds")
    p.add_argument("--threshold", type=float, default=0.5, help="normalised correlation needed to count a chirp")
    p.add_argument("--settle-frames", type=int, default=50,
                   help="received 10 ms frames (both at echo and device) before the first chirp")
    p.add_argument("--ready-timeout", type=float, default=10.0)
    p.add_argument("--tail", type=float, default=1.0, help="silence after the last chirp, seconds")
    p.add_argument("--timeout", type=float, default=15.0, help="per-step timeout in seconds")
    p.add_argument("--profiles", default=",".join([*PROFILES, *OUTAGES]),
                   help=f"comma-separated network profiles, of {', '.join([*PROFILES, *OUTAGES])} (default: all)")
    p.add_argument("--stall-ms", type=float, default=0,
                   help="block the event loop this long once, halfway through each call (default 0: never)")
    p.add_argument("--loss-direction", choices=["down", "up", "both"], default="down",
                   help="which media the loss drops: server to subscribers (down, default), to the server (up)")
    p.add_argument("--deadline", type=float, default=540.0, help="hard limit for the whole run in seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    args.profiles = [x for x in args.profiles.split(",") if x]
    if not args.profiles or any(x not in PROFILES and x not in OUTAGES for x in args.profiles):
        p.error(f"--profiles: choose from {', '.join([*PROFILES, *OUTAGES])}")
    if args.max_delay + args.chirp_ms / 1000.0 >= args.period:
        p.error("--max-delay plus the chirp length must be shorter than --period")
    common.require_isolation()
    common.setup_logging(args.verbose)

    return common.run_live("audio_rtt", run, args, with_server=True)


if __name__ == "__main__":
    sys.exit(main())
