"""Opus voice encoding at the source's own rate, for aiortc's pre-encoded path.

aiortc's own encoder takes every track to 48 kHz stereo at 96 kb/s: a 16 kHz
microphone pays a resample to 48 kHz and a stereo encode for a voice that
holds 8 kHz of band. libopus encodes mono at 8, 12, 16, 24 or 48 kHz natively
and any decoder plays the packets at its own rate, so the SDP's opus/48000/2
stays true. What stays 48 kHz is the RTP clock (RFC 7587): packets carry pts
in samples of the encoder's rate with that time base, and aiortc's
`OpusEncoder.pack()` scales them to 48 kHz when a track's `recv()` returns an
`av.Packet` instead of a frame.
"""

from __future__ import annotations

import fractions
import logging
import math

import av
import numpy as np

log = logging.getLogger(__name__)

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
RTP_RATE = 48000
# LiveKit's "speech" audio preset; wideband voice is transparent well below it
DEFAULT_BITRATE = 24000
# loss the encoder plans for: libopus then adds an in-band FEC (LBRR) copy of each frame to
# the next packet, which a receiver's libopus rebuilds a lost frame from (libwebrtc's NetEq
# does for any Opus packet that carries one, whatever the SDP says)
DEFAULT_EXPECTED_LOSS = 10
MIN_LEVEL = -127  # RFC 6464: dBov, -127 is silence


def audio_level(pcm: np.ndarray) -> int:
    """The RFC 6464 level of int16 PCM in dBov (-127 ... 0), as aiortc computes it for frames."""
    x = pcm.astype(np.float64)
    rms = math.sqrt(float(np.dot(x, x)) / max(1, len(x))) / 32767
    if rms <= 0:
        return MIN_LEVEL
    return round(max(MIN_LEVEL, min(0.0, 20 * math.log10(rms))))


def carry_audio_level(sender, track) -> None:
    """Put the track's level into the RTP audio-level extension on aiortc's packet path.

    aiortc measures the level only of frames it encodes itself (in a pure-Python
    loop over the samples); for packets it sends none, and the SFU, which ranks
    active speakers by it, takes the device for silent. A track with an
    `audio_level` attribute (the level of what its last `recv()` returned) gets
    it copied into the encoded frame the sender is about to packetize.
    """
    if not hasattr(track, "audio_level"):
        return
    inner = getattr(sender, "_next_encoded_frame", None)
    if inner is None:  # an aiortc without it: packets still go out, only without a level
        log.warning("aiortc's RTCRtpSender has no _next_encoded_frame; sending no audio level")
        return

    async def with_level(codec):
        encoded = await inner(codec)
        if encoded is not None and encoded.audio_level is None:
            encoded.audio_level = track.audio_level
        return encoded

    sender._next_encoded_frame = with_level


class VoiceEncoder:
    """Mono int16 PCM in frames of `frame_ms` at `sample_rate` to one Opus packet each."""

    def __init__(self, sample_rate: int = 16000, *, bitrate: int = DEFAULT_BITRATE, frame_ms: int = 20,
                 application: str = "voip", expected_loss: int = DEFAULT_EXPECTED_LOSS):
        if sample_rate not in OPUS_RATES:
            raise ValueError(f"Opus encodes at {OPUS_RATES} Hz, not {sample_rate}")
        if frame_ms not in (10, 20, 40, 60):
            raise ValueError(f"frame_ms must be 10, 20, 40 or 60, not {frame_ms}")
        self.sample_rate = sample_rate
        self.bitrate = bitrate
        self.frame_size = sample_rate * frame_ms // 1000
        self.time_base = fractions.Fraction(1, sample_rate)
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = sample_rate
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = bitrate
        ctx.time_base = self.time_base
        options = {"application": application, "frame_duration": str(frame_ms)}
        if expected_loss > 0:
            options |= {"fec": "1", "packet_loss": str(min(100, expected_loss))}
        ctx.options = options
        ctx.open()
        self._ctx = ctx
        # one frame, refilled: libopus codes it within encode() and keeps no reference
        self._frame = av.AudioFrame(format="s16", layout="mono", samples=self.frame_size)
        self._frame.sample_rate = sample_rate
        self.packets = 0
        self.bytes = 0
        self.last_level = MIN_LEVEL  # of the last frame encoded, for the RTP audio-level extension

    def encode(self, pcm: np.ndarray, pts: int) -> av.Packet:
        """One frame of `frame_size` samples, captured at `pts` (in samples), to its packet."""
        if len(pcm) != self.frame_size:
            raise ValueError(f"a frame is {self.frame_size} samples, not {len(pcm)}")
        frame = self._frame
        frame.planes[0].update(np.ascontiguousarray(pcm, dtype=np.int16))
        frame.pts = pts
        packets = self._ctx.encode(frame)
        if len(packets) != 1:  # libopus codes each whole frame at once; anything else is a bug
            raise RuntimeError(f"libopus returned {len(packets)} packets for one frame")
        self.last_level = audio_level(pcm)
        packet = packets[0]
        # the encoder's own pts is shifted by its lookahead; the RTP timestamp is the capture time
        packet.pts = pts
        packet.time_base = self.time_base
        self.packets += 1
        self.bytes += packet.size
        return packet

    @property
    def average_bitrate(self) -> float:
        """Bits per second of what was encoded so far (payload only)."""
        if not self.packets:
            return 0.0
        return self.bytes * 8 * self.sample_rate / (self.packets * self.frame_size)
