"""LiveKit signaling over /rtc/v1, sans I/O.

`SignalProtocol` turns requests into bytes and bytes into responses, and keeps
the state the protocol itself defines: join result, ping timing, round-trip
time, newest refresh token, last received message. It never touches a socket,
so every rule here is testable with plain bytes.
"""

from __future__ import annotations

import base64
import json
import platform
import time
from dataclasses import dataclass, field
from typing import Callable

from livekit.protocol import models, rtc

from .errors import ProtocolError

# Server protocol revision we speak: enables connection quality "lost",
# non-error request responses and room moves, but not packet trailers (17).
PROTOCOL_VERSION = 16
# RPC v1 (request, ack, response over data packets); higher values make peers
# switch to data-stream RPC.
CLIENT_PROTOCOL = 0
SDK_VERSION = "lkdevice-0.1.0"
MAX_SIGNAL_MESSAGE = 1 << 20

ReconnectReason = models.ReconnectReason
DisconnectReason = models.DisconnectReason
LeaveAction = rtc.LeaveRequest.Action
SignalTarget = rtc.SignalTarget


@dataclass
class JoinOptions:
    auto_subscribe: bool = True
    attributes: dict[str, str] = field(default_factory=dict)
    metadata: str = ""
    device_model: str = ""


def client_info(device_model: str = "") -> models.ClientInfo:
    return models.ClientInfo(
        sdk=models.ClientInfo.SDK.UNKNOWN,
        version=SDK_VERSION,
        protocol=PROTOCOL_VERSION,
        os=platform.system(),
        os_version=platform.release(),
        device_model=device_model or platform.machine(),
        client_protocol=CLIENT_PROTOCOL,
    )


def join_query(
    options: JoinOptions,
    *,
    reconnect: bool = False,
    participant_sid: str = "",
    reconnect_reason: int = ReconnectReason.RR_UNKNOWN,
) -> str:
    """The `join_request=` query string for /rtc/v1 (base64url WrappedJoinRequest)."""
    req = rtc.JoinRequest(
        client_info=client_info(options.device_model),
        connection_settings=rtc.ConnectionSettings(auto_subscribe=options.auto_subscribe),
        metadata=options.metadata,
        reconnect=reconnect,
        participant_sid=participant_sid,
        reconnect_reason=reconnect_reason,
    )
    req.participant_attributes.update(options.attributes)
    wrapped = rtc.WrappedJoinRequest(join_request=req.SerializeToString())
    return "join_request=" + base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


def signal_url(url: str, path: str = "/rtc/v1") -> str:
    """Normalise a user's URL (http/https/ws/wss, with or without path) to the signal endpoint."""
    base = url.rstrip("/")
    if base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    elif base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif not base.startswith(("ws://", "wss://")):
        raise ValueError(f"unsupported LiveKit URL {url!r}: expected ws://, wss://, http:// or https://")
    for suffix in ("/rtc/v1", "/rtc"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base + path


def validate_url(url: str) -> str:
    """The /rtc/v1/validate endpoint, over http(s), that explains a refused join."""
    ws = signal_url(url, "/rtc/v1/validate")
    return "http" + ws[2:]


class SignalProtocol:
    """Encodes requests, decodes responses, tracks ping and token state."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.join: rtc.JoinResponse | None = None
        self.refresh_token: str | None = None
        self.ping_interval = 5.0
        self.ping_timeout = 15.0
        self.rtt: float | None = None  # seconds, from the newest pong
        self.last_received = clock()
        self.messages_received = 0

    # -- inbound --------------------------------------------------------
    def receive(self, data: bytes) -> rtc.SignalResponse:
        if not isinstance(data, (bytes, bytearray)):
            raise ProtocolError("expected a binary signal message, got text")
        if len(data) > MAX_SIGNAL_MESSAGE:
            raise ProtocolError(f"signal message of {len(data)} bytes exceeds {MAX_SIGNAL_MESSAGE}")
        msg = rtc.SignalResponse()
        try:
            msg.ParseFromString(bytes(data))
        except Exception as exc:  # protobuf raises DecodeError and others
            raise ProtocolError(f"malformed signal message: {exc}") from exc
        self.last_received = self._clock()
        self.messages_received += 1
        kind = msg.WhichOneof("message")
        if kind == "join":
            self.join = msg.join
            if msg.join.ping_interval:
                self.ping_interval = float(msg.join.ping_interval)
            if msg.join.ping_timeout:
                self.ping_timeout = float(msg.join.ping_timeout)
        elif kind == "refresh_token":
            self.refresh_token = msg.refresh_token
        elif kind == "pong_resp":
            now_ms = int(time.time() * 1000)
            self.rtt = max(0, now_ms - msg.pong_resp.last_ping_timestamp) / 1000.0
        return msg

    def ping_timed_out(self) -> bool:
        return self._clock() - self.last_received > self.ping_timeout

    # -- outbound -------------------------------------------------------
    @staticmethod
    def _encode(**kwargs) -> bytes:
        return rtc.SignalRequest(**kwargs).SerializeToString()

    def ping(self) -> bytes:
        rtt_ms = int((self.rtt or 0) * 1000)
        return self._encode(ping_req=rtc.Ping(timestamp=int(time.time() * 1000), rtt=rtt_ms))

    def offer(self, sdp: str, offer_id: int) -> bytes:
        return self._encode(offer=rtc.SessionDescription(type="offer", sdp=sdp, id=offer_id))

    def trickle(self, candidate: str, sdp_mid: str, sdp_mline_index: int, *, final: bool = False) -> bytes:
        init = json.dumps({"candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": sdp_mline_index})
        return self._encode(trickle=rtc.TrickleRequest(candidateInit=init, target=SignalTarget.PUBLISHER, final=final))

    def add_track(self, cid: str, name: str, *, source: int, muted: bool = False, stereo: bool = False,
                  type: int = models.TrackType.AUDIO, width: int = 0, height: int = 0) -> bytes:
        return self._encode(
            add_track=rtc.AddTrackRequest(
                cid=cid, name=name, type=type, source=source, muted=muted, stereo=stereo, width=width, height=height
            )
        )

    def mute(self, track_sid: str, muted: bool) -> bytes:
        return self._encode(mute=rtc.MuteTrackRequest(sid=track_sid, muted=muted))

    def update_participant(self, *, name: str | None = None, metadata: str | None = None,
                           attributes: dict[str, str] | None = None, request_id: int = 0) -> bytes:
        upd = rtc.UpdateParticipantMetadata(request_id=request_id)
        if name is not None:
            upd.name = name
        if metadata is not None:
            upd.metadata = metadata
        if attributes:
            upd.attributes.update(attributes)
        return self._encode(update_metadata=upd)

    def subscription(self, track_sids: list[str], subscribe: bool, *, participant_sid: str = "") -> bytes:
        """Ask for (or stop) remote tracks; naming their publisher too, as the SDKs
        do, lets servers that look tracks up by publisher find them."""
        upd = rtc.UpdateSubscription(track_sids=track_sids, subscribe=subscribe)
        if participant_sid:
            upd.participant_tracks.add(participant_sid=participant_sid, track_sids=track_sids)
        return self._encode(subscription=upd)

    def leave(self, reason: int = DisconnectReason.CLIENT_INITIATED) -> bytes:
        return self._encode(leave=rtc.LeaveRequest(reason=reason, action=LeaveAction.DISCONNECT))
