"""Received audio: Opus packets held undecoded, decoded on a playout clock only when read.

aiortc's receiver decodes every packet of every subscribed track on a thread
into an unbounded queue, read or not. `PacketTap` takes the place of its jitter
buffer: each RTP packet goes, still encoded, into a bounded `JitterBuffer`
(rtc/jitter.py) and aiortc gets nothing to decode, so a track nobody reads
costs one small bounded buffer. `AudioStream` reads it on its own clock: every
`frame_ms` of wall time it yields one frame, decoded (libopus through PyAV) and
resampled to the caller's rate, concealed by libopus when a packet is lost, or
silence when the sender pauses (DTX, mute) or the network starves us.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from .audio import FRAME_MS, OPUS_RATE, AudioChunk, Resampler
from .jitter import Frame, JitterBuffer, Lost

# a playout clock this far behind (the event loop stalled) skips ahead instead of bursting
MAX_LAG_S = 0.2
Clock = Callable[[], float]


def opus_samples(payload: bytes, rate: int = OPUS_RATE) -> int | None:
    """Duration of an Opus packet in samples at `rate`, from its TOC (RFC 6716 3.1)."""
    if not payload:
        return None
    toc = payload[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        tenths = (100, 200, 400, 600)[config % 4]
    elif config < 16:  # hybrid: 10, 20 ms
        tenths = (100, 200)[config % 2]
    else:  # CELT: 2.5, 5, 10, 20 ms
        tenths = (25, 50, 100, 200)[config % 4]
    code = toc & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    elif len(payload) >= 2:
        count = payload[1] & 0x3F
    else:
        return None
    return rate * tenths * count // 10000 or None


class PacketTap:
    """Stands in for aiortc's audio JitterBuffer: keeps packets encoded, hands aiortc nothing."""

    capacity = 16  # aiortc's own attribute; nothing reads it for audio

    def __init__(self, clock: Clock = time.monotonic, **jitter_options):
        self.clock = clock
        self.jitter = JitterBuffer(**jitter_options)
        self.ssrc: int | None = None
        self.packets = 0

    def add(self, packet) -> tuple[bool, None]:
        payload = getattr(packet, "_data", None) or packet.payload
        if payload:
            if packet.ssrc != self.ssrc:
                if self.ssrc is not None:
                    self.jitter.reset()  # the receiver now carries another published track
                self.ssrc = packet.ssrc
            self.packets += 1
            self.jitter.push(packet.sequence_number, packet.timestamp, bytes(payload), self.clock(),
                             opus_samples(payload))
        return False, None


_TAPS: "weakref.WeakKeyDictionary[MediaStreamTrack, PacketTap]" = weakref.WeakKeyDictionary()


def attach(track: MediaStreamTrack, tap: PacketTap) -> None:
    """Remember which tap feeds `track` (aiortc creates the track after the receiver)."""
    _TAPS[track] = tap


def tap_for(track: MediaStreamTrack) -> PacketTap | None:
    return _TAPS.get(track)


