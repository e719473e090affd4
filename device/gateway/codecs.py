"""The device protocol's audio codecs at C speed for the gateway (CPython only).

Bit-exact with `device_protocol` (tests/unit/test_codec_fast.py checks it):
µ-law through numpy lookup tables built from the shared module, IMA ADPCM
through audioop where this Python still has it (removed in 3.13), else the
shared module's pure-Python coder.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import device_protocol as dp

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python 3.13+
        audioop = None

_ulaw_encode: np.ndarray | None = None
_ULAW_DECODE = np.array(dp._ULAW_DECODE, dtype=np.int16)
# audioop packs the first sample in the high nibble, the protocol in the low one
_SWAP_NIBBLES = bytes(((b & 0x0F) << 4) | (b >> 4) for b in range(256))


def _ulaw_table() -> np.ndarray:
    global _ulaw_encode
    if _ulaw_encode is None:
        pcm = np.arange(-32768, 32768, dtype=np.int16)
        out = bytearray(65536)
        dp.ulaw_encode_into(pcm.astype("<i2").tobytes(), out, 65536)
        _ulaw_encode = np.frombuffer(bytes(out), dtype=np.uint8)
    return _ulaw_encode


class FrameCodec:
    """Encode 320 int16 samples into a frame, or decode a checked frame, for one codec."""

    def __init__(self, codec: int):
        self.codec = codec
        self.seq = 0
        self.timestamp = 0
        self._adpcm_state: tuple[int, int] | None = None  # audioop's (predictor, index)
        self._slow = dp.FrameEncoder(codec) if codec == dp.CODEC_ADPCM and audioop is None else None
        if codec == dp.CODEC_ULAW:
            _ulaw_table()

    def _header(self) -> bytes:
        h = bytearray(dp.HEADER_BYTES)
        dp.pack_header(h, self.codec, self.seq, self.timestamp)
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + dp.FRAME_SAMPLES) & 0xFFFFFFFF
        return bytes(h)

    def encode(self, samples: np.ndarray) -> bytes:
        pcm = np.ascontiguousarray(samples, dtype="<i2")
        if self.codec == dp.CODEC_PCM16:
            return self._header() + pcm.tobytes()
        if self.codec == dp.CODEC_ULAW:
            return self._header() + _ulaw_table()[pcm.view(np.uint16) ^ 0x8000].tobytes()
        if self._slow is not None:
            self._slow.seq, self._slow.timestamp = self.seq, self.timestamp
            frame = bytes(self._slow.encode(pcm.tobytes()))
            self._header()
            return frame
        pred, index = self._adpcm_state or (0, 0)
        state = bytes([pred & 0xFF, (pred >> 8) & 0xFF, index, 0])
        codes, self._adpcm_state = audioop.lin2adpcm(pcm.tobytes(), 2, self._adpcm_state)
        return self._header() + state + codes.translate(_SWAP_NIBBLES)

    def decode(self, frame: bytes) -> np.ndarray:
        """The 320 samples of a frame already checked with `check_frame`."""
        if self.codec == dp.CODEC_PCM16:
            return np.frombuffer(frame, dtype="<i2", offset=dp.HEADER_BYTES).copy()
        if self.codec == dp.CODEC_ULAW:
            return _ULAW_DECODE[np.frombuffer(frame, dtype=np.uint8, offset=dp.HEADER_BYTES)]
        if audioop is None:
            out = bytearray(dp.PCM_FRAME_BYTES)
            dp.decode_payload_into(self.codec, frame, out)
            return np.frombuffer(out, dtype="<i2").copy()
        pred = int.from_bytes(frame[8:10], "little", signed=True)
        index = frame[10]
        if index > 88:
            raise dp.ProtocolError(dp.E_BAD_FRAME, f"ADPCM step index {index} is out of range 0..88")
        pcm, _ = audioop.adpcm2lin(frame[12:].translate(_SWAP_NIBBLES), 2, (pred, index))
        return np.frombuffer(pcm, dtype="<i2").copy()
