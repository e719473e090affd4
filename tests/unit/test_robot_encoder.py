"""The libx264 stand-in for the Pi's encoder: what it emits is what a WebRTC receiver can take."""

from __future__ import annotations

import asyncio
import itertools

import av

from lkdevice.robot.camera import TestPattern, read_pattern
from lkdevice.robot.encoder import NAL_IDR, NAL_PPS, NAL_SPS, LibX264Encoder, nal_units


def unpaced() -> TestPattern:
    ticks = itertools.count(0, 1 / 30)  # each frame is due when asked for: no pacing sleeps
    return TestPattern(96, 64, 30, clock=lambda: next(ticks))


async def _encode(frames: int, force_at: set[int]):
    source = unpaced()
    enc = LibX264Encoder(source, 200_000, keyframe_interval_s=100)
    units = []

    def sink(au):
        units.append(au)
        if len(units) in force_at:
            enc.force_key_frame()

    await enc.start(sink)
    while len(units) < frames:
        await asyncio.sleep(0.001)
    await enc.stop()
    return enc, units[:frames]


async def test_keyframes_on_request_each_with_sps_and_pps_constrained_baseline():
    enc, units = await _encode(40, {10, 25})
    keys = [i for i, au in enumerate(units) if au.keyframe]
    assert keys == [0, 10, 25]  # the next frame after each request, and none on its own
    assert enc.forced_keyframes == 2 and enc.keyframes == 3 and enc.packets >= 40
    for i in keys:
        types = [t for _, t in nal_units(units[i].data)]
        assert types.index(NAL_SPS) < types.index(NAL_PPS) < types.index(NAL_IDR)
        start = nal_units(units[i].data)[types.index(NAL_SPS)][0]
        profile, constraints = units[i].data[start + 1], units[i].data[start + 2]
        assert profile == 66 and constraints & 0x40, "not constrained baseline"  # so no B-frames
    # frame order in, frame order out, each unit one picture the decoder shows at once
    assert [au.frame_index for au in units] == list(range(40))
    dec = av.CodecContext.create("h264", "r")
    for au in units:
        (picture,) = dec.decode(av.Packet(au.data))
        assert read_pattern(picture.to_ndarray()[: picture.height]).counter == au.frame_index


async def test_bitrate_changes_take_effect_without_a_keyframe():
    source = unpaced()
    enc = LibX264Encoder(source, 400_000, keyframe_interval_s=100)
    units = []
    await enc.start(units.append)
    while len(units) < 5:
        await asyncio.sleep(0.001)
    enc.set_bitrate(100_000)
    while len(units) < 20:
        await asyncio.sleep(0.001)
    await enc.stop()
    assert enc.bitrate == 100_000
    assert sum(au.keyframe for au in units) == 1
