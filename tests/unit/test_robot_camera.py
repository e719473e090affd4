"""The test pattern's stamp survives real lossy coding and reads back; bad reads are refused."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from lkdevice.robot.camera import PatternStamp, TestPattern, draw_pattern, read_pattern
from lkdevice.robot.encoder import ParameterSets, nal_units
from lkdevice.robot.options import VideoOptions
from lkdevice.robot.video import choose_path


def luma(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray()[: frame.height]


def test_a_clean_picture_reads_back_exactly():
    y = np.zeros((120, 160), dtype=np.uint8)
    draw_pattern(y, 0xABCDEF, 0xFEDCBA98)
    assert read_pattern(y) == PatternStamp(0xABCDEF, 0xFEDCBA98)


def test_noise_does_not_change_the_reading():
    rng = np.random.default_rng(1)
    y = np.zeros((240, 320), dtype=np.uint8)
    draw_pattern(y, 1234, 5678)
    noisy = np.clip(y.astype(np.int16) + rng.normal(0, 30, y.shape), 0, 255).astype(np.uint8)
    assert read_pattern(noisy) == PatternStamp(1234, 5678)


def test_a_flipped_block_is_refused_not_misread():
    y = np.zeros((120, 160), dtype=np.uint8)
    draw_pattern(y, 77, 99)
    ys, xs = 60 // 4, 160 // 16
    for r in range(4):
        for c in range(16):
            flipped = y.copy()
            block = flipped[r * ys:(r + 1) * ys, c * xs:(c + 1) * xs]
            block[:] = 251 - block
            assert read_pattern(flipped) is None, (r, c)


def test_a_picture_without_a_stamp_reads_as_none():
    assert read_pattern(np.full((120, 160), 128, dtype=np.uint8)) is None
    assert read_pattern(np.random.default_rng(2).integers(0, 256, (120, 160)).astype(np.uint8)) is None


@pytest.mark.parametrize("codec,bitrate", [("libvpx", 60_000), ("libx264", 60_000)])
def test_the_stamp_survives_low_bitrate_coding(codec, bitrate):
    pattern = TestPattern(160, 120, 15)
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = 160, 120, "yuv420p"
    enc.time_base = fractions.Fraction(1, 15)
    enc.bit_rate = bitrate
    enc.options = {"tune": "zerolatency", "preset": "ultrafast"} if codec == "libx264" else {"deadline": "realtime"}
    dec = av.CodecContext.create("vp8" if codec == "libvpx" else "h264", "r")
    read = []
    for i in range(30):
        frame = pattern.render(i, 1_000_000 + 66 * i)
        frame.pts = i
        for packet in enc.encode(frame):
            for out in dec.decode(packet):
                read.append(read_pattern(luma(out)))
    assert len(read) >= 25
    assert [s.counter for s in read if s] == list(range(len(read)))[: len([s for s in read if s])]
    assert sum(s is not None for s in read) >= 0.9 * len(read)


def test_age_is_measured_across_the_wrap():
    assert PatternStamp(0, (1 << 32) - 10).age_ms(now=((1 << 32) + 30) / 1000) == 40.0


def test_sps_and_pps_go_in_front_of_an_idr_that_lacks_them():
    p = ParameterSets()
    sps, pps, idr, slice_ = b"\x67\x42\x00\x1f", b"\x68\xce", b"\x65\x88\x80", b"\x41\x9a"
    first, key = p.fix(b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps + b"\x00\x00\x00\x01" + idr)
    assert key and p.inserted == 0
    assert p.fix(b"\x00\x00\x00\x01" + slice_) == (b"\x00\x00\x00\x01" + slice_, False)
    fixed, key = p.fix(b"\x00\x00\x00\x01" + idr)
    assert key and p.inserted == 1
    assert [t for _, t in nal_units(fixed)] == [7, 8, 5]
    assert fixed == first


PI4 = "Raspberry Pi 4 Model B Rev 1.4"
PI5 = "Raspberry Pi 5 Model B Rev 1.0"


@pytest.mark.parametrize("camera,model,installed,codec,why", [
    ("picamera2", PI4, True, "passthrough", "hardware H.264 encoder of the Raspberry Pi 4"),
    ("picamera2", PI5, True, "vp8", "Raspberry Pi 5 Model B Rev 1.0 has no hardware H.264 encoder"),
    ("picamera2", None, True, "vp8", "not a Raspberry Pi"),
    ("picamera2", PI4, False, "vp8", "picamera2 is not installed"),
    ("test", PI4, True, "vp8", "raw frames"),
    ("v4l2:/dev/video0", PI4, True, "vp8", "raw frames"),
])
def test_auto_picks_passthrough_only_where_a_hardware_encoder_exists(camera, model, installed, codec, why):
    chosen, reason = choose_path(VideoOptions(camera=camera, codec="auto"), model, installed)
    assert chosen == codec
    assert why in reason and "\n" not in reason


def test_an_explicit_codec_is_kept_and_passthrough_refuses_a_raw_camera():
    assert choose_path(VideoOptions(camera="test", codec="h264"), PI5, False)[0] == "h264"
    with pytest.raises(ValueError):
        choose_path(VideoOptions(camera="v4l2:/dev/video0", codec="passthrough"), PI4, True)


class _BurstCamera:
    """A capture thread that delivers faster than anyone reads, then fails."""

    @staticmethod
    def make(count: int):
        from lkdevice.robot.camera import _ThreadedSource

        class Burst(_ThreadedSource):
            def _capture(self):
                for i in range(count):
                    frame = av.VideoFrame(64, 32, "yuv420p")
                    frame.planes[0].update(bytes([i]) * frame.planes[0].buffer_size)
                    self._hand_over(frame)
                raise OSError("unplugged")

        cam = Burst(64, 32, 30)
        cam._start()
        return cam


async def test_a_threaded_camera_keeps_only_the_newest_frames_and_reports_its_end():
    import asyncio

    cam = _BurstCamera.make(50)
    for _ in range(500):  # until the thread has handed everything over and the loop queued it
        if cam.dropped == 49:
            break
        await asyncio.sleep(0.01)
    newest = await cam.next_frame()
    assert cam.dropped == 49  # two slots, oldest dropped first: the last frame and the failure are left
    assert int(luma(newest)[0, 0]) == 49
    assert newest.pts is not None and newest.time_base.denominator == 90000
    with pytest.raises(RuntimeError, match="unplugged"):
        await cam.next_frame()
