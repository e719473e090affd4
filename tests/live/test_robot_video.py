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
        encoder_bps = video.stats()["encoder_bitrate_bps"]
    finally:
        await video.close()
    assert frames, "no frame decoded"
    # our ceiling, or aiortc's floor above it (250 kb/s VP8, 500 kb/s H.264)
    assert encoder_bps <= {"vp8": 300_000, "h264": 500_000, "passthrough": 300_000}[codec], encoder_bps
    sizes = {(w, h) for _, w, h, _ in frames}
    assert sizes == {(W, H)}
    assert len(frames) >= 0.8 * FPS * SECONDS, f"{len(frames)} frames in {SECONDS}s at {FPS} fps"
    stamps = [read_pattern(y) for *_, y in frames]
    readable = [s for s in stamps if s is not None]
    assert len(readable) >= 0.9 * len(frames), f"{len(readable)}/{len(frames)} stamps read back"
    counters = [s.counter for s in readable]
    assert counters == sorted(counters) and len(set(counters)) == len(counters), "frames out of order or repeated"


class AccessUnitLog:
    """What the camera's encoder produced, decoded here as the peer would (the newest `limit`)."""

    def __init__(self, limit: int = 256):
        self.decoder = av.CodecContext.create("h264", "r")
        self.luma: dict[int, np.ndarray] = {}
        self.limit = limit
        self.count = 0

    def __call__(self, au) -> None:
        self.count += 1
        for frame in self.decoder.decode(av.Packet(au.data)):
            self.luma[au.frame_index] = frame.to_ndarray()[: frame.height]  # yuv420p: the luma rows
        while len(self.luma) > self.limit:
            del self.luma[next(iter(self.luma))]


async def test_passthrough_sends_the_encoders_own_pictures(server, room_name, peers, devices):
    peer = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    video = await start_video(dev, VideoOptions(camera="test", codec="passthrough", width=W, height=H, fps=FPS,
                                                bitrate_kbps=300), log)
    units = AccessUnitLog()
    video.tap = units
    try:
        track, _ = await video_track_of(peer)
        frames = await decoded(track, SECONDS)
        stats = video.stats()
    finally:
        await video.close()
    stamped = [(read_pattern(y), y) for *_, y in frames]
    compared = [(s.counter, y) for s, y in stamped if s is not None and s.counter in units.luma]
    assert len(compared) >= 0.8 * len(frames) and len(frames) >= 0.8 * FPS * SECONDS
    # one access unit per picture, and no picture the encoder did not make
    assert stats["access_units"] == units.count
    assert max(c for c, _ in compared) < stats["access_units"]
    # a decoder is deterministic: the same bitstream decodes to the same pixels; a re-encode would not
    diffs = [float(np.abs(y.astype(np.int16) - units.luma[c].astype(np.int16)).mean()) for c, y in compared]
    assert max(diffs) < 0.5, f"peer's pictures differ from our decode of the encoder's output: {max(diffs):.2f}"


async def first_frame_delay(track, timeout: float = 5.0) -> float:
    start = time.monotonic()
    frames = await decoded(track, 0.0, first_within=timeout)
    assert frames, f"no picture within {timeout}s"
    return time.monotonic() - start


async def test_passthrough_late_subscriber_sees_a_picture_at_once(server, room_name, peers, devices):
    """The encoder makes a keyframe every 10 s on its own: a late subscriber only sees
    a picture at once if the SFU's keyframe request reaches the camera's encoder."""
    first = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    video = await start_video(dev, VideoOptions(camera="test", codec="passthrough", width=W, height=H, fps=FPS,
                                                bitrate_kbps=300), log)
    try:
        track, _ = await video_track_of(first)
        await first_frame_delay(track)
        await asyncio.sleep(1.5)  # past the opening keyframe and the SFU's keyframe-request throttle
        late = await peers("late", server.url, room_name)
        track, _ = await video_track_of(late)
        delay = await first_frame_delay(track)
    finally:
        await video.close()
    assert delay < 0.5, f"late subscriber's first picture after {delay * 1000:.0f} ms"
    assert video.stats()["keyframe_requests"] >= 1


async def test_passthrough_answers_a_pli_with_a_keyframe_within_100_ms(server, room_name, devices):
    """The official SDK has no call that sends a PLI: the watcher is our own client,
    whose aiortc receiver sends one as it does when its decoder loses a picture."""
    dev = await devices(server.url, room_name)
    video = await start_video(dev, VideoOptions(camera="test", codec="passthrough", width=W, height=H, fps=FPS,
                                                bitrate_kbps=300), log)
    subscribed: asyncio.Queue = asyncio.Queue()
    watcher = await devices(server.url, room_name, identity="watcher")
    watcher.on("track_subscribed", lambda t, pub, p: subscribed.put_nowait(t) if pub.kind == "video" else None)
    for sid in watcher.subscribed_tracks():  # subscribed while it joined
        if watcher.state.find_track(sid)[1].kind == "video":
            subscribed.put_nowait(watcher.remote_track(sid))
    try:
        track = await asyncio.wait_for(subscribed.get(), 10)

        async def drain():  # should aiortc decode pictures, it queues every one, read or not
            while True:
                await track.recv()

        drainer = asyncio.ensure_future(drain())
        receiver = watcher._peer.transceiver_for(track).receiver
        ssrcs = [s for s, r in receiver.transport._rtp_router.ssrc_table.items() if r is receiver]  # + RTX's
        delays = []
        for _ in range(2):
            await asyncio.sleep(1.5)  # the SFU forwards at most one keyframe request a second
            requests, keyframes = video.stats()["keyframe_requests"], len(video.keyframe_times)
            sent = time.monotonic()
            for ssrc in ssrcs:
                await receiver._send_rtcp_pli(ssrc)
            while len(video.keyframe_times) == keyframes and time.monotonic() - sent < 2:
                await asyncio.sleep(0.005)
            assert video.stats()["keyframe_requests"] > requests, "the PLI never reached the publisher"
            assert len(video.keyframe_times) > keyframes, "no keyframe after the PLI"
            delays.append(video.keyframe_times[keyframes] - sent)
        drainer.cancel()
    finally:
        await video.close()
    log.info("PLI to keyframe: %s ms", [round(d * 1000) for d in delays])
    assert max(delays) < 0.1, f"PLI to keyframe: {[round(d * 1000) for d in delays]} ms"


