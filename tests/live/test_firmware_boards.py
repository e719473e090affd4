"""Board files under the simulator, through the gateway and a real
livekit-server to an official-SDK peer: a board whose microphone and speaker
share pins (M5Stack ATOM Echo) runs one I2S peripheral, half duplex."""

from __future__ import annotations

import asyncio

from ..audio_checks import tone_frames
from .conftest import sine
from .test_firmware_sim import mic_reaches_peer, sims, speaker_frames  # noqa: F401  (sims: fixture)


async def test_atom_echo_one_i2s_streams_the_mic_and_plays_the_far_side(server, gateway, sims, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, room_name, board="m5stack-atom-echo", play=sine(440, 90))
    await dev.wait_line(r"\[lkd\] welcome ", 20)
    # the agent is silent: the one I2S listens
    good = await mic_reaches_peer(peer, 440, 2.0)
    assert good >= 0.9 * 100, f"440 Hz in {good} of 100 peer frames while the agent was silent"
    track = next(iter(peer.room.remote_participants["esp32"].track_publications.values())).track

    playing = await peer.publish_tone(1000)
    try:
        await dev.wait_line(r"\[lkd\] joined identity=agent|participants=1", 10)
        await asyncio.sleep(3)
        frames = speaker_frames(dev, 1.5)
        heard = tone_frames(frames, 16000, 1000, tolerance=10)
        assert heard >= 0.9 * len(frames) and len(frames) >= 70, f"1 kHz in {heard} of {len(frames)} speaker frames"
        # while it plays, the pins belong to the speaker: the far side hears no microphone
        leak = tone_frames(await peer.record(track, 1.0, wait_audible=1.0), 48000, 440)
        assert leak <= 3, f"the microphone was heard in {leak} frames while the speaker played"
    finally:
        playing.cancel()
    # the far side went quiet: after the hangover the I2S listens again
    await asyncio.sleep(1.0)
    good = tone_frames(await peer.record(track, 1.5), 48000, 440)
    assert good >= 0.9 * 75, f"440 Hz in {good} of 75 peer frames after the agent stopped"
    # RX, then TX, then RX again: one peripheral re-initialised, and not per frame (the hangover)
    inits = dev.stats().get("i2s_init_count", 0)
    assert 3 <= inits <= 6, f"{inits} I2S inits"
