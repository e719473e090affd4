"""The gateway's fast codecs give the same bytes and samples as the shared module."""

import numpy as np
import pytest

from lkdevice.gateway import codecs as codec_fast
from lkdevice import device_protocol as dp


def signal(seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(int(16000 * seconds)) / 16000
    x = 12000 * np.sin(2 * np.pi * 440 * t) + 3000 * rng.standard_normal(len(t))
    x[:320] = 32767  # full scale, then the other rail
    x[320:640] = -32768
    return np.clip(x, -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("codec", [dp.CODEC_PCM16, dp.CODEC_ULAW, dp.CODEC_ADPCM])
def test_fast_frames_equal_the_shared_module(codec):
    x = signal()
    fast = codec_fast.FrameCodec(codec)
    slow = dp.FrameEncoder(codec)
    slow.seq = fast.seq = 65530  # across the wrap
    out = bytearray(dp.PCM_FRAME_BYTES)
    for i in range(0, len(x), 320):
        frame = fast.encode(x[i:i + 320])
        assert frame == bytes(slow.encode(x[i:i + 320].astype("<i2").tobytes())), f"frame {i // 320}"
        dp.check_frame(frame, codec)
        dp.decode_payload_into(codec, frame, out)
        assert np.array_equal(fast.decode(frame), np.frombuffer(out, dtype="<i2"))


def test_adpcm_frames_decode_alone_after_a_loss():
    x = signal()
    fast = codec_fast.FrameCodec(dp.CODEC_ADPCM)
    frames = [fast.encode(x[i:i + 320]) for i in range(0, len(x), 320)]
    rx = codec_fast.FrameCodec(dp.CODEC_ADPCM)
    whole = [rx.decode(f) for f in frames]
    assert np.array_equal(rx.decode(frames[30]), whole[30])  # frame 29 "lost"
