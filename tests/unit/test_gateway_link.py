"""The gateway's per-device policy, without sockets: order, rate, strikes, queues."""

import pytest

from lkdevice import device_protocol as dp
from lkdevice.gateway.link import BURST_FRAMES, FrameRejected, Outbox, UplinkGuard


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def frame(seq: int, codec: int = dp.CODEC_ULAW) -> bytes:
    enc = dp.FrameEncoder(codec)
    enc.seq = seq
    return bytes(enc.encode(bytes(640)))


def realtime(guard: UplinkGuard, clock: Clock, seqs) -> list[int]:
    out = []
    for s in seqs:
        clock.now += 0.02
        out.append(guard.check_audio(frame(s)))
    return out


def test_in_order_frames_pass_and_gaps_count_as_loss():
    clock = Clock()
    g = UplinkGuard(dp.CODEC_ULAW, clock)
    assert realtime(g, clock, [10, 11, 12, 15, 16]) == [10, 11, 12, 15, 16]
    assert (g.frames, g.lost) == (5, 2)


def test_sequence_wraps_around():
    clock = Clock()
    g = UplinkGuard(dp.CODEC_ULAW, clock)
    realtime(g, clock, [65534, 65535, 0, 1])
    assert (g.frames, g.lost) == (4, 0)


def test_out_of_order_and_duplicate_are_rejected_non_fatally():
    clock = Clock()
    g = UplinkGuard(dp.CODEC_ULAW, clock)
    realtime(g, clock, [5, 6])
    clock.now += 0.5
    with pytest.raises(FrameRejected) as exc:
        g.check_audio(frame(5))
    assert (exc.value.code, exc.value.seq, exc.value.fatal) == (dp.E_OUT_OF_ORDER, 5, False)
    clock.now += 0.5
    with pytest.raises(FrameRejected) as exc:
        g.check_audio(frame(6))
    assert exc.value.code == dp.E_OUT_OF_ORDER and not exc.value.fatal
    assert realtime(g, clock, [7]) == [7]


def test_three_bad_frames_within_a_second_are_fatal():
    clock = Clock()
    g = UplinkGuard(dp.CODEC_ULAW, clock)
    bad = b"\x01\x01\x00\x00" + bytes(10)
    for _ in range(2):
        with pytest.raises(FrameRejected) as exc:
            g.check_audio(bad)
        assert not exc.value.fatal and exc.value.code == dp.E_BAD_FRAME
        clock.now += 0.1
    with pytest.raises(FrameRejected) as exc:
        g.check_audio(bad)
    assert exc.value.fatal


def test_wrong_codec_and_oversize():
    g = UplinkGuard(dp.CODEC_ULAW, Clock())
    with pytest.raises(FrameRejected) as exc:
        g.check_audio(frame(1, dp.CODEC_PCM16))
    assert exc.value.code == dp.E_BAD_FRAME and "ulaw" in exc.value.message
    with pytest.raises(FrameRejected) as exc:
        g.check_audio(b"\x01" * 5000)
    assert exc.value.code == dp.E_TOO_LARGE and exc.value.fatal


def test_faster_than_real_time_is_dropped_past_the_burst_and_reported_once_a_second():
    clock = Clock()
    g = UplinkGuard(dp.CODEC_ULAW, clock)
    accepted, reports = 0, 0
    for s in range(200):  # 200 frames in 0.2 s: 4 s of audio
        clock.now += 0.001
        try:
            g.check_audio(frame(s))
            accepted += 1
        except FrameRejected as exc:
            assert exc.code == dp.E_RATE and not exc.fatal
            reports += exc.report
    assert BURST_FRAMES <= accepted <= BURST_FRAMES + 12
    assert reports == 1
    # back at real time, frames pass again
    clock.now += 1.0
    assert realtime(g, clock, [500, 501]) == [500, 501]


def test_resync_accepts_any_seq_after_a_new_link():
    clock = Clock()
    g = UplinkGuard(dp.CODEC_ULAW, clock)
    realtime(g, clock, [100, 101])
    g.resync()
    assert realtime(g, clock, [3]) == [3]


def test_control_flood_is_fatal():
    clock = Clock()
    g = UplinkGuard(dp.CODEC_ULAW, clock)
    with pytest.raises(FrameRejected) as exc:
        for _ in range(500):
            g.check_control()
    assert exc.value.fatal and exc.value.code == dp.E_RATE


def test_outbox_sends_control_first_and_drops_oldest_audio():
    box = Outbox(control_limit=2, audio_limit=3)
    for i in range(5):
        box.put_audio(bytes([i]))
    assert box.put_control("a") and box.put_control("b")
    assert not box.put_control("c")
    assert [box.pop() for _ in range(6)] == ["a", "b", b"\x02", b"\x03", b"\x04", None]
    assert box.audio_dropped == 2 and box.control_dropped == 1
