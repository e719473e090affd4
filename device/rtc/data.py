"""User data packets on the `_reliable` and `_lossy` channels, sans I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from livekit.protocol import models

from .errors import DataTooLarge, ProtocolError

RELIABLE_CHANNEL = "_reliable"
LOSSY_CHANNEL = "_lossy"
# LiveKit's guidance for one data message; larger ones belong in a stream.
MAX_USER_PAYLOAD = 15 * 1024
# Anything from the server larger than this is not a LiveKit data packet.
MAX_INBOUND_PACKET = 256 * 1024


@dataclass
class DataMessage:
    """A user packet as received: who sent it, on which topic, over which channel."""

    payload: bytes
    participant_identity: str
    topic: str | None = None
    reliable: bool = True
    destination_identities: list[str] = field(default_factory=list)


def user_packet(payload: bytes, *, reliable: bool = True, topic: str | None = None,
                destination_identities: list[str] | None = None) -> models.DataPacket:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError("data payload must be bytes")
    if len(payload) > MAX_USER_PAYLOAD:
        raise DataTooLarge(
            f"data payload of {len(payload)} bytes exceeds {MAX_USER_PAYLOAD}; send it as a stream or split it"
        )
    dest = list(destination_identities or [])
    user = models.UserPacket(payload=bytes(payload), destination_identities=dest)
    if topic is not None:
        user.topic = topic
    kind = models.DataPacket.Kind.RELIABLE if reliable else models.DataPacket.Kind.LOSSY
    return models.DataPacket(kind=kind, user=user, destination_identities=dest)


def decode_packet(data: bytes | str) -> models.DataPacket:
    if isinstance(data, str):
        raise ProtocolError("data channel carried text; LiveKit data packets are binary")
    if len(data) > MAX_INBOUND_PACKET:
        raise ProtocolError(f"data packet of {len(data)} bytes exceeds {MAX_INBOUND_PACKET}")
    packet = models.DataPacket()
    try:
        packet.ParseFromString(bytes(data))
    except Exception as exc:
        raise ProtocolError(f"malformed data packet: {exc}") from exc
    return packet


def sender_identity(packet: models.DataPacket) -> str:
    if packet.participant_identity:
        return packet.participant_identity
    if packet.WhichOneof("value") == "user":
        return packet.user.participant_identity
    return ""


def to_message(packet: models.DataPacket) -> DataMessage:
    user = packet.user
    return DataMessage(
        payload=bytes(user.payload),
        participant_identity=sender_identity(packet),
        topic=user.topic if user.HasField("topic") else None,
        reliable=packet.kind == models.DataPacket.Kind.RELIABLE,
        destination_identities=list(packet.destination_identities or user.destination_identities),
    )
