"""Received audio: Opus packets held undecoded, decoded on a playout clock only when read.

aiortc's receiver decodes every packet of every subscribed track on a thread
into an unbounded queue, read or not. `PacketTap` takes the place of its jitter
buffer: each RTP packet goes, still encoded, into a bounded `JitterBuffer`
(rtc/jitter.py) and aiortc gets nothing to decode, so a track nobody reads
costs one small bounded buffer. `AudioStream` reads it on its own clock: every
`frame_ms` of wall time it yields one frame, decoded at the caller's rate
(rtc/opus_decode.py), rebuilt from the next packet's in-band FEC or concealed
by libopus when a packet is lost, or silence when the sender pauses (DTX, mute)
or the network starves us.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from .audio import FRAME_MS, OPUS_RATE, AudioChunk
from .jitter import Frame, JitterBuffer, Lost
from .opus_decode import Decoder, make_decoder, opus_samples

__all__ = ["AudioStream", "PacketTap", "attach", "opus_samples", "tap_for"]

# a playout clock this far behind (the event loop stalled) skips ahead instead of bursting
MAX_LAG_S = 0.2
Clock = Callable[[], float]


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


class AudioStream:
    """Mono int16 frames of `frame_ms` at `sample_rate`, one every `frame_ms` of wall time.

    The frame is the received audio after the jitter buffer's delay, a lost packet
    rebuilt from its successor's FEC when that is already held (else libopus's
    concealment), or silence while the sender pauses or nothing
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
        self.decoder: Decoder = make_decoder(sample_rate)
        self._pcm = np.zeros(0, np.int16)
        self._deadline: float | None = None
        self.frames_received = 0  # packets decoded
        self.frames_concealed = 0  # lost packets, rebuilt or concealed
        self.frames_recovered = 0  # of those, rebuilt from the next packet's FEC
        self.frames_silent = 0
        self.frames_out = 0

    @property
    def ended(self) -> bool:
        return self._ended()

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
        return self.read_frame()

    def read_frame(self) -> AudioChunk:
        """The next frame now, without waiting: for a reader with its own clock (a sound
        card's output callback pulls at the card's pace, which drifts from ours)."""
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
            pcm = self.decoder.decode(item.payload)
        elif isinstance(item, Lost):
            self.frames_concealed += 1
            following = self.tap.jitter.next_held()
            if following is not None and self.decoder.recovers:
                self.frames_recovered += 1
                pcm = self.decoder.recover(following.payload, n)
            else:
                pcm = self.decoder.conceal(n)
        else:
            self.frames_silent += 1
            pcm = self.decoder.silence(n)
        if not len(pcm):  # never loop without progress
            pcm = np.zeros(max(1, n * self.sample_rate // OPUS_RATE), np.int16)
        return pcm

    @property
    def stats(self) -> dict:
        return {"frames_out": self.frames_out, "decoded": self.frames_received, "concealed": self.frames_concealed,
                "recovered": self.frames_recovered,
                "silent": self.frames_silent, "target_delay_ms": round(self.jitter.target_delay * 1000, 1),
                "held": len(self.jitter), **{"jitter_" + k: v for k, v in self.jitter.stats.items()}}
