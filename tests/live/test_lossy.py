"""Audio over a lossy network: our client against the official SDK, with nftables dropping media.

`X %` loss drops X % of the server's media packets to its subscribers (each
direction of the call loses X % once), after the call is up.
"""

from __future__ import annotations

import asyncio
import gc

import numpy as np
import pytest

import lkdevice
from lkdevice.host_tools.netimpair import Impairment
from tests.audio_checks import frame_frequency, tone_frames

SECONDS = 2.5
FRAMES = int(SECONDS / 0.02)
OURS_HZ, AGENT_HZ = 440, 1000
MAX_GAP_MS = 60
SEMITONE = 2 ** (1 / 12) - 1


@pytest.fixture
async def call(server, room_name, peers, devices):
    """An agent (official SDK) and our device, each playing its tone to the other."""
    agent = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    await dev.publish_audio(lkdevice.tone(OURS_HZ, sample_rate=16000))
    player = await agent.publish_tone(AGENT_HZ)
    track_from_device, _, _ = await agent.expect("track_subscribed")
    track_from_agent = await dev.wait_for_audio_track("agent")
    yield agent, dev, track_from_device, track_from_agent
    player.cancel()


@pytest.fixture
def net(server):
    with Impairment(server.config.rtc_udp_port, max_seconds=60) as imp:
        yield imp


async def _ours_receive(dev, track, seconds: float) -> tuple[list[np.ndarray], list[float]]:
    """20 ms frames our caller gets, from the first audible one, and the wall-clock time of each."""
    frames, times = [], []
    loop = asyncio.get_running_loop()
    start = None
    async for chunk in dev.audio_stream(track, sample_rate=48000, frame_ms=20):
        now = loop.time()
        if start is None:
            if np.abs(chunk.samples).max() < 1000:
                continue
            start = now
        frames.append(chunk.samples)
        times.append(now)
        if now - start >= seconds:
            break
    return frames, times


def _off_pitch(frames: list[np.ndarray], frequency: float) -> int:
    """Frames whose tone is a semitone or more off `frequency`: a wrong note, not concealment's small bend."""
    return sum(1 for f in frames
               if (est := frame_frequency(f, 48000)) is not None and abs(est / frequency - 1) > SEMITONE)


@pytest.mark.parametrize("loss", [3, 10])
async def test_tone_arrives_on_pitch_both_ways(call, net, loss):
    agent, dev, from_device, from_agent = call
    await asyncio.sleep(0.5)  # the call is up and audio flows before the loss starts
    net.loss(loss, "down")
    heard_by_agent, (heard_by_us, _) = await asyncio.wait_for(asyncio.gather(
        agent.record(from_device, SECONDS), _ours_receive(dev, from_agent, SECONDS)), SECONDS + 10)
    assert net.dropped() > 0, "the loss rule dropped nothing: the test did not test loss"

    # each lost packet may cost its frame (no concealment on our side yet); the rest is the tone
    need = int((0.9 - 1.5 * loss / 100) * FRAMES)
    good = tone_frames(heard_by_agent, 48000, OURS_HZ)
    assert good >= need, f"agent heard {good}/{FRAMES} frames at {OURS_HZ} Hz at {loss} % loss"
    good = tone_frames(heard_by_us, 48000, AGENT_HZ)
    assert good >= need, f"we heard {good}/{FRAMES} frames at {AGENT_HZ} Hz at {loss} % loss"
    for who, frames, hz in (("agent", heard_by_agent, OURS_HZ), ("we", heard_by_us, AGENT_HZ)):
        wrong = _off_pitch(frames, hz)
        assert wrong <= 0.05 * len(frames), f"{who} heard {wrong}/{len(frames)} frames off {hz} Hz"


@pytest.fixture
def suite_heap_frozen():
    """The objects the suite has piled up in this one process (1500 tests' worth) moved out of the
    collector's way, so a full collection over them cannot pause the loop mid-measurement: a pause no
    device app has. (One CI run saw a single 243 ms wait here, not reproduced alone; a collection is a
    suspect, not a proven cause.) What the client allocates from here on is collected as usual."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.parametrize("loss", [3, 10])
async def test_no_gap_over_60ms_in_what_we_receive(call, net, loss, suite_heap_frozen):
    """A speaker needs a frame every 20 ms: lost packets must become concealment, not waiting."""
    _, dev, _, from_agent = call
    await asyncio.sleep(0.5)
    net.loss(loss, "down")
    frames, times = await asyncio.wait_for(_ours_receive(dev, from_agent, SECONDS), SECONDS + 10)
    assert net.dropped() > 0, "the loss rule dropped nothing: the test did not test loss"
    gaps_ms = np.diff(times) * 1000
    assert len(frames) >= 0.8 * FRAMES, f"only {len(frames)} frames in {SECONDS} s"
    worst = float(gaps_ms.max())
    over = int((gaps_ms > MAX_GAP_MS).sum())
    assert worst <= MAX_GAP_MS, (f"at {loss} % loss the longest wait for a frame was {worst:.0f} ms "
                                 f"({over} waits over {MAX_GAP_MS} ms in {len(frames)} frames)")
