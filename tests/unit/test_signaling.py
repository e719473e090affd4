"""device/signaling.py: join query, URL normalisation, SignalProtocol in and out."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs

import pytest
from livekit.protocol import models, rtc

from lkdevice.rtc.errors import ProtocolError
from lkdevice.rtc.signaling import (CLIENT_PROTOCOL, MAX_SIGNAL_MESSAGE, PROTOCOL_VERSION, JoinOptions,
                                SignalProtocol, join_query, signal_url, validate_url)


def decode_join_query(query: str) -> rtc.JoinRequest:
    assert query.startswith("join_request=")
    value = query[len("join_request="):]
    # must be base64url: no characters that need escaping in a query string
    assert "+" not in value and "/" not in value
    wrapped = rtc.WrappedJoinRequest()
    wrapped.ParseFromString(base64.urlsafe_b64decode(value))
    assert wrapped.compression == rtc.WrappedJoinRequest.Compression.NONE
    req = rtc.JoinRequest()
    req.ParseFromString(wrapped.join_request)
    return req


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def response(**kwargs) -> bytes:
    return rtc.SignalResponse(**kwargs).SerializeToString()


def request(data: bytes) -> rtc.SignalRequest:
    req = rtc.SignalRequest()
    req.ParseFromString(data)
    return req


# -- join query -----------------------------------------------------------------

def test_join_query_decodes_to_first_join_request():
    q = join_query(JoinOptions(auto_subscribe=False, attributes={"role": "robot", "fw": "1.2"},
                               metadata='{"x":1}', device_model="esp32-s3"))
    req = decode_join_query(q)
    assert req.connection_settings.auto_subscribe is False
    assert dict(req.participant_attributes) == {"role": "robot", "fw": "1.2"}
    assert req.metadata == '{"x":1}'
    assert req.client_info.client_protocol == CLIENT_PROTOCOL == 0
    assert req.client_info.protocol == PROTOCOL_VERSION
    assert req.client_info.device_model == "esp32-s3"
    assert req.client_info.version
    assert req.reconnect is False
    assert req.participant_sid == ""


def test_join_query_default_auto_subscribes():
    req = decode_join_query(join_query(JoinOptions()))
    assert req.connection_settings.auto_subscribe is True
    assert dict(req.participant_attributes) == {}


def test_join_query_is_a_single_query_parameter():
    q = join_query(JoinOptions(attributes={"k" * 50: "v" * 200}))
    parsed = parse_qs(q)
    assert list(parsed) == ["join_request"]
    assert len(parsed["join_request"]) == 1


def test_join_query_when_resuming():
    q = join_query(JoinOptions(), reconnect=True, participant_sid="PA_abc",
                   reconnect_reason=models.ReconnectReason.RR_SIGNAL_DISCONNECTED)
    req = decode_join_query(q)
    assert req.reconnect is True
    assert req.participant_sid == "PA_abc"
    assert req.reconnect_reason == models.ReconnectReason.RR_SIGNAL_DISCONNECTED


# -- URLs -------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("ws://localhost:7880", "ws://localhost:7880/rtc/v1"),
    ("wss://example.livekit.cloud", "wss://example.livekit.cloud/rtc/v1"),
    ("http://localhost:7880", "ws://localhost:7880/rtc/v1"),
    ("https://example.livekit.cloud", "wss://example.livekit.cloud/rtc/v1"),
    ("wss://example.livekit.cloud/", "wss://example.livekit.cloud/rtc/v1"),
    ("https://example.livekit.cloud//", "wss://example.livekit.cloud/rtc/v1"),
    ("wss://example.livekit.cloud/rtc", "wss://example.livekit.cloud/rtc/v1"),
    ("wss://example.livekit.cloud/rtc/", "wss://example.livekit.cloud/rtc/v1"),
    ("wss://example.livekit.cloud/rtc/v1", "wss://example.livekit.cloud/rtc/v1"),
    ("https://example.livekit.cloud/rtc/v1/", "wss://example.livekit.cloud/rtc/v1"),
])
def test_signal_url_normalisation(url, expected):
    assert signal_url(url) == expected


@pytest.mark.parametrize("url, expected", [
    ("ws://localhost:7880", "http://localhost:7880/rtc/v1/validate"),
    ("wss://example.livekit.cloud/", "https://example.livekit.cloud/rtc/v1/validate"),
    ("http://localhost:7880/rtc", "http://localhost:7880/rtc/v1/validate"),
    ("https://example.livekit.cloud/rtc/v1", "https://example.livekit.cloud/rtc/v1/validate"),
])
def test_validate_url_uses_http(url, expected):
    assert validate_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://example.com", "example.com", "", "localhost:7880"])
def test_unsupported_urls_are_rejected(url):
    with pytest.raises(ValueError, match="unsupported"):
        signal_url(url)
    with pytest.raises(ValueError):
        validate_url(url)


# -- inbound ----------------------------------------------------------------------

def test_join_sets_ping_interval_and_timeout():
    proto = SignalProtocol(clock=FakeClock())
    assert (proto.ping_interval, proto.ping_timeout) == (5.0, 15.0)
    join = rtc.JoinResponse(room=models.Room(name="lab"), ping_interval=3, ping_timeout=9)
    msg = proto.receive(response(join=join))
    assert msg.WhichOneof("message") == "join"
    assert proto.join is not None and proto.join.room.name == "lab"
    assert proto.ping_interval == 3.0
    assert proto.ping_timeout == 9.0
    assert proto.messages_received == 1


def test_join_without_ping_settings_keeps_defaults():
    proto = SignalProtocol(clock=FakeClock())
    proto.receive(response(join=rtc.JoinResponse(room=models.Room(name="lab"))))
    assert (proto.ping_interval, proto.ping_timeout) == (5.0, 15.0)


def test_newest_refresh_token_wins():
    proto = SignalProtocol(clock=FakeClock())
    assert proto.refresh_token is None
    proto.receive(response(refresh_token="token-1"))
    assert proto.refresh_token == "token-1"
    proto.receive(response(refresh_token="token-2"))
    proto.receive(response(join=rtc.JoinResponse()))  # other messages leave it alone
    assert proto.refresh_token == "token-2"


def test_rtt_from_pong_resp():
    proto = SignalProtocol(clock=FakeClock())
    assert proto.rtt is None
    sent = int(time.time() * 1000) - 250
    proto.receive(response(pong_resp=rtc.Pong(last_ping_timestamp=sent, timestamp=sent + 100)))
    assert proto.rtt == pytest.approx(0.25, abs=0.2)
    assert 0.25 <= proto.rtt < 1.0
    # the next ping reports the rtt in milliseconds
    ping = request(proto.ping()).ping_req
    assert ping.rtt == int(proto.rtt * 1000)
    assert abs(ping.timestamp - time.time() * 1000) < 5000


def test_rtt_never_negative_with_a_future_timestamp():
    proto = SignalProtocol(clock=FakeClock())
    proto.receive(response(pong_resp=rtc.Pong(last_ping_timestamp=int(time.time() * 1000) + 60_000)))
    assert proto.rtt == 0


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x08"])
def test_garbage_bytes_raise_protocol_error(garbage):
    clock = FakeClock()
    proto = SignalProtocol(clock=clock)
    clock.now += 5
    with pytest.raises(ProtocolError):
        proto.receive(garbage)
    assert proto.messages_received == 0
    assert proto.last_received == 1000.0  # garbage does not count as a sign of life


def test_text_frame_raises_protocol_error():
    proto = SignalProtocol(clock=FakeClock())
    with pytest.raises(ProtocolError, match="text"):
        proto.receive('{"join": {}}')  # type: ignore[arg-type]


def test_oversize_message_raises_protocol_error():
    proto = SignalProtocol(clock=FakeClock())
    with pytest.raises(ProtocolError, match="exceeds"):
        proto.receive(b"\x00" * (MAX_SIGNAL_MESSAGE + 1))


def test_bytearray_is_accepted():
    proto = SignalProtocol(clock=FakeClock())
    msg = proto.receive(bytearray(response(refresh_token="t")))
    assert msg.refresh_token == "t"


def test_ping_timed_out_with_injected_clock():
    clock = FakeClock(100.0)
    proto = SignalProtocol(clock=clock)
    proto.receive(response(join=rtc.JoinResponse(ping_interval=2, ping_timeout=6)))
    clock.now = 105.9
    assert not proto.ping_timed_out()
    proto.receive(response(pong_resp=rtc.Pong(last_ping_timestamp=int(time.time() * 1000))))
    assert proto.last_received == 105.9
    clock.now = 111.0
    assert not proto.ping_timed_out()
    clock.now = 112.0
    assert proto.ping_timed_out()
    proto.receive(response(refresh_token="x"))  # any message resets the timer
    assert not proto.ping_timed_out()


# -- outbound ---------------------------------------------------------------------

def test_offer_encoding():
    req = request(SignalProtocol().offer("v=0\r\n", 7))
    assert req.WhichOneof("message") == "offer"
    assert req.offer.type == "offer"
    assert req.offer.sdp == "v=0\r\n"
    assert req.offer.id == 7


def test_trickle_encoding():
    cand = "candidate:1 1 udp 2130706431 192.168.1.2 50000 typ host"
    req = request(SignalProtocol().trickle(cand, "0", 0))
    assert req.WhichOneof("message") == "trickle"
    assert req.trickle.target == rtc.SignalTarget.PUBLISHER
    assert req.trickle.final is False
    assert json.loads(req.trickle.candidateInit) == {"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0}


def test_final_trickle():
    req = request(SignalProtocol().trickle("", "1", 1, final=True))
    assert req.trickle.final is True
    assert json.loads(req.trickle.candidateInit)["sdpMLineIndex"] == 1


def test_add_track_encoding():
    req = request(SignalProtocol().add_track("cid-1", "mic", source=models.TrackSource.MICROPHONE, muted=True))
    assert req.WhichOneof("message") == "add_track"
    t = req.add_track
    assert (t.cid, t.name) == ("cid-1", "mic")
    assert t.type == models.TrackType.AUDIO
    assert t.source == models.TrackSource.MICROPHONE
    assert t.muted is True
    assert t.stereo is False


@pytest.mark.parametrize("muted", [True, False])
def test_mute_encoding(muted):
    req = request(SignalProtocol().mute("TR_1", muted))
    assert req.WhichOneof("message") == "mute"
    assert req.mute.sid == "TR_1"
    assert req.mute.muted is muted


def test_leave_encoding():
    req = request(SignalProtocol().leave())
    assert req.WhichOneof("message") == "leave"
    assert req.leave.reason == models.DisconnectReason.CLIENT_INITIATED
    assert req.leave.action == rtc.LeaveRequest.Action.DISCONNECT
    req = request(SignalProtocol().leave(models.DisconnectReason.SIGNAL_CLOSE))
    assert req.leave.reason == models.DisconnectReason.SIGNAL_CLOSE


def test_update_participant_attributes():
    req = request(SignalProtocol().update_participant(attributes={"mode": "idle", "gone": ""}, request_id=4))
    assert req.WhichOneof("message") == "update_metadata"
    upd = req.update_metadata
    assert dict(upd.attributes) == {"mode": "idle", "gone": ""}
    assert upd.request_id == 4
    assert upd.name == "" and upd.metadata == ""


def test_update_participant_name_and_metadata():
    upd = request(SignalProtocol().update_participant(name="Robo", metadata="{}")).update_metadata
    assert (upd.name, upd.metadata) == ("Robo", "{}")
    assert dict(upd.attributes) == {}


def test_subscription_encoding():
    req = request(SignalProtocol().subscription(["TR_a", "TR_b"], False))
    assert list(req.subscription.track_sids) == ["TR_a", "TR_b"]
    assert req.subscription.subscribe is False


def test_subscription_names_the_publisher_as_the_sdks_do():
    # older servers find a track only through its publisher's sid (participant_tracks)
    req = request(SignalProtocol().subscription(["TR_a"], True, participant_sid="PA_x"))
    assert list(req.subscription.track_sids) == ["TR_a"] and req.subscription.subscribe is True
    (pt,) = req.subscription.participant_tracks
    assert pt.participant_sid == "PA_x" and list(pt.track_sids) == ["TR_a"]
