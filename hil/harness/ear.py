"""What a far-side peer hears from one participant: a tone's level every 20 ms, on the harness clock.

An `Ear` follows the participant's audio tracks as they come and go (a device
that rejoins publishes a new one): each frame's level of `freq` is kept with
its arrival time, in a bounded list (the oldest go first).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np
from livekit import rtc

from .audio import tone_levels

RATE = 48000
FRAME_MS = 20
MAX_FRAMES = 50 * 600  # 10 min at 20 ms


class Ear:
    def __init__(self, room: rtc.Room, identity: str, freq: float):
        self.identity = identity
        self.freq = freq
        self.levels: deque[tuple[float, float]] = deque(maxlen=MAX_FRAMES)  # (arrival time, tone level)
        self.tracks = 0  # how many of its audio tracks were heard (a rejoin publishes a new one)
        self._reader: asyncio.Task | None = None
        room.on("track_subscribed", self._on_track)
        for p in room.remote_participants.values():
            for pub in p.track_publications.values():
                if pub.track is not None:
                    self._on_track(pub.track, pub, p)

    def _on_track(self, track, pub, participant) -> None:
        if participant.identity != self.identity or track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        if self._reader is not None:  # the device has one microphone: the newest track is the one that counts
            self._reader.cancel()
        self.tracks += 1
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track) -> None:
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=FRAME_MS)
        try:
            async for ev in stream:
                pcm = np.frombuffer(ev.frame.data, dtype=np.int16)
                lv = tone_levels(pcm, RATE, self.freq, FRAME_MS / 1000)
                self.levels.append((time.monotonic(), float(lv[0]) if len(lv) else 0.0))
        finally:
            await stream.aclose()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
