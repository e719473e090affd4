"""Latency and loss over a call: chirp markers at known times both ways, found again where they arrive.

Each direction carries a quiet bed tone (the speaker is never silent) and a
60 ms chirp about once a second, at a pseudo-random offset in its second so
that the pattern has one alignment only. Uplink: the chirps are in what the
device's microphone hears (its sample 0 at `Target.mic_origin()`), and a
far-side peer records the device's track with each frame's arrival time.
Downlink: the peer publishes chirps, noting when each leaves its source, and
the device's speaker recording (sample 0 at `Recording.origin`) shows them.
A marker's latency is where its matched-filter peak is minus when it was sent;
round trip is uplink plus downlink of the same second. Loss is counted in
packets and concealed frames (the receiver's stats), not in markers: a marker
that is missing says the audio was not there, which is a different thing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

# low and long enough that Opus at a voice bitrate and the receiver's time-stretching keep its shape
# (a 1.2-3.6 kHz, 40 ms sweep came through the uplink at a correlation of 0.47-0.89; this one at 0.93+)
CHIRP_S = 0.06
CHIRP_HZ = (400.0, 2000.0)
PERIOD_S = 1.0
MAX_OFFSET_S = 0.4       # a marker's place in its second: 0..0.4 s, fixed by the seed
LAG_RANGE_S = (-0.1, 2.5)  # the latencies the search considers
REFINE_S = 0.15          # a marker is looked for this far either side of the typical latency around it
NEIGHBOURS = 5           # markers either side that set that typical latency
TOLERANCE_BINS = 3       # ... each within 30 ms of it (10 ms bins): the latency may drift between markers
FOUND = 0.45             # normalized correlation a marker's peak must reach
BED_AMPLITUDE = 0.1
CHIRP_AMPLITUDE = 0.5
MAX_RECORD_S = 900.0     # the far side's recording keeps at most this much (oldest dropped)


def chirp(rate: int) -> np.ndarray:
    """The marker: a linear sweep, faded in and out (float, peak 1)."""
    n = int(CHIRP_S * rate)
    t = np.arange(n) / rate
    f0, f1 = CHIRP_HZ
    x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * CHIRP_S) * t ** 2))
    fade = min(n // 2, int(0.005 * rate))
    ramp = np.linspace(0.0, 1.0, fade)
    x[:fade] *= ramp
    x[n - fade:] *= ramp[::-1]
    return x


def marker_offsets(seconds: float, *, start_s: float = 1.0, seed: int = 11) -> list[float]:
    """Where the markers are in a signal of `seconds` (seconds from its sample 0)."""
    rng = np.random.default_rng(seed)
    out, k = [], 0
    while True:
        at = start_s + k * PERIOD_S + float(rng.uniform(0, MAX_OFFSET_S))
        if at + CHIRP_S > seconds:
            return out
        out.append(at)
        k += 1


def signal(seconds: float, rate: int, bed_hz: float, offsets: list[float]) -> np.ndarray:
    """The bed tone with a chirp at each offset (int16)."""
    t = np.arange(int(seconds * rate)) / rate
    x = BED_AMPLITUDE * np.sin(2 * np.pi * bed_hz * t)
    c = CHIRP_AMPLITUDE * chirp(rate)
    for at in offsets:
        i = int(round(at * rate))
        x[i:i + len(c)] += c[:max(0, len(x) - i)]
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def _ncc(pcm: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalized cross-correlation of `template` at each start in `pcm` (0..1 for a match)."""
    x = pcm.astype(np.float64)
    n, m = len(x), len(template)
    if n < m:
        return np.zeros(0)
    size = 1 << int(np.ceil(np.log2(n + m)))
    num = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(template, size)), size)[:n - m + 1]
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    local = np.sqrt(np.maximum(energy[m:] - energy[:-m], 1e-9))
    return np.abs(num) / (local * np.linalg.norm(template))


