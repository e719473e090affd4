"""PCM audio in and out of aiortc tracks, at whatever rate the caller uses.

The network side is always Opus (RTP clock 48 kHz) in 20 ms frames. `MicrophoneTrack`
takes mono int16 PCM at any rate and paces it out in real time, filling gaps
with silence so RTP timing never stalls; given a `VoiceEncoder` it encodes
mono at that encoder's rate itself, else aiortc encodes 48 kHz frames.
Receiving is rtc/playout.py's.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .opus import VoiceEncoder

OPUS_RATE = 48000
FRAME_MS = 20
OPUS_FRAME = OPUS_RATE * FRAME_MS // 1000
# What a live microphone may have queued after a stall before the oldest is dropped.
LIVE_BACKLOG_MS = 40
# A source-paced track sends a frame as soon as it is complete, up to this far
# ahead of its clock, and waits this long past the clock for a late one.
SOURCE_AHEAD_S = 0.06
SOURCE_SLACK_S = 0.04
# A live source writes in real time, as fast as frames go out, so audio that stays
# queued at every send for this many frames never drains: it is shed once it is
# at least STANDING_MIN_MS (smaller remainders are a source's odd chunk sizes).
STANDING_FRAMES = 25
STANDING_MIN_MS = 5


@dataclass
class AudioChunk:
    """Mono int16 PCM."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


class Resampler:
    """Mono/stereo int16 at any rate to mono int16 at `rate` (PyAV's swresample)."""

    def __init__(self, rate: int):
        self.rate = rate
        self._in_rate: int | None = None
        self._in_layout: str | None = None
        self._swr: av.AudioResampler | None = None

    def _pcm_out(self, frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)

    def resample_frame(self, frame: av.AudioFrame) -> np.ndarray:
        layout = frame.layout.name
        if frame.sample_rate == self.rate and layout == "mono" and frame.format.name == "s16":
            return frame.to_ndarray().reshape(-1)
        primed = True
        if self._swr is None or frame.sample_rate != self._in_rate or layout != self._in_layout:
            self._swr = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
            self._in_rate, self._in_layout = frame.sample_rate, layout
            primed = False
        want = frame.samples * self.rate // frame.sample_rate
        frame.pts = None  # timestamps are ours to keep, not swresample's
        out = self._pcm_out(self._swr.resample(frame))
        if not primed and len(out) < want:
            # swresample holds back its filter delay; without these leading zeros every
            # later frame would come out short and wait for the next: a frame of latency
            out = np.concatenate([np.zeros(want - len(out), np.int16), out])
        return out

    def resample(self, samples: np.ndarray, rate: int) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.int16).reshape(-1)
        if rate == self.rate:
            return samples
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        return self.resample_frame(frame)


