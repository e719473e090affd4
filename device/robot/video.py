"""The robot's camera in the room: software encoding by aiortc, or the camera's own H.264 passed through.

`start_video` picks the path (`auto`: pass-through where a hardware H.264
encoder exists, else software), publishes, and wires the feedback aiortc does
not: keyframe requests to the camera's encoder, receiver reports through the
loss-driven bitrate controller to whichever encoder runs.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Callable

from aiortc import MediaStreamTrack

from ..rtc.room import Room
from ..rtc.video import LocalVideoTrack, PacketTrack, ReceiverReport

from .bitrate import BitrateController
from .camera import FrameSource, TestPattern, open_camera
from .encoder import AccessUnit, H264Encoder, LibX264Encoder, Picamera2Encoder
from .options import VideoOptions

SOFTWARE_CODEC = "vp8"
DEVICE_MODEL = Path("/proc/device-tree/model")


def device_model(path: Path = DEVICE_MODEL) -> str | None:
    try:
        return path.read_bytes().rstrip(b"\0").decode(errors="replace").strip() or None
    except OSError:
        return None


def choose_path(options: VideoOptions, model: str | None, picamera2_installed: bool) -> tuple[str, str]:
    """(codec, one line saying why) for `options.codec`; pure, so every case is testable."""
    if options.codec != "auto":
        if options.codec == "passthrough" and options.camera.startswith("v4l2:"):
            raise ValueError("passthrough needs a camera with an H.264 encoder: picamera2, or test (libx264)")
        return options.codec, f"{options.codec}: asked for"
    soft = SOFTWARE_CODEC
    if options.camera != "picamera2":
        return soft, f"auto: software {soft}: camera {options.camera!r} gives raw frames (no hardware H.264 encoder)"
    if not picamera2_installed:
        return soft, f"auto: software {soft}: picamera2 is not installed"
    if model is None or "Raspberry Pi" not in model:
        return soft, f"auto: software {soft}: not a Raspberry Pi ({model or 'unknown model'})"
    if "Raspberry Pi 5" in model:
        return soft, f"auto: software {soft}: the {model} has no hardware H.264 encoder"
    return "passthrough", f"auto: passthrough: the hardware H.264 encoder of the {model}"


class FrameTrack(MediaStreamTrack):
    """Raw frames from a camera, for aiortc to encode."""

    kind = "video"

    def __init__(self, source: FrameSource, on_frame: Callable[[], None]):
        super().__init__()
        self.source = source
        self._on_frame = on_frame

    async def recv(self):
        frame = await self.source.next_frame()
        self._on_frame()
        return frame


class VideoPublisher:
    def __init__(self, room: Room, options: VideoOptions, codec: str, reason: str, log: logging.Logger,
                 clock: Callable[[], float] = time.monotonic):
        self.room = room
        self.options = options
        self.codec = codec
        self.reason = reason
        self.log = log
        self._clock = clock
        max_bps = options.bitrate_kbps * 1000
        self.controller = BitrateController(max_bps=max_bps, min_bps=min(100_000, max_bps))
        self.track: LocalVideoTrack | None = None
        self.encoder: H264Encoder | None = None
        self.source: FrameSource | None = None
        self.frames = 0
        self.last_fraction_lost: float | None = None
        self.keyframe_times: list[float] = []  # the newest few, for whoever measures PLI response
        # test and bench hook: every access unit the camera's encoder produced
        self.tap: Callable[[AccessUnit], None] | None = None
        self._packets: PacketTrack | None = None

    async def _start(self) -> None:
        o = self.options
        if self.codec == "passthrough":
            if o.camera == "picamera2":
                self.encoder = Picamera2Encoder(o.width, o.height, o.fps, self.controller.target)
            else:
                self.source = TestPattern(o.width, o.height, o.fps) if o.camera == "test" else \
                    open_camera(o.camera, o.width, o.height, o.fps)
                self.encoder = LibX264Encoder(self.source, self.controller.target)
            self._packets = PacketTrack(request_keyframe=self.encoder.force_key_frame)
            self.track = await self.room.publish_video(
                self._packets, codec="h264", width=o.width, height=o.height, fps=o.fps,
                max_bitrate_kbps=o.bitrate_kbps)
            self.track.on_keyframe_request = self.encoder.force_key_frame
            await self.encoder.start(self._on_access_unit)
        else:
            self.source = open_camera(o.camera, o.width, o.height, o.fps)
            self.track = await self.room.publish_video(
                FrameTrack(self.source, self._on_raw_frame), codec=self.codec, width=o.width, height=o.height,
                fps=o.fps, max_bitrate_kbps=o.bitrate_kbps)
        self.track.on_receiver_report = self._on_report

    def _on_access_unit(self, au: AccessUnit) -> None:
        self.frames += 1
        if au.keyframe:
            self.keyframe_times.append(self._clock())
            del self.keyframe_times[:-32]
        if self.tap is not None:
            self.tap(au)
        self._packets.put(au.data, au.pts, au.keyframe)

    def _on_raw_frame(self) -> None:
        self.frames += 1

    def _on_report(self, report: ReceiverReport) -> None:
        self.last_fraction_lost = report.fraction_lost
        bps = self.controller.on_report(report.fraction_lost, self._clock())
        if bps is None:
            return
        self.log.debug("video bitrate %d kb/s (%.0f %% lost)", bps // 1000, 100 * report.fraction_lost)
        if self.encoder is not None:
            self.encoder.set_bitrate(bps)
        elif self.track is not None:
            self.track.set_encoder_bitrate(bps)

    def stats(self) -> dict:
        e = self.encoder
        return {
            "codec": self.codec,
            "width": self.options.width,
            "height": self.options.height,
            "fps": self.options.fps,
            "frames": self.frames,
            "bitrate_bps": int(self.controller.bitrate),
            "receiver_reports": self.controller.reports,
            "fraction_lost": self.last_fraction_lost,
            "keyframe_requests": self.track.keyframe_requests if self.track else 0,
            "encoder_bitrate_bps": e.bitrate if e else (self.track.encoder_bitrate if self.track else None),
            "access_units": e.packets if e else None,
            "keyframes": e.keyframes if e else None,
            "forced_keyframes": e.forced_keyframes if e else None,
            "dropped_access_units": self._packets.dropped if self._packets else None,
        }

    async def close(self) -> None:
        if self.track is not None:
            try:
                await self.room.unpublish_track(self.track)
            except Exception as exc:  # a room on its way out: nothing left to unpublish from
                self.log.debug("could not unpublish the camera: %s", exc)
        if self.encoder is not None:
            await self.encoder.stop()
        elif self.source is not None:
            self.source.close()
        if self._packets is not None:
            self._packets.stop()


async def start_video(room: Room, options: VideoOptions, log: logging.Logger) -> VideoPublisher:
    """Publish the camera `options` names on `room`; logs which path and why in one line."""
    codec, reason = choose_path(options, device_model(), importlib.util.find_spec("picamera2") is not None)
    log.info("video: %s", reason)
    publisher = VideoPublisher(room, options, codec, reason, log)
    try:
        await publisher._start()
    except BaseException:
        await publisher.close()
        raise
    return publisher
