"""The room's side of a scenario: an official-SDK participant (the agent itself is host_tools.stack.AgentProcess).

A `FarSide` either watches unseen (hidden: the agent's transcripts and state)
or plays a visible peer (data, RPC, a stand-in agent's `lk.agent.state`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from livekit import rtc

# every list here is bounded: a long call must not grow the harness
_MAX_EVENTS = 2000


class FarSide:
    def __init__(self, identity: str):
        self.identity = identity
        self.room = rtc.Room()
        self.transcripts: deque[tuple[float, str, bool, str]] = deque(maxlen=_MAX_EVENTS)  # (t, who, final, text)
        self.states: deque[tuple[float, str, str]] = deque(maxlen=_MAX_EVENTS)  # (t, who, state)
        self.data: deque[tuple[float, str, str, bytes]] = deque(maxlen=_MAX_EVENTS)  # (t, who, topic, payload)
        self.joins: deque[tuple[float, str, str]] = deque(maxlen=_MAX_EVENTS)  # (t, "joined"|"left", who)
        self.room.register_text_stream_handler("lk.transcription", self._on_text)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.on("data_received", self._on_data)
        self.room.on("participant_connected", lambda p: self.joins.append((time.monotonic(), "joined", p.identity)))
        self.room.on("participant_disconnected", lambda p: self.joins.append((time.monotonic(), "left", p.identity)))

    async def connect(self, url: str, token: str) -> "FarSide":
        await asyncio.wait_for(self.room.connect(url, token), 20)
        return self

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.room.disconnect(), 5)
        except (asyncio.TimeoutError, Exception):  # the run goes on; the room empties by itself
            pass

    def _on_text(self, reader, identity: str) -> None:
        async def read():
            text = await reader.read_all()
            final = reader.info.attributes.get("lk.transcription_final") == "true"
            self.transcripts.append((time.monotonic(), identity, final, text))
        asyncio.ensure_future(read())

    def _on_attributes(self, changed: dict, participant) -> None:
        if "lk.agent.state" in changed:
            self.states.append((time.monotonic(), participant.identity, changed["lk.agent.state"]))

    def _on_data(self, packet) -> None:
        who = packet.participant.identity if packet.participant else ""
        self.data.append((time.monotonic(), who, packet.topic or "", bytes(packet.data)))

    def present(self, identity: str) -> bool:
        return identity in {p.identity for p in self.room.remote_participants.values()}

    def agent_identity(self) -> str | None:
        return next((p.identity for p in self.room.remote_participants.values()
                     if p.attributes.get("lk.agent.state") is not None), None)

    def final(self, identity: str, after: float = 0.0) -> list[tuple[float, str]]:
        return [(ts, t) for ts, who, final, t in self.transcripts if who == identity and final and ts >= after]

    async def until(self, what, timeout: float, describe: str):
        """Poll `what()` until truthy; TimeoutError naming `describe`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {describe} within {timeout:g} s")


async def publish_tone(room: rtc.Room, frequency: float, name: str = "hil-tone") -> asyncio.Task:
    """A sine into the room at real-time pace (the device's speaker has something to play)."""
    import numpy as np
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track(name, source)
    await room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

    async def play():
        n, phase = 480, 0
        while True:
            t = (phase + np.arange(n)) / 48000
            frame = rtc.AudioFrame.create(48000, 1, n)
            np.copyto(np.frombuffer(frame.data, dtype=np.int16),
                      (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16))
            await source.capture_frame(frame)
            phase += n

    return asyncio.ensure_future(play())