class OpusDecoder:
    """Opus packets to mono int16 at `rate`, with libopus's own concealment for lost packets.

    FFmpeg's libopus wrapper always decodes at 48 kHz and never asks for in-band FEC,
    so other rates go through swresample and concealment is libopus PLC: a packet
    holding only a TOC byte is, to libopus, a lost frame of that TOC's duration.
    """

    def __init__(self, rate: int):
        self.rate = rate
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.sample_rate = OPUS_RATE
        self._codec.layout = "mono"
        self._codec.format = "s16"
        self._resampler = Resampler(rate) if rate != OPUS_RATE else None
        self._toc: int | None = None
        self.errors = 0

    def decode(self, payload: bytes) -> np.ndarray:
        self._toc = payload[0]
        try:
            frames = self._codec.decode(av.Packet(payload))
        except av.FFmpegError:
            self.errors += 1
            return self.conceal(opus_samples(payload) or OPUS_RATE * FRAME_MS // 1000)
        return self._out(frames)

    def conceal(self, samples: int) -> np.ndarray:
        """`samples` (at 48 kHz) of libopus concealment, fading out as libopus does."""
        if self._toc is None:
            return self.silence(samples)
        toc = self._toc & 0xFC  # code 0: one frame, and no frame data = lost
        per = opus_samples(bytes([toc])) or samples
        frames: list[av.AudioFrame] = []
        for _ in range(max(1, -(-samples // per))):
            try:
                frames += self._codec.decode(av.Packet(bytes([toc])))
            except av.FFmpegError:
                self.errors += 1
                return self.silence(samples)
        return self._out(frames)

    def silence(self, samples: int) -> np.ndarray:
        pcm = np.zeros(samples, np.int16)
        return self._resampler.resample(pcm, OPUS_RATE) if self._resampler else pcm

    def _out(self, frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, np.int16)
        if self._resampler:
            return np.concatenate([self._resampler.resample_frame(f) for f in frames])
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)


class AudioStream:
    """Mono int16 frames of `frame_ms` at `sample_rate`, one every `frame_ms` of wall time.

    The frame is the received audio after the jitter buffer's delay, libopus's
    concealment for a lost packet, or silence while the sender pauses or nothing
    arrives. Ends when the track ends. One reader per track: a new stream on the
    same track restarts playout from what the buffer holds.
    """

    def __init__(self, track: MediaStreamTrack, *, sample_rate: int = OPUS_RATE, frame_ms: int = FRAME_MS,
                 tap: PacketTap | None = None, clock: Clock | None = None):
        self.track = track
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_size = sample_rate * frame_ms // 1000
        self.tap = tap or tap_for(track)
        if self.tap is None:
            raise TypeError("AudioStream reads tracks received by lkdevice's Room (no packet tap on this track)")
        self.tap.jitter.restart()
        self._clock = clock or self.tap.clock
        self._decoder = OpusDecoder(sample_rate)
        self._pcm = np.zeros(0, np.int16)
        self._deadline: float | None = None
        self.frames_received = 0  # packets decoded
        self.frames_concealed = 0
        self.frames_silent = 0
        self.frames_out = 0

    @property
    def jitter(self) -> JitterBuffer:
        return self.tap.jitter

    def __aiter__(self):
        return self

    def _ended(self) -> bool:
        if self.track.readyState != "live":
            return True
        # aiortc ends a remote track by queueing None for it; nothing else is ever queued
        # (PacketTap hands its decoder thread no frames)
        queue = getattr(self.track, "_queue", None)
        return queue is not None and not queue.empty()

    async def __anext__(self) -> AudioChunk:
        frame_s = self.frame_ms / 1000
        now = self._clock()
        if self._deadline is None:
            self._deadline = now
        else:
            self._deadline += frame_s
            start = self.tap.jitter.start_time()
            if start is not None and now <= start < self._deadline:
                # first audio: tick when it is due, not up to a frame later, and keep that phase
                self._deadline = start
            wait = self._deadline - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -MAX_LAG_S:
                self._deadline = now
        if self._ended():
            raise StopAsyncIteration
        now = self._clock()
        while len(self._pcm) < self.frame_size:
            self._pcm = np.concatenate([self._pcm, self._next_pcm(now)])
        out, self._pcm = self._pcm[: self.frame_size], self._pcm[self.frame_size:]
        self.frames_out += 1
        return AudioChunk(out, self.sample_rate)

    def _next_pcm(self, now: float) -> np.ndarray:
        item = self.tap.jitter.pop(now)
        n = item.samples * OPUS_RATE // self.tap.jitter.clock_rate
        if isinstance(item, Frame):
            self.frames_received += 1
            pcm = self._decoder.decode(item.payload)
        elif isinstance(item, Lost):
            self.frames_concealed += 1
            pcm = self._decoder.conceal(n)
        else:
            self.frames_silent += 1
            pcm = self._decoder.silence(n)
        if not len(pcm):  # never loop without progress
            pcm = np.zeros(max(1, n * self.sample_rate // OPUS_RATE), np.int16)
        return pcm

    @property
    def stats(self) -> dict:
        return {"frames_out": self.frames_out, "decoded": self.frames_received, "concealed": self.frames_concealed,
                "silent": self.frames_silent, "target_delay_ms": round(self.jitter.target_delay * 1000, 1),
                "held": len(self.jitter), **{"jitter_" + k: v for k, v in self.jitter.stats.items()}}
