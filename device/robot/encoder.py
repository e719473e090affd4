"""One H.264 encoder interface: access units out, keyframes and bitrate on demand.

`LibX264Encoder` (PyAV: ultrafast, zerolatency, constrained baseline) stands in
for the Pi's hardware encoder in tests and on machines without one;
`Picamera2Encoder` drives the Pi's own (picamera2 is imported only when it is
used). Both emit Annex B access units, no B-frames, SPS and PPS before every
IDR (`ParameterSets` puts them back where an encoder left them out).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Protocol

import av

from .camera import FrameSource

log = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, 90000)
NAL_SLICE, NAL_IDR, NAL_SPS, NAL_PPS = 1, 5, 7, 8
# a keyframe at least this often even if nobody asks: a receiver that missed
# a PLI (or joined through an SFU that throttles them) still recovers
KEYFRAME_INTERVAL_S = 10.0


@dataclass(frozen=True)
class AccessUnit:
    data: bytes          # Annex B, one picture
    pts: int             # in 1/90000
    keyframe: bool
    frame_index: int     # the source's frame number (-1 when unknown)
    capture_time: float  # time.monotonic() when the picture was taken


Sink = Callable[[AccessUnit], None]


def nal_units(data: bytes) -> list[tuple[int, int]]:
    """(start of NAL header, NAL type) for each unit of an Annex B buffer."""
    out = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        if start < len(data):
            out.append((start, data[start] & 0x1F))
        i = data.find(b"\x00\x00\x01", start)
    return out


def _unit_bytes(data: bytes, units: list[tuple[int, int]], k: int) -> bytes:
    start = units[k][0]
    end = units[k + 1][0] - 3 if k + 1 < len(units) else len(data)
    while end > start and data[end - 1] == 0:  # a 4-byte start code's leading zero
        end -= 1
    return data[start:end]


class ParameterSets:
    """Keeps the newest SPS and PPS; an IDR that comes without them gets them in front."""

    def __init__(self) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self.inserted = 0

    def fix(self, data: bytes) -> tuple[bytes, bool]:
        """The access unit to send, and whether it is a keyframe (holds an IDR)."""
        units = nal_units(data)
        types = [t for _, t in units]
        for k, (_, t) in enumerate(units):
            if t == NAL_SPS:
                self.sps = _unit_bytes(data, units, k)
            elif t == NAL_PPS:
                self.pps = _unit_bytes(data, units, k)
        keyframe = NAL_IDR in types
        if keyframe and (NAL_SPS not in types or NAL_PPS not in types) and self.sps and self.pps:
            self.inserted += 1
            data = b"\x00\x00\x00\x01" + self.sps + b"\x00\x00\x00\x01" + self.pps + data
        return data, keyframe


class H264Encoder(Protocol):
    packets: int
    keyframes: int
    forced_keyframes: int
    bitrate: int

    async def start(self, sink: Sink) -> None: ...

    async def stop(self) -> None: ...

    def force_key_frame(self) -> None: ...

    def set_bitrate(self, bps: int) -> None: ...


class LibX264Encoder:
    """Encodes a `FrameSource` with libx264, one access unit per frame."""

    def __init__(self, source: FrameSource, bitrate: int, keyframe_interval_s: float = KEYFRAME_INTERVAL_S):
        self.source = source
        self.bitrate = bitrate
        self.packets = 0
        self.keyframes = 0
        self.forced_keyframes = 0
        self._keyint = max(1, int(keyframe_interval_s * source.fps))
        self._force = False
        self._task: asyncio.Task | None = None
        self._codec: av.CodecContext | None = None
        self._params = ParameterSets()
        # pts -> (frame index, capture time) of frames inside the encoder (one, at zero latency)
        self._inflight: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="x264")
        self.encode_cpu_s = 0.0  # what a hardware encoder would take off the CPU

    def _open(self) -> av.CodecContext:
        c = av.CodecContext.create("libx264", "w")
        c.width, c.height, c.pix_fmt = self.source.width, self.source.height, "yuv420p"
        c.time_base = TIME_BASE
        c.framerate = fractions.Fraction(self.source.fps).limit_denominator(1001)
        c.bit_rate = self.bitrate
        c.options = {
            "preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "forced-idr": "1",
            # one thread: a stand-in for a hardware block, not a rival for the cores
            "x264-params": f"keyint={self._keyint}:min-keyint={self._keyint}:scenecut=0:bframes=0"
                           f":repeat-headers=1:threads=1:vbv-maxrate={self.bitrate // 1000}"
                           f":vbv-bufsize={max(1, self.bitrate // 2000)}",
        }
        c.open()
        return c

    async def start(self, sink: Sink) -> None:
        self._codec = self._open()
        self._task = asyncio.ensure_future(self._run(sink))

    def force_key_frame(self) -> None:
        self._force = True

    def set_bitrate(self, bps: int) -> None:
        # libavcodec reconfigures x264 in place when bit_rate changes between frames;
        # the VBV ceiling stays the opening (highest) rate
        self.bitrate = bps
        if self._codec is not None:
            self._codec.bit_rate = bps

    def _encode(self, frame: av.VideoFrame) -> list[av.Packet]:
        t0 = time.thread_time()
        packets = list(self._codec.encode(frame))
        self.encode_cpu_s += time.thread_time() - t0
        return packets

    async def _run(self, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        index = 0
        while True:
            frame = await self.source.next_frame()
            captured = time.monotonic()
            if self._force:
                self._force = False
                self.forced_keyframes += 1
                frame.pict_type = av.video.frame.PictureType.I
            self._inflight[frame.pts] = (getattr(self.source, "frames", index + 1) - 1, captured)
            while len(self._inflight) > 16:
                self._inflight.popitem(last=False)
            index += 1
            for packet in await loop.run_in_executor(self._executor, self._encode, frame):
                frame_index, at = self._inflight.pop(packet.pts, (-1, captured))
                data, keyframe = self._params.fix(bytes(packet))
                self.packets += 1
                self.keyframes += keyframe
                sink(AccessUnit(data, packet.pts, keyframe, frame_index, at))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._executor.shutdown(wait=True)
        self.source.close()


# VIDIOC_S_CTRL and V4L2_CID_MPEG_VIDEO_BITRATE, for the Pi's V4L2 encoder
_VIDIOC_S_CTRL = 0xC008561C
_V4L2_CID_MPEG_VIDEO_BITRATE = 0x009909CF


class Picamera2Encoder:
    """The Raspberry Pi's hardware H.264 encoder through picamera2."""

    def __init__(self, width: int, height: int, fps: float, bitrate: int,
                 keyframe_interval_s: float = KEYFRAME_INTERVAL_S):
        self.width, self.height, self.fps = width, height, fps
        self.bitrate = bitrate
        self.packets = 0
        self.keyframes = 0
        self.forced_keyframes = 0
        self._iperiod = max(1, int(keyframe_interval_s * fps))
        self._params = ParameterSets()
        self._cam = None
        self._encoder = None

    async def start(self, sink: Sink) -> None:
        from picamera2 import Picamera2
        from picamera2.encoders import H264Encoder as HwEncoder
        from picamera2.outputs import Output

        loop = asyncio.get_running_loop()
        owner = self
        t0: list[float] = []

        def deliver(data: bytes, timestamp_us: int | None, at: float) -> None:
            if not t0:
                t0.append(timestamp_us or 0)
            pts = int(((timestamp_us or 0) - t0[0]) * 9 / 100)
            data, keyframe = owner._params.fix(data)
            index = owner.packets
            owner.packets += 1
            owner.keyframes += keyframe
            sink(AccessUnit(data, pts, keyframe, index, at))

        class LoopOutput(Output):
            # called on the encoder's thread: hand the bytes to the loop
            def outputframe(self, frame, keyframe=True, timestamp=None, *args, **kwargs):
                loop.call_soon_threadsafe(deliver, bytes(frame), timestamp, time.monotonic())

        self._cam = Picamera2()
        self._cam.configure(self._cam.create_video_configuration(
            main={"size": (self.width, self.height)}, controls={"FrameRate": self.fps}))
        self._encoder = HwEncoder(bitrate=self.bitrate, repeat=True, iperiod=self._iperiod, profile="baseline")
        self._cam.start_encoder(self._encoder, LoopOutput())
        self._cam.start()

    def force_key_frame(self) -> None:
        if self._encoder is not None:
            self.forced_keyframes += 1
            self._encoder.force_key_frame()

    def set_bitrate(self, bps: int) -> None:
        self.bitrate = bps
        if self._encoder is None:
            return
        self._encoder.bitrate = bps
        device = getattr(self._encoder, "vd", None)  # the V4L2 encoder's file, while running
        if device is None:
            return
        import fcntl
        import struct
        try:
            fcntl.ioctl(device, _VIDIOC_S_CTRL, struct.pack("Ii", _V4L2_CID_MPEG_VIDEO_BITRATE, bps))
        except OSError as exc:
            log.debug("the encoder refused a bitrate change: %s", exc)

    async def stop(self) -> None:
        if self._cam is not None:
            cam, self._cam = self._cam, None
            await asyncio.get_running_loop().run_in_executor(None, cam.stop_encoder)
            cam.stop()
            cam.close()
