"""The pre-encoded video track's bound, and what a caller's codec choice becomes."""

from __future__ import annotations

import pytest

from lkdevice.rtc.video import PacketTrack, codec_preferences


async def test_a_full_queue_waits_for_a_keyframe_and_asks_for_one():
    asked = []
    track = PacketTrack(limit=3, request_keyframe=lambda: asked.append(1))
    track.put(b"\x00\x00\x01\x65k", 0, True)
    track.put(b"\x00\x00\x01\x41a", 1, False)
    track.put(b"\x00\x00\x01\x41b", 2, False)
    track.put(b"\x00\x00\x01\x41c", 3, False)  # the sender is 3 behind: all of it goes
    assert asked == [1] and track.dropped == 4
    track.put(b"\x00\x00\x01\x41d", 4, False)  # no use without its reference
    assert track.dropped == 5
    track.put(b"\x00\x00\x01\x65K", 5, True)
    track.put(b"\x00\x00\x01\x41e", 6, False)
    got = [await track.recv(), await track.recv()]
    assert [bytes(p) for p in got] == [b"\x00\x00\x01\x65K", b"\x00\x00\x01\x41e"]
    assert [p.pts for p in got] == [5, 6] and got[0].time_base.denominator == 90000
    assert asked == [1]


async def test_a_keyframe_into_a_full_queue_replaces_the_backlog():
    track = PacketTrack(limit=2)
    for i, key in enumerate([True, False, True]):
        track.put(bytes([0, 0, 1, 0x65 if key else 0x41]), i, key)
    assert track.dropped == 2
    assert (await track.recv()).pts == 2


def test_codec_preferences_offer_only_the_chosen_codec_and_its_rtx():
    assert {c.mimeType for c in codec_preferences("vp8")} == {"video/VP8", "video/rtx"}
    assert codec_preferences("vp8")[0].mimeType == "video/VP8"
    assert {c.mimeType for c in codec_preferences("h264")} == {"video/H264", "video/rtx"}
    with pytest.raises(ValueError):
        codec_preferences("av1")
