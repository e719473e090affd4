"""The robot's camera through a real livekit-server, the official SDK decoding it.

Small pictures (160x120, 15 fps) where the size is not the point: the machine
is shared. The synthetic camera stamps each picture with its frame counter and
capture time, which the peer reads back from what it decodes.
"""

from __future__ import annotations

import asyncio
import logging
import time

import av
import numpy as np
import pytest
from livekit import rtc

from lkdevice.robot.camera import read_pattern
from lkdevice.robot.options import VideoOptions
from lkdevice.robot.video import start_video

log = logging.getLogger("test.robot.video")

W, H, FPS = 160, 120, 15
SECONDS = 2.0


def luma_of(frame: rtc.VideoFrame) -> np.ndarray:
    i420 = frame.convert(rtc.VideoBufferType.I420)
    return np.frombuffer(i420.data, dtype=np.uint8)[: i420.width * i420.height].reshape(i420.height, i420.width)


async def decoded(track, seconds: float, first_within: float = 10.0):
    """(arrival time, width, height, luma) of each frame the SDK decodes, for `seconds` from the first."""
    stream = rtc.VideoStream(track, format=rtc.VideoBufferType.I420)
    out = []
    loop = asyncio.get_running_loop()
    start = None
    give_up = loop.time() + first_within
    it = stream.__aiter__()
    try:
        while True:
            limit = (start + seconds if start is not None else give_up) - loop.time()
            if limit <= 0:
                break
            try:
                ev = await asyncio.wait_for(it.__anext__(), limit)
            except asyncio.TimeoutError:
                break
            now = loop.time()
            start = now if start is None else start
            f = ev.frame
            out.append((now, f.width, f.height, luma_of(f)))
    finally:
        await stream.aclose()
    return out


async def video_track_of(peer, identity: str = "device"):
    track, pub, who = await peer.expect(
        "track_subscribed", lambda t, p, w: w.identity == identity and p.kind == rtc.TrackKind.KIND_VIDEO)
    return track, pub


@pytest.mark.parametrize("codec", ["vp8", "h264", "passthrough"])
async def test_the_peer_decodes_the_camera_at_its_size_and_rate(server, room_name, peers, devices, codec):
    peer = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    video = await start_video(dev, VideoOptions(camera="test", codec=codec, width=W, height=H, fps=FPS,
                                                bitrate_kbps=300), log)
    try:
        assert video.codec == codec
        track, pub = await video_track_of(peer)
        assert pub.mime_type.lower() == ("video/vp8" if codec == "vp8" else "video/h264")
        frames = await decoded(track, SECONDS)
    finally:
        await video.close()
    assert frames, "no frame decoded"
    sizes = {(w, h) for _, w, h, _ in frames}
    assert sizes == {(W, H)}
    assert len(frames) >= 0.8 * FPS * SECONDS, f"{len(frames)} frames in {SECONDS}s at {FPS} fps"
    stamps = [read_pattern(y) for *_, y in frames]
    readable = [s for s in stamps if s is not None]
    assert len(readable) >= 0.9 * len(frames), f"{len(readable)}/{len(frames)} stamps read back"
    counters = [s.counter for s in readable]
    assert counters == sorted(counters) and len(set(counters)) == len(counters), "frames out of order or repeated"