async def test_uplink_loss_lowers_the_encoders_bitrate(server, room_name, peers, devices):
    from lkdevice.host_tools.netimpair import Impairment

    peer = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    video = await start_video(dev, VideoOptions(camera="test", codec="passthrough", width=W, height=H, fps=FPS,
                                                bitrate_kbps=400), log)
    try:
        await video_track_of(peer)
        with Impairment(server.config.rtc_udp_port, max_seconds=30) as net:
            await asyncio.sleep(1.5)
            clean = video.stats()
            # the SFU recovers much of it by NACK: its reports alternate 0 % and about 20 %
            net.loss(50, "up")
            seen = []
            for _ in range(100):
                await asyncio.sleep(0.1)
                if not seen or seen[-1][0] != video.controller.reports:
                    seen.append((video.controller.reports, video.last_fraction_lost, video.encoder.bitrate))
                if video.encoder.bitrate < 0.8 * 400_000:
                    break
            lossy = video.stats()
    finally:
        await video.close()
    assert clean["receiver_reports"] >= 1 and clean["bitrate_bps"] == 400_000, clean
    assert lossy["receiver_reports"] > clean["receiver_reports"], lossy
    assert video.encoder.bitrate < 0.8 * 400_000, seen
    assert lossy["bitrate_bps"] == video.encoder.bitrate


@pytest.fixture
async def own_server():
    from lkdevice.host_tools.livekit_server import LocalServer

    from .conftest import server_config

    srv = LocalServer(server_config()).start()
    yield srv
    srv.stop()


async def test_the_camera_is_published_again_after_a_rejoin(own_server, room_name, peers, devices):
    """A server restart forces a full rejoin: a new peer connection, the same camera."""
    dev = await devices(own_server.url, room_name)
    video = await start_video(dev, VideoOptions(camera="test", codec="passthrough", width=W, height=H, fps=FPS,
                                                bitrate_kbps=300), log)
    try:
        states: asyncio.Queue = asyncio.Queue()
        dev.on("reconnected", lambda kind: states.put_nowait(kind))
        await asyncio.sleep(0.5)
        before = video.frames
        await asyncio.to_thread(own_server.restart)
        assert await asyncio.wait_for(states.get(), 30) == "rejoin"
        peer = await peers("agent", own_server.url, room_name)
        track, _ = await video_track_of(peer)
        frames = await decoded(track, 1.0)
    finally:
        await video.close()
    stamps = [s for s in (read_pattern(y) for *_, y in frames) if s is not None]
    assert len(stamps) >= 0.8 * FPS * 1.0
    assert min(s.counter for s in stamps) > before  # the camera kept its count: the same source, not a new one


async def test_closing_the_camera_unpublishes_it(server, room_name, peers, devices):
    peer = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    video = await start_video(dev, VideoOptions(camera="test", codec="vp8", width=W, height=H, fps=FPS,
                                                bitrate_kbps=300), log)
    _, pub = await video_track_of(peer)
    gone = asyncio.get_running_loop().create_future()
    peer.room.on("track_unpublished", lambda p, who: gone.done() or gone.set_result(p.sid))
    await video.close()
    assert await asyncio.wait_for(gone, 5) == pub.sid
    assert dev.connection_state == "connected"
    assert not [t for t in dev._local_tracks if t is video.track]


async def test_lkdevice_robot_auto_says_why_and_the_peer_reads_the_stamps(server, room_name, peers):
    """Through the command line: `--video-codec auto` with the test camera picks software VP8
    (no hardware encoder behind it) and says so in one line."""
    import signal

    from .conftest import token
    from .test_robot_app import robot

    agent = await peers("agent", server.url, room_name)
    proc = await robot("--url", server.url, "--token", token("robot", room_name), "--camera", "test",
                       "--video-codec", "auto", "--size", f"{W}x{H}", "--fps", str(FPS), "--bitrate", "300",
                       "--audio", "none")
    try:
        track, _ = await video_track_of(agent, "robot")
        frames = await decoded(track, 1.0, first_within=15)
        proc.send_signal(signal.SIGTERM)
        out, err = await proc.finish(10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    lines = [ln for ln in out.splitlines() if "auto: software vp8" in ln]
    assert len(lines) == 1 and "no hardware H.264 encoder" in lines[0], out
    assert sum(read_pattern(y) is not None for *_, y in frames) >= 0.8 * FPS
