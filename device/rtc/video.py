"""Published video: raw frames that aiortc encodes, or access units it only packs.

A `LocalVideoTrack` is the publication; what rides the peer connection is a
fresh relay track per session (aiortc stops a sender's track when its session
ends, and the camera must outlive a rejoin). The sender's RTCP is observed, not
replaced: aiortc turns a PLI/FIR into a flag that only its own encoder reads,
so a pre-encoded source would never hear of it; we hand it on as
`on_keyframe_request`, and each receiver report as `on_receiver_report`.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from dataclasses import dataclass
from typing import Callable

import av
from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.rtcrtpsender import RtcpRrPacket, RtcpSrPacket
from livekit.protocol import models

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
CODECS = ("vp8", "h264")
_ENCODER_ATTR = "_RTCRtpSender__encoder"


@dataclass(frozen=True)
class ReceiverReport:
    """One RTCP report block about our stream, as the SFU saw it."""
    fraction_lost: float  # 0..1 since the previous report
    packets_lost: int     # cumulative
    jitter: int           # RTP timestamp units
    highest_sequence: int


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """Our codec first, its RTX after it: the SFU picks the first it supports."""
    if codec not in CODECS:
        raise ValueError(f"video codec must be one of {', '.join(CODECS)}, not {codec!r}")
    caps = RTCRtpSender.getCapabilities("video").codecs
    mime = f"video/{codec}".lower()
    chosen = [c for c in caps if c.mimeType.lower() == mime]
    return chosen + [c for c in caps if c.mimeType.lower() == "video/rtx"]


class _RelayTrack(MediaStreamTrack):
    """What one session's sender reads: the camera's next frame or access unit."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, on_frame: Callable[[], None]):
        super().__init__()
        self._source = source
        self._on_frame = on_frame

    async def recv(self):
        frame = await self._source.recv()
        self._on_frame()
        return frame


class LocalVideoTrack:
    """Our published camera. `track` is the caller's: its `recv()` returns
    `av.VideoFrame`s (encoded by aiortc) or `av.Packet`s (packed as they are)."""

    kind = "video"

    def __init__(self, room, name: str, track: MediaStreamTrack, *, codec: str, width: int, height: int,
                 fps: float, max_bitrate_kbps: int, source: int = models.TrackSource.CAMERA):
        codec_preferences(codec)  # refuse an unknown codec before anything is sent
        self._room = room
        self.name = name
        self.track = track
        self.codec = codec
        self.width = width
        self.height = height
        self.fps = fps
        self.max_bitrate_kbps = max_bitrate_kbps
        self.source = source
        self.muted = False
        self.sid = ""
        self.published = asyncio.Event()
        self.on_keyframe_request: Callable[[], None] | None = None
        self.on_receiver_report: Callable[[ReceiverReport], None] | None = None
        self.keyframe_requests = 0
        self._sender: RTCRtpSender | None = None
        self._capped = False
        self._rtp = _RelayTrack(track, self._after_frame)

    @property
    def cid(self) -> str:
        return self._rtp.id

    def new_rtp_track(self) -> MediaStreamTrack:
        self._capped = False
        self._rtp = _RelayTrack(self.track, self._after_frame)
        return self._rtp

    def add_track_fields(self) -> dict:
        return dict(type=models.TrackType.VIDEO, width=self.width, height=self.height)

    def _encoder(self):
        encoder = getattr(self._sender, _ENCODER_ATTR, None) if self._sender else None
        return encoder if hasattr(encoder, "target_bitrate") else None

    @property
    def encoder_bitrate(self) -> int | None:
        """aiortc's own encoder's bitrate (the raw-frame path), once it has one."""
        encoder = self._encoder()
        return None if encoder is None else encoder.target_bitrate

    def set_encoder_bitrate(self, bps: int) -> bool:
        """Set aiortc's own encoder's bitrate, at most `max_bitrate_kbps` (aiortc
        keeps its own floor: 250 kb/s VP8, 500 kb/s H.264); False if there is none yet."""
        encoder = self._encoder()
        if encoder is None:
            return False
        encoder.target_bitrate = min(bps, self.max_bitrate_kbps * 1000)
        return True

    def _clamp(self) -> bool:
        # aiortc starts its encoder at its own default and follows REMB up: hold our ceiling
        encoder = self._encoder()
        if encoder is None:
            return False
        if encoder.target_bitrate > self.max_bitrate_kbps * 1000:
            encoder.target_bitrate = self.max_bitrate_kbps * 1000
        return True

    def _after_frame(self) -> None:
        if not self._capped:  # aiortc makes its encoder at the first frame it encodes
            self._capped = self._clamp()

    def attach_sender(self, sender: RTCRtpSender) -> None:
        """Observe this session's sender RTCP; aiortc's own handling still runs."""
        self._sender = sender
        handle = sender._handle_rtcp_packet
        request_keyframe = sender._send_keyframe

        # the callbacks are the caller's code: one that raises must not end aiortc's
        # RTCP handling for the transport (no more keyframe requests, no reports)
        async def observed(packet) -> None:
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)) and self.on_receiver_report is not None:
                for r in packet.reports:
                    if r.ssrc == sender._ssrc:
                        report = ReceiverReport(r.fraction_lost / 256.0, r.packets_lost, r.jitter,
                                                r.highest_sequence)
                        _guarded(self.on_receiver_report, report)
            await handle(packet)
            self._clamp()

        def keyframe() -> None:
            self.keyframe_requests += 1
            request_keyframe()  # aiortc's encoder, when it encodes
            if self.on_keyframe_request is not None:
                _guarded(self.on_keyframe_request)

        sender._handle_rtcp_packet = observed
        sender._send_keyframe = keyframe

    async def mute(self) -> None:
        await self._room._set_muted(self, True)

    async def unmute(self) -> None:
        await self._room._set_muted(self, False)


def _guarded(callback: Callable, *args) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("video feedback handler %r failed", callback)


class PacketTrack(MediaStreamTrack):
    """A track of pre-encoded H.264 access units (Annex B, one per `put`).

    Bounded: when the sender falls `limit` units behind, the backlog is dropped,
    a keyframe is asked for, and nothing is queued until it comes (a P-frame
    without its references would only show as corruption)."""

    kind = "video"

    def __init__(self, limit: int = 8, request_keyframe: Callable[[], None] | None = None):
        super().__init__()
        # full: put() drops the backlog and waits for a keyframe (the class docstring)
        self._queue: asyncio.Queue[av.Packet] = asyncio.Queue(maxsize=limit)
        self._awaiting_keyframe = False
        self.request_keyframe = request_keyframe
        self.dropped = 0

    def put(self, data: bytes, pts: int, keyframe: bool, time_base: fractions.Fraction = VIDEO_TIME_BASE) -> None:
        if self.readyState != "live":
            return
        if self._awaiting_keyframe and not keyframe:
            self.dropped += 1
            return
        self._awaiting_keyframe = False
        if self._queue.full():
            self.dropped += self._queue.qsize()
            while not self._queue.empty():
                self._queue.get_nowait()
            if not keyframe:
                self.dropped += 1
                self._awaiting_keyframe = True
                if self.request_keyframe is not None:
                    self.request_keyframe()
                return
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = time_base
        self._queue.put_nowait(packet)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise _media_stream_error()
        return await self._queue.get()


def _media_stream_error():
    from aiortc.mediastreams import MediaStreamError
    return MediaStreamError()