class MicrophoneTrack:
    """Outgoing audio fed with PCM; real-time paced, silence on underrun or mute.

    It outlives peer connections: each one gets a fresh `rtp_track()` that
    pulls from the same buffer, because aiortc ends a track with its sender.
    """

    def __init__(self, *, max_buffer_ms: int = 200, paced_by_source: bool = False,
                 clock: Callable[[], float] = time.monotonic, encoder: VoiceEncoder | None = None):
        self._clock = clock
        # with an encoder the track buffers at its rate and hands aiortc packets;
        # without, 48 kHz frames for aiortc's own (48 kHz stereo) encoder
        self._encoder = encoder
        self._rate = encoder.sample_rate if encoder else OPUS_RATE
        self._frame = encoder.frame_size if encoder else OPUS_FRAME
        self._resampler = Resampler(self._rate)
        # live sources that arrive in whole frames (the gateway's devices): send on
        # arrival rather than on our own 20 ms clock, which would add up to a frame
        self.paced_by_source = paced_by_source
        self._data = asyncio.Event()
        self._buf = np.zeros(0, dtype=np.int16)
        self._max = self._rate * max_buffer_ms // 1000
        self._space = asyncio.Event()
        self._space.set()
        self._start: float | None = None
        self._pts = 0
        self.muted = False
        self.stopped = False
        self.frames_sent = 0
        self.samples_dropped = 0
        self.first_frame_sent = asyncio.Event()
        self._feeder: asyncio.Task | None = None
        self._standing = self._max  # least left after a send in this window
        self._window = 0
        self._held = False  # a writer waited for space: a file, whose backlog is wanted

    # -- input side ---------------------------------------------------------------
    def write_nowait(self, samples: np.ndarray, sample_rate: int) -> None:
        """For capture callbacks: never blocks; drops the oldest audio past the buffer."""
        pcm = self._resampler.resample(samples, sample_rate)
        self._buf = np.concatenate([self._buf, pcm])
        excess = len(self._buf) - self._max
        if excess > 0:
            self._buf = self._buf[excess:]
            self.samples_dropped += excess
        if len(self._buf) >= self._max:
            self._space.clear()
        if len(self._buf) >= self._frame:
            self._data.set()

    async def write(self, samples: np.ndarray, sample_rate: int) -> None:
        """For file-like sources: waits while the buffer is full, so playback keeps real time."""
        while len(self._buf) >= self._max and not self.stopped:
            self._held = True
            self._space.clear()
            await self._space.wait()
        self.write_nowait(samples, sample_rate)

    def feed(self, source: AsyncIterator[AudioChunk]) -> asyncio.Task:
        """Pump an async source of chunks into the track until it ends."""

        async def pump() -> None:
            async for chunk in source:
                if self.stopped:
                    return
                await self.write(chunk.samples, chunk.sample_rate)

        if self._feeder:
            self._feeder.cancel()
        self._feeder = asyncio.ensure_future(pump())
        return self._feeder

    @property
    def buffered(self) -> float:
        return len(self._buf) / self._rate

    @property
    def audio_level(self) -> int | None:
        """dBov of the last frame it encoded itself (None when aiortc encodes)."""
        return self._encoder.last_level if self._encoder is not None else None

    # -- network side ---------------------------------------------------------------
    async def next_frame(self) -> av.AudioFrame | av.Packet:
        if self._start is None:
            self._start = self._clock()
        else:
            wait = self._start + self._pts / self._rate - self._clock()
            if wait > 0 and not self.paced_by_source:
                await asyncio.sleep(wait)
            elif wait < -0.2:  # the loop stalled or the link was down: skip ahead, don't burst
                # by whole frames: the ticks keep their phase to the source's chunks
                self._start += (-wait // (FRAME_MS / 1000)) * (FRAME_MS / 1000)
                # and drop what piled up meanwhile, or it would stay as added latency
                keep = self._rate * LIVE_BACKLOG_MS // 1000
                if len(self._buf) > keep:
                    self.samples_dropped += len(self._buf) - keep
                    self._buf = self._buf[-keep:]
        if self.paced_by_source:
            await self._await_source()
        if len(self._buf) >= self._frame:
            pcm, self._buf = self._buf[:self._frame], self._buf[self._frame:]
        else:
            pcm, self._buf = np.concatenate([self._buf, np.zeros(self._frame - len(self._buf), np.int16)]), self._buf[:0]
        self._shed_standing()
        self._space.set()
        if self.muted:
            pcm = np.zeros(self._frame, np.int16)
        if self.stopped:  # stopped while this frame waited for its source: no encoder any more
            raise MediaStreamError
        frame: av.AudioFrame | av.Packet
        if self._encoder is not None:
            frame = self._encoder.encode(pcm, self._pts)
        else:
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._pts
            frame.time_base = fractions.Fraction(1, self._rate)
        self._pts += self._frame
        self.frames_sent += 1
        if not self.first_frame_sent.is_set():
            self.first_frame_sent.set()
        return frame

    def _shed_standing(self) -> None:
        """Drop live audio that stayed queued for a whole window: latency that would last the call.

        It builds up whenever silence goes out ahead of audio that was only late
        (a chunk just after its frame, a stall the sender caught up on first).
        """
        self._standing = min(self._standing, len(self._buf))
        self._window += 1
        if self._window < STANDING_FRAMES:
            return
        if not self._held and self._standing >= self._rate * STANDING_MIN_MS // 1000:
            self.samples_dropped += self._standing
            self._buf = self._buf[self._standing:]
        self._standing, self._window, self._held = self._max, 0, False

    async def _await_source(self) -> None:
        """Hold a source-paced frame until it is complete or late, and not too early."""
        due = self._start + self._pts / self._rate
        while len(self._buf) < self._frame and not self.stopped:
            left = due + SOURCE_SLACK_S - self._clock()
            if left <= 0:
                break
            self._data.clear()
            try:
                await asyncio.wait_for(self._data.wait(), left)
            except asyncio.TimeoutError:
                break
        early = due - SOURCE_AHEAD_S - self._clock()
        if early > 0:
            await asyncio.sleep(early)

    def rtp_track(self) -> "MediaStreamTrack":
        return _RtpAudioTrack(self)

    def stop(self) -> None:
        self.stopped = True
        self._space.set()
        if self._feeder:
            self._feeder.cancel()
        # the Opus context and its two libav threads go now, not whenever a full collection reaches the
        # reference cycles a closed session leaves (gateway: two threads more per join/leave cycle)
        self._encoder = None


class _RtpAudioTrack(MediaStreamTrack):
    """What one aiortc sender reads: frames from a MicrophoneTrack."""

    kind = "audio"

    def __init__(self, source: MicrophoneTrack):
        super().__init__()
        self._source = source

    @property
    def audio_level(self) -> int | None:
        return self._source.audio_level  # read by opus.carry_audio_level

    async def recv(self) -> av.AudioFrame | av.Packet:
        if self.readyState != "live" or self._source.stopped:
            raise MediaStreamError
        return await self._source.next_frame()


async def tone(frequency: float, *, sample_rate: int = 48000, amplitude: float = 0.3,
               frame_ms: int = FRAME_MS, duration: float | None = None) -> AsyncIterator[AudioChunk]:
    """A sine tone as chunks, as fast as the consumer takes them (MicrophoneTrack paces)."""
    n = sample_rate * frame_ms // 1000
    phase = 0
    total = None if duration is None else int(duration * sample_rate)
    sent = 0
    while total is None or sent < total:
        t = (phase + np.arange(n)) / sample_rate
        yield AudioChunk((amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16), sample_rate)
        phase += n
        sent += n
        await asyncio.sleep(0)
