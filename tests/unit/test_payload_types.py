"""An answer's video codecs get our offer's numbers (livekit-server sends with those)."""

from __future__ import annotations

from aiortc.sdp import SessionDescription

from lkdevice.rtc.payload_types import renumber_answer

HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
AUDIO = ("m=audio 9 UDP/TLS/RTP/SAVPF 96 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na={dir}\r\n"
         "a=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n")
OFFER = HEAD + AUDIO.format(dir="recvonly") + (
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n"
    "a=rtpmap:97 VP8/90000\r\na=rtcp-fb:97 nack pli\r\na=rtpmap:98 rtx/90000\r\na=fmtp:98 apt=97\r\n"
    "a=rtpmap:99 H264/90000\r\na=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    "a=rtpmap:100 rtx/90000\r\na=fmtp:100 apt=99\r\n")
ANSWER = HEAD + AUDIO.format(dir="sendonly") + (
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 125 126 108 109\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n"
    "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
    "a=rtpmap:125 H264/90000\r\na=fmtp:125 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n"
    "a=rtpmap:126 rtx/90000\r\na=fmtp:126 apt=125\r\n"
    "a=rtpmap:108 H264/90000\r\na=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    "a=rtpmap:109 rtx/90000\r\na=fmtp:109 apt=108\r\n"
    "a=ssrc:1 cname:x\r\n")


def codecs(sdp: str, kind: str) -> dict[int, tuple]:
    media = next(m for m in SessionDescription.parse(sdp).media if m.kind == kind)
    return {c.payloadType: (c.mimeType, c.parameters.get("apt"), c.parameters.get("packetization-mode"))
            for c in media.rtp.codecs}


def test_video_codecs_take_the_offers_numbers_and_unoffered_ones_go():
    fixed = renumber_answer(OFFER, ANSWER)
    assert codecs(fixed, "video") == {
        97: ("video/VP8", None, None), 98: ("video/rtx", 97, None),
        99: ("video/H264", None, "1"), 100: ("video/rtx", 99, None),
    }
    assert "m=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100\r\n" in fixed
    assert "a=rtcp-fb:97 nack pli" in fixed and "a=ssrc:1 cname:x" in fixed


def test_audio_and_an_already_matching_answer_are_left_as_they_are():
    assert renumber_answer(OFFER, OFFER.replace("recvonly", "sendonly")) == OFFER.replace("recvonly", "sendonly")
    fixed = renumber_answer(OFFER, ANSWER)
    assert fixed.split("m=video")[0] == ANSWER.split("m=video")[0]


def test_a_sendonly_video_line_of_ours_is_not_touched():
    # our camera's m-line: the server receives (recvonly in its answer); its numbers are its own business
    answer = ANSWER.replace("a=sendonly\r\na=rtpmap:96 VP8", "a=recvonly\r\na=rtpmap:96 VP8")
    assert renumber_answer(OFFER, answer) == answer
