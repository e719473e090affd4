"""Opus decoding for playout: libopus (through opuslib) at the caller's own rate, with in-band FEC.

libopus decodes natively at 8, 12, 16, 24 or 48 kHz, so a 16 kHz reader pays
neither a 48 kHz decode nor a resample. A lost packet whose successor is
already held is rebuilt from that successor's in-band FEC copy (the LBRR
frame a SILK/hybrid encoder sends when it expects loss; libwebrtc senders do),
which sounds like the lost audio, not like libopus's guess at it (PLC).

opuslib needs the system libopus (Debian `libopus0`). Without it, playout
falls back to PyAV's bundled libopus (`PyAVDecoder`): 48 kHz, resampled, PLC only.
"""

from __future__ import annotations

import logging
from typing import Protocol

import av
import numpy as np

from .audio import FRAME_MS, OPUS_RATE, Resampler

log = logging.getLogger(__name__)

NATIVE_RATES = (8000, 12000, 16000, 24000, 48000)
MAX_FRAME_S = 0.12  # the longest Opus packet


def opus_samples(payload: bytes, rate: int = OPUS_RATE) -> int | None:
    """Duration of an Opus packet in samples at `rate`, from its TOC (RFC 6716 3.1)."""
    if not payload:
        return None
    toc = payload[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        tenths = (100, 200, 400, 600)[config % 4]
    elif config < 16:  # hybrid: 10, 20 ms
        tenths = (100, 200)[config % 2]
    else:  # CELT: 2.5, 5, 10, 20 ms
        tenths = (25, 50, 100, 200)[config % 4]
    code = toc & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    elif len(payload) >= 2:
        count = payload[1] & 0x3F
    else:
        return None
    return rate * tenths * count // 10000 or None


class Decoder(Protocol):
    rate: int  # of what comes out
    decode_rate: int  # what libopus decodes at
    resampler: Resampler | None
    errors: int
    recovers: bool  # whether `recover` uses FEC (else it conceals)

    def decode(self, payload: bytes) -> np.ndarray: ...

    def recover(self, next_payload: bytes, samples: int) -> np.ndarray: ...

    def conceal(self, samples: int) -> np.ndarray: ...

    def silence(self, samples: int) -> np.ndarray: ...


def _load():
    import opuslib  # raises if ctypes finds no libopus

    return opuslib


_opuslib = None
_tried = False


def opuslib_module():
    """opuslib if the system libopus loads, else None (said once, in the log)."""
    global _opuslib, _tried
    if not _tried:
        _tried = True
        try:
            _opuslib = _load()
        except Exception as exc:  # opuslib raises a bare Exception when libopus is missing
            log.warning("no system libopus (%s): decoding Opus with PyAV at 48 kHz, resampled, "
                        "without FEC; install libopus0 for native-rate decoding", exc)
    return _opuslib


def make_decoder(rate: int) -> Decoder:
    lib = opuslib_module()
    return OpuslibDecoder(rate, lib) if lib is not None else PyAVDecoder(rate)


class OpuslibDecoder:
    """Opus packets to mono int16 at `rate`; sample counts in and out of `conceal`/`recover`
    are at 48 kHz (the RTP clock), as the jitter buffer counts them."""

    def __init__(self, rate: int, lib):
        self.rate = rate
        self.decode_rate = rate if rate in NATIVE_RATES else OPUS_RATE
        self.resampler = Resampler(rate) if self.decode_rate != rate else None
        self._lib = lib
        self._dec = lib.Decoder(self.decode_rate, 1)  # owns the libopus state, frees it
        self._max = int(self.decode_rate * MAX_FRAME_S)
        # libopus writes into this; opuslib's own decode() copies through a list of ints
        self._buf = np.empty(self._max, np.int16)
        self._ptr = self._buf.ctypes.data_as(lib.api.c_int16_pointer)
        self._opus_decode = lib.api.decoder.libopus_decode
        self._started = False
        self.errors = 0
        self.recovers = True

    def _at_rate(self, samples: int) -> int:
        """`samples` at 48 kHz in samples at the decode rate, rounded up to the 2.5 ms
        steps libopus conceals in (it refuses other sizes)."""
        step = self.decode_rate // 400
        return max(1, -(-samples * self.decode_rate // OPUS_RATE // step)) * step

    def _decode(self, data: bytes, samples: int, fec: bool = False) -> np.ndarray:
        n = self._opus_decode(self._dec.decoder_state, data, len(data), self._ptr, samples, int(fec))
        if n < 0:
            raise self._lib.OpusError(n)
        out = self._buf[:n].copy()
        return self.resampler.resample(out, self.decode_rate) if self.resampler else out

    def decode(self, payload: bytes) -> np.ndarray:
        try:
            pcm = self._decode(payload, self._max)
        except self._lib.OpusError:
            self.errors += 1
            return self.conceal(opus_samples(payload) or OPUS_RATE * FRAME_MS // 1000)
        self._started = True
        return pcm

    def recover(self, next_payload: bytes, samples: int) -> np.ndarray:
        """The lost `samples` just before `next_payload`, from its FEC copy (libopus
        conceals instead when the packet carries none)."""
        if not self._started:
            return self.silence(samples)
        try:
            return self._decode(next_payload, self._at_rate(samples), fec=True)
        except self._lib.OpusError:
            self.errors += 1
            return self.conceal(samples)

    def conceal(self, samples: int) -> np.ndarray:
        if not self._started:
            return self.silence(samples)
        try:
            return self._decode(b"", self._at_rate(samples))  # no data: libopus PLC
        except self._lib.OpusError:
            self.errors += 1
            return self.silence(samples)

    def silence(self, samples: int) -> np.ndarray:
        return np.zeros(samples * self.rate // OPUS_RATE, np.int16)


class PyAVDecoder:
    """The fallback: FFmpeg's libopus wrapper, which always decodes at 48 kHz and never asks
    for FEC, so other rates go through swresample and loss is PLC: a packet holding only a
    TOC byte is, to libopus, a lost frame of that TOC's duration."""

    def __init__(self, rate: int):
        self.rate = rate
        self.decode_rate = OPUS_RATE
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.sample_rate = OPUS_RATE
        self._codec.layout = "mono"
        self._codec.format = "s16"
        self.resampler = Resampler(rate) if rate != OPUS_RATE else None
        self._toc: int | None = None
        self.errors = 0
        self.recovers = False

    def decode(self, payload: bytes) -> np.ndarray:
        self._toc = payload[0]
        try:
            frames = self._codec.decode(av.Packet(payload))
        except av.FFmpegError:
            self.errors += 1
            return self.conceal(opus_samples(payload) or OPUS_RATE * FRAME_MS // 1000)
        return self._out(frames)

    def recover(self, next_payload: bytes, samples: int) -> np.ndarray:
        return self.conceal(samples)

    def conceal(self, samples: int) -> np.ndarray:
        if self._toc is None:
            return self.silence(samples)
        toc = self._toc & 0xFC  # code 0: one frame, and no frame data = lost
        per = opus_samples(bytes([toc])) or samples
        frames: list[av.AudioFrame] = []
        for _ in range(max(1, -(-samples // per))):
            try:
                frames += self._codec.decode(av.Packet(bytes([toc])))
            except av.FFmpegError:
                self.errors += 1
                return self.silence(samples)
        return self._out(frames)

    def silence(self, samples: int) -> np.ndarray:
        pcm = np.zeros(samples, np.int16)
        return self.resampler.resample(pcm, OPUS_RATE) if self.resampler else pcm

    def _out(self, frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, np.int16)
        if self.resampler:
            return np.concatenate([self.resampler.resample_frame(f) for f in frames])
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)
