"""Received audio through the real server: bounded when unread, paced by a clock when read."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
from livekit import rtc

from tests.audio_checks import tone_frames

from .test_gateway import clients, joined_device  # noqa: F401  (fixture)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def pausing_tone(peer, frequency: float, *, pause_at: float, pause_for: float):
    """An official-SDK tone that goes silent for `pause_for` s after `pause_at` s, then goes on.

    In silence libwebrtc's Opus encoder uses DTX: a packet every 400 ms instead of every 20.
    """
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("voice", source)
    await peer.room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=True))

    async def play():
        n, phase = 480, 0
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            amplitude = 0.0 if pause_at <= elapsed < pause_at + pause_for else 0.3
            t = (phase + np.arange(n)) / 48000
            frame = rtc.AudioFrame.create(48000, 1, n)
            np.copyto(np.frombuffer(frame.data, dtype=np.int16),
                      (amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16))
            await source.capture_frame(frame)
            phase += n

    return asyncio.ensure_future(play())


async def test_gateway_memory_stays_flat_with_three_other_publishers(server, gateway, clients, peers, room_name):
    await joined_device(clients, gateway, room_name)
    players = []
    try:
        for name in ("alice", "bob", "carol"):
            p = await peers(name, server.url, room_name)
            players.append(await p.publish_tone(1000, name=name + "-voice"))
        (session,) = gateway.sessions.values()
        deadline = time.monotonic() + 15
        while not session.room.subscribed_tracks() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        # the gateway subscribes to the one it plays (test_gateway_subscription.py)
        assert len(session.room.subscribed_tracks()) == 1
        await asyncio.sleep(3)  # warm up: codecs, buffers, the SDK peers' own allocations
        before, frames_before = rss_bytes(), session.frames_down
        await asyncio.sleep(10)
        grown = rss_bytes() - before
        # before: two unheard tracks decoded into unbounded queues, about +1.2 MB/s each (+24 MB here)
        assert grown < 6e6, f"gateway process grew {grown / 1e6:.1f} MB in 10 s"
        assert session.frames_down - frames_before >= 400  # and the device kept hearing one of them
    finally:
        for t in players:
            t.cancel()


async def test_stream_is_steady_through_a_sender_pause_and_keeps_the_pitch(server, room_name, peers, devices):
    peer = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    player = await pausing_tone(peer, 1000, pause_at=1.5, pause_for=1.0)
    try:
        track = await dev.wait_for_audio_track("agent")
        got: list[tuple[float, np.ndarray]] = []

        async def read():
            async for chunk in dev.audio_stream(track, sample_rate=16000, frame_ms=20):
                got.append((time.monotonic(), chunk.samples))

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(4.0)
        reader.cancel()
    finally:
        player.cancel()
    times = np.array([t for t, _ in got])
    frames = [s for _, s in got]
    gaps = np.diff(times)
    # before: frames came only with packets, so the pause was one long gap
    assert gaps.max() < 0.06, f"largest gap between frames {gaps.max() * 1000:.0f} ms"
    assert len(got) >= 0.9 * 4.0 / 0.02
    assert all(len(s) == 320 for s in frames)
    # tone before and after the pause, silence in it
    assert tone_frames(frames, 16000, 1000, tolerance=10) >= 80
    loud = [np.abs(s).max() > 1000 for s in frames]
    first = loud.index(True)
    quiet_run = max(len(r) for r in "".join("x" if v else "." for v in loud[first:]).split("x"))
    assert quiet_run >= 20, "no silence where the sender paused"
    assert any(loud[-20:]), "the tone did not come back after the pause"
