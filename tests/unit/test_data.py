"""device/data.py: user data packets out and in."""

from __future__ import annotations

import pytest
from livekit.protocol import models

from lkdevice.rtc.data import (MAX_INBOUND_PACKET, MAX_USER_PAYLOAD, DataMessage, decode_packet, sender_identity,
                           to_message, user_packet)
from lkdevice.rtc.errors import DataTooLarge, ProtocolError


def over_the_wire(packet: models.DataPacket, sender: str = "") -> bytes:
    """What the server forwards: our packet with the sender's identity stamped on it."""
    if sender:
        packet.participant_identity = sender
    return packet.SerializeToString()


def test_round_trip_with_topic_and_destinations():
    packet = user_packet(b"\x00hello\xff", topic="chat", destination_identities=["agent", "alice"])
    msg = to_message(decode_packet(over_the_wire(packet, "robot")))
    assert isinstance(msg, DataMessage)
    assert msg.payload == b"\x00hello\xff"
    assert msg.topic == "chat"
    assert msg.destination_identities == ["agent", "alice"]
    assert msg.participant_identity == "robot"
    assert msg.reliable is True


def test_packet_addresses_destinations_at_both_levels():
    packet = user_packet(b"x", destination_identities=["agent"])
    assert list(packet.destination_identities) == ["agent"]
    assert list(packet.user.destination_identities) == ["agent"]
    assert packet.WhichOneof("value") == "user"


def test_no_topic_means_none_not_empty_string():
    msg = to_message(decode_packet(over_the_wire(user_packet(b"x"), "robot")))
    assert msg.topic is None
    assert msg.destination_identities == []
    empty_topic = to_message(decode_packet(over_the_wire(user_packet(b"x", topic=""), "robot")))
    assert empty_topic.topic == ""


@pytest.mark.parametrize("reliable, kind", [(True, models.DataPacket.Kind.RELIABLE),
                                            (False, models.DataPacket.Kind.LOSSY)])
def test_reliable_vs_lossy(reliable, kind):
    packet = user_packet(b"x", reliable=reliable)
    assert packet.kind == kind
    assert to_message(decode_packet(over_the_wire(packet, "a"))).reliable is reliable


@pytest.mark.parametrize("payload", [bytearray(b"abc"), memoryview(b"abc")])
def test_bytes_like_payloads(payload):
    assert user_packet(payload).user.payload == b"abc"


def test_text_payload_is_a_type_error():
    with pytest.raises(TypeError):
        user_packet("hello")  # type: ignore[arg-type]


def test_payload_limit_is_15_kib():
    assert MAX_USER_PAYLOAD == 15 * 1024
    assert len(user_packet(b"x" * MAX_USER_PAYLOAD).user.payload) == MAX_USER_PAYLOAD
    with pytest.raises(DataTooLarge, match=str(MAX_USER_PAYLOAD + 1)):
        user_packet(b"x" * (MAX_USER_PAYLOAD + 1))


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"\x12\x05ab", b"\x08"])
def test_malformed_packet_is_protocol_error(garbage):
    with pytest.raises(ProtocolError, match="malformed"):
        decode_packet(garbage)


def test_text_on_the_data_channel_is_protocol_error():
    with pytest.raises(ProtocolError, match="text"):
        decode_packet("hello")


def test_oversize_inbound_packet_is_protocol_error():
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_packet(b"\x00" * (MAX_INBOUND_PACKET + 1))


def test_decode_accepts_bytearray():
    packet = decode_packet(bytearray(over_the_wire(user_packet(b"x"), "a")))
    assert packet.user.payload == b"x"


def test_sender_identity_prefers_packet_level():
    packet = models.DataPacket(participant_identity="outer",
                               user=models.UserPacket(participant_identity="inner", payload=b"x"))
    assert sender_identity(packet) == "outer"


def test_sender_identity_falls_back_to_legacy_user_field():
    packet = models.DataPacket(user=models.UserPacket(participant_identity="legacy", payload=b"x"))
    assert sender_identity(decode_packet(packet.SerializeToString())) == "legacy"
    assert to_message(packet).participant_identity == "legacy"


def test_sender_identity_unknown():
    assert sender_identity(models.DataPacket(rpc_ack=models.RpcAck(request_id="r"))) == ""


def test_legacy_destinations_inside_user_packet():
    packet = models.DataPacket(user=models.UserPacket(payload=b"x", destination_identities=["bob"]))
    assert to_message(packet).destination_identities == ["bob"]
