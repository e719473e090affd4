"""What the robot's camera publishes: one value shared by the command line, the config file and the video path."""

from __future__ import annotations

from dataclasses import dataclass

CAMERAS = ("test", "picamera2", "v4l2:<device>", "none")
VIDEO_CODECS = ("vp8", "h264", "passthrough", "auto")


@dataclass(frozen=True)
class VideoOptions:
    # "test" (synthetic pattern carrying a frame counter and a capture timestamp),
    # "picamera2", "v4l2:/dev/videoN", or "none"
    camera: str = "test"
    # vp8 / h264: raw frames encoded by aiortc; passthrough: the camera's own H.264
    # published as it is; auto: passthrough where a hardware encoder exists, else software
    codec: str = "auto"
    width: int = 640
    height: int = 480
    fps: int = 30
    bitrate_kbps: int = 1000