class Timeline:
    """Harness time of each sample of a recording: knots (sample index, time), straight lines between."""

    def __init__(self, index: np.ndarray, at: np.ndarray):
        self.index = np.asarray(index, dtype=np.float64)
        self.at = np.maximum.accumulate(np.asarray(at, dtype=np.float64))  # time never runs back

    @classmethod
    def linear(cls, origin: float, n: int, rate: int) -> "Timeline":
        return cls(np.array([0, max(n, 1)]), np.array([origin, origin + max(n, 1) / rate]))

    def time_at(self, i):
        return np.interp(i, self.index, self.at)

    def index_at(self, t) -> int:
        return int(np.interp(t, self.at, self.index))

    @property
    def end(self) -> float:
        return float(self.at[-1])


def find_markers(pcm: np.ndarray, rate: int, clock: Timeline, sent: list[float]) -> list[tuple[float, float | None]]:
    """(sent, latency in s or None where it is missing) for each marker whose arrival the recording covers.

    `clock` gives each sample's harness time, `sent` the harness times the
    markers left. The typical latency around a marker is the one shift that
    lines up the most of its neighbours; the marker is looked for within
    REFINE_S of it."""
    tpl = chirp(rate)
    lags = np.arange(int(LAG_RANGE_S[0] * 1000), int(LAG_RANGE_S[1] * 1000))
    judged = [s for s in sent if clock.at[0] <= s + LAG_RANGE_S[0] and s + LAG_RANGE_S[1] + CHIRP_S <= clock.end]
    if not judged or len(pcm) < len(tpl):
        return [(s, None) for s in judged]
    hit = np.zeros((len(judged), len(lags)))
    for k, s in enumerate(judged):
        a = max(0, clock.index_at(s + LAG_RANGE_S[0]))
        b = min(len(pcm), clock.index_at(s + LAG_RANGE_S[1]) + len(tpl))
        score = _ncc(pcm[a:b], tpl)
        if not len(score):
            continue
        ms = np.round((clock.time_at(np.arange(len(score)) + a) - s) * 1000).astype(np.int64) - lags[0]
        ok = (ms >= 0) & (ms < len(lags))
        np.maximum.at(hit[k], ms[ok], score[ok])
    # each marker's typical latency: the shift that lines up the most of its NEIGHBOURS markers either side
    # (a busy device's latency drifts over a call; the pattern of offsets keeps a neighbourhood unambiguous)
    # on 10 ms bins, each widened by TOLERANCE_BINS either side: neighbours count when within ~30 ms
    bins = hit[:, :len(lags) // 10 * 10].reshape(len(judged), -1, 10).max(axis=2)
    padded = np.pad(bins, ((0, 0), (TOLERANCE_BINS, TOLERANCE_BINS)))
    wide = np.lib.stride_tricks.sliding_window_view(padded, 2 * TOLERANCE_BINS + 1, axis=1).max(axis=2)
    score = np.cumsum(np.vstack([np.zeros(wide.shape[1]), (wide >= FOUND) + wide / 2]), axis=0)
    half = int(REFINE_S * 1000)
    out: list[tuple[float, float | None]] = []
    for k, s in enumerate(judged):
        a, b = max(0, k - NEIGHBOURS), min(len(judged), k + NEIGHBOURS + 1)
        typical = int(np.argmax(score[b] - score[a])) * 10 + 5
        lo, hi = max(0, typical - half), min(len(lags), typical + half + 1)
        j = lo + int(np.argmax(hit[k, lo:hi]))
        out.append((s, float(lags[j]) / 1000 if hit[k, j] >= FOUND else None))
    return out


# --- the far side: what it hears from the device, what it sends it


class TrackRecorder:
    """The device's audio as the peer receives it (16 kHz mono), each 10 ms frame with its arrival time."""

    def __init__(self, rate: int = 16000):
        self.rate = rate
        keep = int(MAX_RECORD_S * 100)
        self._frames: deque[np.ndarray] = deque(maxlen=keep)
        self._arrived: deque[float] = deque(maxlen=keep)
        self._task: asyncio.Task | None = None
        self.track = None

    async def start(self, far, identity: str, timeout: float = 20.0) -> "TrackRecorder":
        from livekit import rtc
        self.track = await far.until(lambda: _audio_track(far.room, identity), timeout,
                                     f"{identity}'s audio track at the peer")
        stream = rtc.AudioStream(self.track, sample_rate=self.rate, num_channels=1, frame_size_ms=10)

        async def pump():
            async for ev in stream:
                self._frames.append(np.frombuffer(ev.frame.data, dtype=np.int16).copy())
                self._arrived.append(time.monotonic())
        self._task = asyncio.ensure_future(pump())
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def seconds(self) -> float:
        """Audio received lately (up to the last 2 s' worth): is it flowing?"""
        return sum(len(f) for f in list(self._frames)[-200:]) / self.rate

    def pcm_and_clock(self) -> tuple[np.ndarray, Timeline]:
        """The frames end to end, and the harness time of their samples.

        A frame arrives when the receiver has made it, or later when the loop was
        busy: within a few seconds around it, the earliest (arrival - samples so
        far) is the truest start of the timeline."""
        frames = list(self._frames)
        if not frames:
            return np.zeros(0, np.int16), Timeline.linear(time.monotonic(), 0, self.rate)
        sizes = np.array([len(f) for f in frames])
        pcm = np.concatenate(frames)
        ends = np.cumsum(sizes)
        start = np.array(self._arrived) - ends / self.rate  # each frame's estimate of sample 0's time
        w = 300  # 3 s of 10 ms frames either side
        pad = np.concatenate([np.full(w, np.inf), start, np.full(w, np.inf)])
        best = np.lib.stride_tricks.sliding_window_view(pad, 2 * w + 1).min(axis=1)
        firsts = ends - sizes
        return pcm, Timeline(np.append(firsts, ends[-1]), np.append(best + firsts / self.rate,
                                                                    best[-1] + ends[-1] / self.rate))


def _audio_track(room, identity: str):
    p = next((p for p in room.remote_participants.values() if p.identity == identity), None)
    if p is None:
        return None
    from livekit import rtc
    return next((pub.track for pub in p.track_publications.values()
                 if pub.track is not None and pub.kind == rtc.TrackKind.KIND_AUDIO), None)


class MarkerPublisher:
    """A track of the bed tone with chirps at `marker_offsets`, noting the harness time each chirp leaves."""

    RATE = 48000
    FRAME = 960  # 20 ms

    def __init__(self, seconds: float, bed_hz: float = 1000.0):
        self.offsets = marker_offsets(seconds)
        self.bed_hz = bed_hz
        self._chirp = chirp(self.RATE)
        self.sent: deque[float] = deque(maxlen=len(self.offsets) or 1)
        self._task: asyncio.Task | None = None

    def chunk(self, pos: int, n: int) -> np.ndarray:
        """Samples pos..pos+n of the track, made as they are needed (a 10 min call would be 60 MB ahead)."""
        x = BED_AMPLITUDE * np.sin(2 * np.pi * self.bed_hz * (pos + np.arange(n)) / self.RATE)
        c = CHIRP_AMPLITUDE * self._chirp
        for at in self.offsets:
            i = int(round(at * self.RATE)) - pos
            if i < n and i + len(c) > 0:
                lo, hi = max(0, i), min(n, i + len(c))
                x[lo:hi] += c[lo - i:hi - i]
        return (np.clip(x, -1, 1) * 32767).astype(np.int16)

    async def start(self, room) -> "MarkerPublisher":
        from livekit import rtc
        # a short queue: capture_frame returns close to when the frame goes out
        source = rtc.AudioSource(self.RATE, 1, queue_size_ms=100)
        track = rtc.LocalAudioTrack.create_audio_track("hil-markers", source)
        await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        starts = [int(round(o * self.RATE)) for o in self.offsets]

        async def play():
            k, pos, n = 0, 0, self.FRAME
            while True:
                frame = rtc.AudioFrame.create(self.RATE, 1, n)
                np.copyto(np.frombuffer(frame.data, dtype=np.int16), self.chunk(pos, n))
                await source.capture_frame(frame)
                # this frame starts playing once what is queued before it has gone
                begins = time.monotonic() + source.queued_duration - n / self.RATE
                while k < len(starts) and starts[k] < pos + n:
                    self.sent.append(begins + (starts[k] - pos) / self.RATE)
                    k += 1
                pos += n
        self._task = asyncio.ensure_future(play())
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


@dataclass
class LossSample:
    t: float
    received: int  # packets (or frames) that arrived, so far
    lost: int      # packets (or frames) that did not, so far


async def inbound_sample(track) -> LossSample | None:
    """The peer's receive counters for `track` (RTP packets), or None when it has none yet."""
    try:
        stats = await asyncio.wait_for(track.get_stats(), 5)
    except Exception:  # stats are a figure, not the call: a missed sample is a gap in the plot
        return None
    for s in stats:
        if s.WhichOneof("stats") == "inbound_rtp":
            r = s.inbound_rtp.received
            return LossSample(time.monotonic(), int(r.packets_received), int(r.packets_lost))
    return None


class LossSampler:
    """The peer's inbound counters for the device's track every `every` seconds (bounded)."""

    def __init__(self, track, every: float = 2.0, keep: int = 2000):
        self.track = track
        self.every = every
        self.samples: deque[LossSample] = deque(maxlen=keep)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            s = await inbound_sample(self.track)
            if s is not None:
                self.samples.append(s)
            await asyncio.sleep(self.every)

    async def close(self) -> None:
        self._task.cancel()


def loss_series(samples: list[LossSample], t0: float, window_s: float = 10.0
                ) -> tuple[list[tuple[float, float]], float | None]:
    """Loss % over the `window_s` before each sample (a point per sample), and over all of them (None:
    nothing counted). RTP's lost count falls again when a reordered packet turns up late: over a window
    that mostly cancels out, and what is left below 0 is shown as 0."""
    pts = []
    j = 0
    for b in samples[1:]:
        while j + 1 < len(samples) and samples[j + 1].t <= b.t - window_s:
            j += 1
        a = samples[j]
        got, lost = b.received - a.received, b.lost - a.lost
        if b is not a and got + lost > 0:
            pts.append((b.t - t0, max(0.0, 100.0 * lost / (got + lost))))
    if len(samples) < 2:
        return pts, None
    got = samples[-1].received - samples[0].received
    lost = samples[-1].lost - samples[0].lost
    return pts, (max(0.0, 100.0 * lost / (got + lost)) if got + lost > 0 else None)


# --- the speaker over the call


def speaker_stopped(rec, t0: float, t1: float, *, threshold: float = 300.0, quiet_s: float = 3.0) -> str | None:
    """Why the speaker did not play through [t0, t1] (harness times), or None when it did.

    It stopped if, from some second on, it was silent to the end (at least
    `quiet_s` of it), or its recording ends before t1."""
    from .audio import rms_per_frame
    rate = rec.rate
    seg = rec.pcm[max(0, int((t0 - rec.origin) * rate)):max(0, int((t1 - rec.origin) * rate))]
    covered = len(seg) / rate
    loud = rms_per_frame(seg, rate) > threshold  # 20 ms frames
    per_s = [float(loud[i:i + 50].mean()) for i in range(0, len(loud) - 49, 50)]
    last = max((i for i, v in enumerate(per_s) if v >= 0.5), default=None)
    spk = t0 - rec.origin  # the call's start on the speaker's own timeline
    if last is None:
        return f"the speaker played nothing in the call's {t1 - t0:.0f} s"
    stopped = last + 1.0
    if covered < (t1 - t0) - 2.0 and covered - stopped < quiet_s:
        return (f"the speaker stopped at {spk + stopped:.0f} s ({stopped:.0f} s into the call): its recording "
                f"ends {t1 - t0 - covered:.0f} s before the call did")
    if covered - stopped >= quiet_s:
        return (f"the speaker stopped at {spk + stopped:.0f} s ({stopped:.0f} s into the call): silent from "
                f"there to the call's end at {t1 - t0:.0f} s")
    return None


# --- a call measured: markers both ways, the peer's receive counters, the device's playout


def uplink_signal(seconds: float) -> tuple[np.ndarray, list[float]]:
    """What the device's microphone hears (16 kHz): a 440 Hz bed and the markers; and their offsets."""
    offsets = marker_offsets(seconds)
    return signal(seconds, 16000, 440.0, offsets), offsets


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    from .growth import percentile
    return percentile(values, 0.5), percentile(values, 0.95)


class CallMeter:
    """Started once the device is in the room; `verdict` turns what it saw into figures, series and checks."""

    def __init__(self, ctx, far, up_offsets: list[float], seconds: float):
        self.ctx, self.far = ctx, far
        self.up_offsets = up_offsets
        self.down = MarkerPublisher(seconds)
        self.rec = TrackRecorder()
        self.loss: LossSampler | None = None

    async def start(self) -> "CallMeter":
        ctx, dev = self.ctx, self.ctx.target
        async with ctx.step("markers both ways"):
            ctx.waiting("the peer's marker track published")
            await self.down.start(self.far.room)
            ctx.waiting(f"{dev.identity_name}'s audio at the peer")
            await self.rec.start(self.far, dev.identity_name)
            self.loss = LossSampler(self.rec.track)
            # the call's clock starts once audio flows: a marker sent while the subscription was still
            # being set up would count as missing
            ctx.waiting(f"1 s of {dev.identity_name}'s audio at the peer")
            await self.far.until(lambda: self.rec.seconds() >= 1.0, 20, f"{dev.identity_name}'s audio flowing")
        return self

    async def close(self) -> None:
        await self.down.close()
        await self.rec.close()
        if self.loss is not None:
            await self.loss.close()

    async def verdict(self, t0: float, t1: float) -> None:
        ctx, dev, prof = self.ctx, self.ctx.target, self.ctx.profile
        async with ctx.step("latency and loss") as step:
            last = await inbound_sample(self.rec.track)
            if last is not None:
                self.loss.samples.append(last)
            origin = dev.mic_origin()
            ctx.check(origin is not None, "the device never said when its microphone started")
            pcm, clock = self.rec.pcm_and_clock()
            up = find_markers(pcm, self.rec.rate, clock, [origin + o for o in self.up_offsets
                                                           if t0 <= origin + o <= t1])
            rec = dev.recording()
            spk = Timeline.linear(rec.origin, len(rec.pcm), rec.rate)
            down = find_markers(rec.pcm, rec.rate, spk, [s for s in self.down.sent if t0 <= s <= t1])
            figures, found = {}, []
            lines_lat: dict[str, list[tuple[float, float]]] = {}
            for name, got in (("uplink", up), ("downlink", down)):
                lat = [l * 1000 for _, l in got if l is not None]
                med, p95 = _stats(lat)
                figures[f"{name}_latency_median_ms"] = (med, "ms")
                figures[f"{name}_latency_p95_ms"] = (p95, "ms")
                missing = sum(1 for _, l in got if l is None)
                figures[f"{name}_markers_missing_pct"] = (100.0 * missing / len(got) if got else None, "%")
                found.append((name, len(got) - missing, len(got)))
                lines_lat[name] = [(s - t0, l * 1000) for s, l in got if l is not None]
            # round trip: the uplink and downlink markers of the same second of the call
            by_s = {int(s - t0): l for s, l in down if l is not None}
            rtt = [(s - t0, (l + by_s[int(s - t0)]) * 1000) for s, l in up
                   if l is not None and int(s - t0) in by_s]
            med, p95 = _stats([v for _, v in rtt])
            figures["rtt_median_ms"], figures["rtt_p95_ms"] = (med, "ms"), (p95, "ms")
            lines_lat["round trip"] = rtt
            ctx.multi_series("latency over the call", "seconds into the call", "latency (ms)", lines_lat)
            up_loss, down_loss = receive_figures(ctx, self.loss, t0, t1, figures)
            for name, (v, unit) in figures.items():
                if v is not None:  # not measured (too short a call): left out, not "None"
                    ctx.figure(name, v, unit, step)
            problems = []
            for name, n, total in found:
                if total and n < prof.markers_found_min_pct / 100 * total:
                    problems.append(f"the {name} carried {n} of {total} markers")
            problems += loss_problems(prof, up_loss, down_loss)
            rp95 = figures["rtt_p95_ms"][0]
            if rp95 is not None and rp95 > prof.rtt_p95_max_ms:
                problems.append(f"round trip p95 {rp95:.0f} ms (limit {prof.rtt_p95_max_ms:.0f} ms)")
            ctx.check(up_loss is not None, "the peer gave no receive counters for the device's track")
            step.message = (f"round trip median {_fmt(med)} / p95 {_fmt(p95)} ms; loss up {_fmt(up_loss, 1)} %, "
                            f"down {_fmt(down_loss, 1)} %")
            ctx.check(not problems, "; ".join(problems))


def receive_figures(ctx, loss: "LossSampler | None", t0: float, t1: float,
                    figures: dict[str, tuple]) -> tuple[float | None, float | None]:
    """Loss both ways and the jitter-buffer delay over [t0, t1]: series into ctx, figures into `figures`.

    Uplink: RTP packets of the device's track the peer did not get. Downlink:
    packets the device's first receive stage found missing (or late) at their turn."""
    dev = ctx.target
    samples = [s for s in (loss.samples if loss else []) if t0 - 3 <= s.t <= t1 + 3]
    up_pts, up_loss = loss_series(samples, t0)
    pl = [p for p in dev.playout() if t0 - 6 <= p.t <= t1 + 6]
    stages = list(dict.fromkeys(p.stage for p in pl))
    net = [LossSample(p.t, p.received, p.lost) for p in pl if stages and p.stage == stages[0]]
    down_pts, down_loss = loss_series(net, t0)
    figures["uplink_loss_pct"] = (up_loss, "%")
    figures["downlink_loss_pct"] = (down_loss, "%")
    ctx.multi_series("loss over the call", "seconds into the call", "loss over the last 10 s (%)",
                     {"uplink (RTP packets lost at the peer)": up_pts,
                      f"downlink (packets missing at the {stages[0] if stages else 'device'})": down_pts})
    if pl:
        ctx.multi_series("jitter-buffer delay over the call", "seconds into the call", "target delay (ms)",
                         {f"{st} jitter buffer": [(p.t - t0, p.delay_ms) for p in pl if p.stage == st]
                          for st in stages})
        for st in stages:
            d = [p.delay_ms for p in pl if p.stage == st]
            figures[f"{st}_jitter_delay_median_ms"] = (_stats(d)[0], "ms")
            figures[f"{st}_jitter_delay_max_ms"] = (max(d), "ms")
    return up_loss, down_loss


def loss_problems(prof, up_loss: float | None, down_loss: float | None) -> list[str]:
    return [f"{name} loss {v:.1f} % (limit {prof.loss_max_pct:g} %)"
            for name, v in (("uplink", up_loss), ("downlink", down_loss))
            if v is not None and v > prof.loss_max_pct]


class ReceiveWatch:
    """Loss and jitter-buffer delay over a call that carries no markers (talk): the peer's counters for the
    device's track, the device's playout stats. Figures, not checks."""

    def __init__(self, ctx, far):
        self.ctx, self.far = ctx, far
        self.loss: LossSampler | None = None

    async def start(self, timeout: float = 20.0) -> "ReceiveWatch":
        track = await self.far.until(lambda: _audio_track(self.far.room, self.ctx.target.identity_name), timeout,
                                     f"{self.ctx.target.identity_name}'s audio track at the observer")
        self.loss = LossSampler(track)
        self.t0 = time.monotonic()
        return self

    async def close(self) -> None:
        if self.loss is not None:
            await self.loss.close()

    async def verdict(self) -> None:
        ctx = self.ctx
        async with ctx.step("loss") as step:
            last = await inbound_sample(self.loss.track)
            if last is not None:
                self.loss.samples.append(last)
            figures: dict[str, tuple] = {}
            up, down = receive_figures(ctx, self.loss, self.t0, time.monotonic(), figures)
            for name, (v, unit) in figures.items():
                if v is not None:  # not measured (too short a call): left out, not "None"
                    ctx.figure(name, v, unit, step)
            # figures only: a talk turn is seconds long, and its first second is the downlink's start,
            # where the jitter buffer has not yet grown to the network's jitter (the long call checks loss)
            step.message = f"loss up {_fmt(up, 1)} %, down {_fmt(down, 1)} % (not checked: too short a call)"


def _fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
