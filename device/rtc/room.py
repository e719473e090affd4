"""`Room`: a LiveKit participant on aiortc, joined over /rtc/v1.

Events (`room.on(name, handler)`), named as in the official SDKs:
connected, disconnected(reason), reconnecting(kind), reconnected(kind),
participant_connected(p), participant_disconnected(p, reason),
track_published(pub, p), track_unpublished(pub, p),
track_subscribed(track, pub, p), track_unsubscribed(track, pub, p),
track_muted(pub, p), track_unmuted(pub, p),
participant_attributes_changed(changed, p), agent_state_changed(p, state),
participant_metadata_changed(p, old), participant_name_changed(p, old),
active_speakers_changed(speakers), connection_quality_changed(p, quality),
room_metadata_changed(old, new), data_received(message),
text_stream_received(reader), local_track_published(track),
token_refreshed(token): the server's newest token, used for reconnects.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from aiortc import RTCIceServer
from livekit.protocol import models, rtc

from . import ice
from .audio import AudioChunk, MicrophoneTrack
from .playout import AudioStream
from .backoff import Backoff
from .lifecycle import (
    AbortAttempt, Action, AnswerReceived, AttemptFailed, Close, CloseRequested, ConnectRequested, Emit,
    JoinSucceeded, LeaveReceived, MediaFailed, OfferSent, ResendOffer, ResumeRefused, ResumeSucceeded,
    ScheduleRetry, SessionLifecycle, SignalLost, StartJoin, StartRejoin, StartResume, TokenRefreshed,
)
from .data import DataMessage, decode_packet, sender_identity, to_message, user_packet
from .errors import ConnectError, Disconnected, ProtocolError, TokenRejected
from .events import EventEmitter
from .opus import DEFAULT_BITRATE, VoiceEncoder
from .peer import PeerSession
from .rpc import DEFAULT_RESPONSE_TIMEOUT, RpcEndpoint, RpcFallback, RpcHandler
from .signal_connection import SignalConnection
from .signaling import DisconnectReason, JoinOptions, ReconnectReason, SignalProtocol, join_query
from .state import Participant, RoomState, TrackPublication
from .streams import StreamHandler, TextStreamAssembler
from .tasks import TaskSet
from .video import LocalVideoTrack

log = logging.getLogger(__name__)

TrackSource = models.TrackSource


@dataclass
class RoomOptions:
    auto_subscribe: bool = True
    attributes: dict[str, str] = field(default_factory=dict)
    metadata: str = ""
    connect_timeout: float = 10.0
    # Expected room: a token for any other room is refused before connecting.
    room: str | None = None
    # Host addresses offered for ICE; None: loopback only when the server is on
    # loopback, otherwise every interface.
    ice_host_addresses: list[str] | None = None
    # How long to keep trying to get back into the room after losing it; None:
    # until disconnect() (a device has nobody to press "rejoin"). A refused
    # token ends the session whatever this says.
    reconnect_window: float | None = None
    # Longest wait between reconnect attempts (full jitter below it).
    reconnect_max_delay: float = 10.0
    # Baseline playout delay of received audio; the jitter buffer adds what the
    # measured jitter needs and comes back to this after a burst.
    audio_delay: float = 0.02


def token_claims(token: str) -> dict:
    """The JWT payload, unverified: only the server can verify; we read the room."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except Exception:
        raise TokenRejected(0, "access token is not a JWT") from None
    if not isinstance(claims, dict):
        raise TokenRejected(0, "access token payload is not a JSON object")
    return claims


class LocalAudioTrack:
    """Our published microphone: feed PCM into `track`, mute and unmute it."""

    def __init__(self, room: "Room", name: str, track: MicrophoneTrack, source: int):
        self._room = room
        self.name = name
        self.track = track
        self.source = source
        self.sid = ""
        self.published = asyncio.Event()
        self._rtp = track.rtp_track()

    @property
    def cid(self) -> str:
        """The client track id the server knows this publication by (msid in our SDP)."""
        return self._rtp.id

    def new_rtp_track(self):
        self._rtp = self.track.rtp_track()
        return self._rtp

    def add_track_fields(self) -> dict:
        return {}

    @property
    def muted(self) -> bool:
        return self.track.muted

    async def mute(self) -> None:
        await self._room._set_muted(self, True)

    async def unmute(self) -> None:
        await self._room._set_muted(self, False)

    def feed(self, source: AsyncIterator[AudioChunk]) -> asyncio.Task:
        return self.track.feed(source)


def _mute_locally(local: "LocalAudioTrack | LocalVideoTrack", muted: bool) -> None:
    if isinstance(local, LocalVideoTrack):
        local.muted = muted  # the server stops forwarding it; the camera keeps running
    else:
        local.track.muted = muted


class Room(EventEmitter):
    def __init__(self, options: RoomOptions | None = None):
        super().__init__()
        self.options = options or RoomOptions()
        self.state = RoomState()
        self._lifecycle = SessionLifecycle(
            window=self.options.reconnect_window,
            attempt_timeout=4 * self.options.connect_timeout + 10,
            backoff=Backoff(maximum=self.options.reconnect_max_delay),
        )
        self._attempt: tuple[int, asyncio.Task] | None = None
        self._attempt_error: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._live_signal: SignalConnection | None = None  # the one whose loss matters
        self._url = ""
        self._token = ""
        self._protocol = SignalProtocol()
        self._signal: SignalConnection | None = None
        self._peer: PeerSession | None = None
        self._rpc = RpcEndpoint(self._send_packet)
        self._streams = TextStreamAssembler()
        self._stream_handlers: dict[str, StreamHandler] = {}
        self._local_tracks: list[LocalAudioTrack | LocalVideoTrack] = []
        self._publish_waiters: dict[str, asyncio.Future] = {}
        self._remote_tracks: dict[str, object] = {}  # track sid -> aiortc track
        self._unresolved_tracks: dict[str, object] = {}
        self._wanted: set[str] = set()  # tracks asked for by set_subscribed (published ones only)
        self._tasks: set[asyncio.Task] = set()
        # attempts, timer firings, media-failure reports: not cancelled by the
        # teardown, which may itself run in one of them
        self._lifecycle_tasks = TaskSet(log, limit=16)
        self._closed = asyncio.Event()

    # -- read-only views ----------------------------------------------------------
    @property
    def connection_state(self) -> str:
        """disconnected, connecting, connected or reconnecting."""
        return self._lifecycle.state

    @property
    def disconnect_reason(self) -> str | None:
        return self._lifecycle.reason

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def sid(self) -> str:
        return self.state.sid

    @property
    def metadata(self) -> str:
        return self.state.metadata

    @property
    def local_participant(self) -> Participant:
        if self.state.local is None:
            raise ConnectError("not connected")
        return self.state.local

    @property
    def remote_participants(self) -> dict[str, Participant]:
        return self.state.remote

    @property
    def active_speakers(self) -> list[Participant]:
        return self.state.active_speakers

    @property
    def rtt(self) -> float | None:
        """Signal round-trip time in seconds, from the newest ping."""
        return self._protocol.rtt

    @property
    def refresh_token(self) -> str | None:
        return self._protocol.refresh_token

    @property
    def token(self) -> str:
        """The newest token: the server's refresh, else the one we joined with."""
        return self._protocol.refresh_token or self._token

    # -- connect ------------------------------------------------------------------
    async def connect(self, url: str, token: str) -> None:
        if self.connection_state != "disconnected":
            raise ConnectError(f"already {self.connection_state}")
        if self.options.room is not None:
            granted = (token_claims(token).get("video") or {}).get("room")
            if granted != self.options.room:
                raise TokenRejected(0, f"token grants room {granted!r}, not {self.options.room!r}")
        self._url, self._token = url, token
        self._attempt_error = None
        await self._handle(ConnectRequested())
        attempt, task = self._attempt
        try:
            await task
        except asyncio.CancelledError:
            if self.connection_state == "connecting":  # our caller cancelled connect()
                await self._handle(AttemptFailed(attempt, "connect() was cancelled"))
                raise
        if self.connection_state == "disconnected":
            if self._attempt_error is not None:
                raise self._attempt_error
            raise ConnectError(self.disconnect_reason or "could not join")

    def _host_addresses(self) -> list[str] | None:
        if self.options.ice_host_addresses is not None:
            return self.options.ice_host_addresses
        return ["127.0.0.1"] if ice.is_loopback_url(self._url) else None

    def _ice_servers(self, servers) -> list[RTCIceServer]:
        # aiortc takes one STUN/TURN server; a loopback server needs none, and a
        # STUN query that goes unanswered would only delay gathering.
        if ice.is_loopback_url(self._url):
            return []
        for s in servers:
            urls = [u for u in s.urls if u.startswith(("stun:", "turn:")) and "transport=tcp" not in u]
            if urls:
                return [RTCIceServer(urls=urls[0], username=s.username or None, credential=s.credential or None)]
        return []

    async def _open_signal(self, query: str) -> rtc.SignalResponse:
        signal = SignalConnection(self._protocol, self._on_signal,
                                  lambda reason: self._on_signal_lost(signal, reason))
        try:
            first = await signal.open(self._url, self.token, query, self.options.connect_timeout)
        except BaseException:
            signal.abort()  # an attempt cancelled half way must not leave a socket behind
            raise
        self._signal = signal
        return first

    def _start_signal(self) -> None:
        self._live_signal = self._signal
        self._signal.start()

    async def _join(self, rejoin: bool) -> None:
        """A full join: new signal session, new peer connection, republish our tracks."""
        opts = JoinOptions(auto_subscribe=self.options.auto_subscribe, attributes=self.options.attributes,
                           metadata=self.options.metadata)
        first = await self._open_signal(join_query(opts))
        kind = first.WhichOneof("message")
        if kind == "leave":
            await self._signal.close()
            raise ConnectError(f"server refused the join: {DisconnectReason.Name(first.leave.reason)}")
        if kind != "join":
            await self._signal.close()
            raise ProtocolError(f"expected a join response, got {kind}")
        events = self.state.apply_join(first.join)
        if self.options.room is not None and self.state.name != self.options.room:
            await self._signal.close()
            raise TokenRejected(0, f"joined room {self.state.name!r}, expected {self.options.room!r}")
        self._peer = PeerSession(self._ice_servers(first.join.ice_servers), self._send_offer,
                                 self._host_addresses(), self.options.audio_delay)
        self._wire_peer(self._peer)
        self._start_signal()
        for t in self._local_tracks:
            t.sid = ""
            t.published.clear()
            self._add_sender(t)
        await self._peer.negotiate()
        for t in self._local_tracks:
            await self._request_publish(t)
        try:
            await asyncio.wait_for(self._peer.connected.wait(), self.options.connect_timeout)
        except asyncio.TimeoutError:
            raise ConnectError(
                f"joined the room but the media connection did not come up within "
                f"{self.options.connect_timeout:.0f}s (ICE/DTLS with the server failed)"
            ) from None
        if rejoin:  # tell the user what changed while we were away
            self._emit_all(events)
            # a new participant on the server: it has none of our old subscriptions
            for sid in list(self._wanted):
                await self._send_subscription(sid, True)

    def _wire_peer(self, peer: PeerSession) -> None:
        @peer.pc.on("track")
        def _on_track(track) -> None:
            self._track_arrived(peer, track)

        @peer.pc.on("connectionstatechange")
        def _on_state() -> None:
            if peer is self._peer and peer.pc.connectionState == "failed":
                log.info("media connection failed")
                self._spawn_lifecycle(self._handle(MediaFailed()), "media failure report")

        for channel in (peer.reliable, peer.lossy):
            channel.on("message", self._on_data)

    # -- signal messages ------------------------------------------------------------
    def _check_open(self) -> None:
        if self.disconnect_reason is not None and self.connection_state == "disconnected":
            raise Disconnected(self.disconnect_reason)
        if self._signal is None or self._peer is None:
            raise ConnectError(f"not connected ({self.connection_state})")

    async def _send(self, data: bytes) -> None:
        self._check_open()
        await self._signal.send(data)

    async def _send_offer(self, sdp: str, offer_id: int) -> None:
        # recorded before sending: an offer lost with the socket is sent again after a resume
        await self._handle(OfferSent(offer_id))
        await self._send(self._protocol.offer(sdp, offer_id))

    def _emit_all(self, events) -> None:
        for name, args in events:
            if name == "participant_disconnected":
                self._rpc.participant_left(args[0].identity)
                self._streams.sender_left(args[0].identity)
            if name == "track_unpublished":
                self._wanted.discard(args[0].sid)
                track = self._remote_tracks.pop(args[0].sid, None)
                if track is not None:
                    self.emit("track_unsubscribed", track, args[0], args[1])
            self.emit(name, *args)
            if name == "track_published":
                self._resolve_tracks()

    async def _on_signal(self, msg: rtc.SignalResponse) -> None:
        kind = msg.WhichOneof("message")
        if kind == "answer":
            await self._peer.apply_answer(msg.answer.sdp, msg.answer.id, dict(msg.answer.mid_to_track_id))
            await self._handle(AnswerReceived(msg.answer.id))
            self._remap_tracks()
        elif kind == "trickle":
            await self._peer.add_trickle(msg.trickle.candidateInit, msg.trickle.final)
        elif kind == "update":
            self._emit_all(self.state.apply_update(msg.update))
        elif kind == "track_published":
            fut = self._publish_waiters.pop(msg.track_published.cid, None)
            if fut and not fut.done():
                fut.set_result(msg.track_published.track)
        elif kind == "media_sections_requirement":
            req = msg.media_sections_requirement
            self._peer.add_receivers(req.num_audios, req.num_videos)
            await self._peer.negotiate()
        elif kind == "speakers_changed":
            self._emit_all(self.state.apply_speakers(msg.speakers_changed))
        elif kind == "connection_quality":
            self._emit_all(self.state.apply_quality(msg.connection_quality))
        elif kind == "room_update":
            self._emit_all(self.state.apply_room(msg.room_update.room))
        elif kind == "mute":
            for t in self._local_tracks:
                if t.sid == msg.mute.sid:
                    _mute_locally(t, msg.mute.muted)
            self._emit_all(self.state.apply_mute(msg.mute.sid, msg.mute.muted))
        elif kind == "leave":
            leave = msg.leave
            log.info("server sent leave (action %s, reason %s)", leave.action, DisconnectReason.Name(leave.reason))
            await self._handle(LeaveReceived(leave.action, DisconnectReason.Name(leave.reason)))
        elif kind == "request_response":
            rr = msg.request_response
            if rr.reason != rtc.RequestResponse.Reason.OK:
                log.warning("server refused request %d: %s %s", rr.request_id,
                            rtc.RequestResponse.Reason.Name(rr.reason), rr.message)
        elif kind == "refresh_token":
            await self._handle(TokenRefreshed(msg.refresh_token))
        elif kind == "track_unpublished":
            for t in self._local_tracks:
                if t.sid == msg.track_unpublished.track_sid:
                    t.sid = ""

    async def _on_signal_lost(self, signal: SignalConnection, reason: str) -> None:
        if signal is not self._live_signal:
            return  # a socket an attempt already replaced
        self._live_signal = None
        log.info("signal connection lost: %s", reason)
        await self._handle(SignalLost(reason))

    # -- remote tracks ----------------------------------------------------------------
    def _track_arrived(self, peer: PeerSession, track) -> None:
        transceiver = peer.transceiver_for(track)
        mid = transceiver.mid if transceiver else None
        track_sid = peer.mid_to_track_id.get(mid or "") or ""
        self._unresolved_tracks[mid or track.id] = track
        if track_sid:
            self._resolve_tracks()

    def _remap_tracks(self) -> None:
        """An answer may move a known receiver onto another published track."""
        peer = self._peer
        for t in peer.pc.getTransceivers():
            track = t.receiver.track if t.receiver else None
            if track is None or t.mid is None:
                continue
            sid = peer.mid_to_track_id.get(t.mid)
            if sid and self._remote_tracks.get(sid) is not track:
                self._unresolved_tracks[t.mid] = track
        self._resolve_tracks()

    def _resolve_tracks(self) -> None:
        peer = self._peer
        if peer is None:
            return
        for key, track in list(self._unresolved_tracks.items()):
            sid = peer.mid_to_track_id.get(key)
            found = self.state.find_track(sid) if sid else None
            if found is None or (not self.options.auto_subscribe and sid not in self._wanted):
                continue  # not ours (yet), or one we just unsubscribed from
            del self._unresolved_tracks[key]
            participant, pub = found
            self._remote_tracks[sid] = track
            self.emit("track_subscribed", track, pub, participant)

    async def set_subscribed(self, track_sid: str, subscribed: bool) -> None:
        """Receive a remote track, or stop receiving it (what auto_subscribe=False is for).

        `track_subscribed` follows when its media arrives; `track_unsubscribed` is
        emitted at once. The choice holds across reconnects until the track is unpublished."""
        found = self.state.find_track(track_sid)
        if found is None:
            raise KeyError(f"no remote track {track_sid!r}")
        (self._wanted.add if subscribed else self._wanted.discard)(track_sid)
        await self._send_subscription(track_sid, subscribed)
        if subscribed:
            self._resolve_tracks()  # its receiver may be known already
        else:
            track = self._remote_tracks.pop(track_sid, None)
            if track is not None:
                self.emit("track_unsubscribed", track, found[1], found[0])

    async def _send_subscription(self, track_sid: str, subscribed: bool) -> None:
        found = self.state.find_track(track_sid)
        if found is None:
            self._wanted.discard(track_sid)
            return
        await self._send(self._protocol.subscription([track_sid], subscribed, participant_sid=found[0].sid))

    def remote_track(self, track_sid: str):
        return self._remote_tracks.get(track_sid)

    def subscribed_tracks(self) -> list[str]:
        """Sids of the tracks we receive, oldest subscription first."""
        return list(self._remote_tracks)

    def audio_stream(self, track, *, sample_rate: int = 48000, frame_ms: int = 20) -> AudioStream:
        """Mono PCM from a subscribed track (or its sid): a `frame_ms` frame at `sample_rate`
        every `frame_ms` of wall time, concealment or silence when packets are missing."""
        if isinstance(track, str):
            track = self._remote_tracks[track]
        return AudioStream(track, sample_rate=sample_rate, frame_ms=frame_ms)

    async def wait_for_audio_track(self, identity: str | None = None, timeout: float = 10.0):
        """The first subscribed audio track (of `identity`, if given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sid, track in self._remote_tracks.items():
                found = self.state.find_track(sid)
                if found and found[1].kind == "audio" and (identity is None or found[0].identity == identity):
                    return track
            await asyncio.sleep(0.05)
        raise asyncio.TimeoutError(f"no audio track from {identity or 'anyone'} within {timeout:.0f}s")

    # -- publishing -------------------------------------------------------------------
    async def publish_audio(self, source: AsyncIterator[AudioChunk] | None = None, *, name: str = "microphone",
                            source_kind: int = TrackSource.MICROPHONE, timeout: float = 10.0,
                            max_buffer_ms: int = 200, paced_by_source: bool = False,
                            voice_rate: int | None = None, voice_bitrate: int = DEFAULT_BITRATE) -> LocalAudioTrack:
        """Publish an Opus microphone track; feed it from `source` or with `track.write`.

        `max_buffer_ms` bounds the audio waiting to be encoded; a live source
        that arrives in bursts wants it small, as what waits there is latency.
        `paced_by_source` sends each frame as soon as the source completes it
        (within 60 ms of the track's clock) instead of on the track's own clock.
        `voice_rate` (8, 12, 16, 24 or 48 kHz) encodes mono voice at that rate and
        `voice_bitrate` ourselves, where aiortc would resample to 48 kHz stereo at
        96 kb/s: cheaper for a source at that rate (a gateway's 16 kHz devices)."""
        self._check_open()
        encoder = VoiceEncoder(voice_rate, bitrate=voice_bitrate) if voice_rate else None
        mic = MicrophoneTrack(max_buffer_ms=max_buffer_ms, paced_by_source=paced_by_source, encoder=encoder)
        local = LocalAudioTrack(self, name, mic, source_kind)
        self._local_tracks.append(local)
        self._add_sender(local)
        await self._peer.negotiate()
        await self._request_publish(local, timeout)
        if source is not None:
            local.feed(source)
        self.emit("local_track_published", local)
        return local

    async def publish_video(self, track, *, name: str = "camera", codec: str = "vp8", width: int = 640,
                            height: int = 480, fps: float = 30, max_bitrate_kbps: int = 1000,
                            source_kind: int = TrackSource.CAMERA, timeout: float = 10.0) -> LocalVideoTrack:
        """Publish a camera: `track.recv()` returns `av.VideoFrame`s, which aiortc
        encodes as `codec` ("vp8" or "h264"), or `av.Packet`s of H.264 (one Annex B
        access unit each, pts and time_base set), which it sends as they are.
        Keyframe requests and receiver reports reach the returned track's
        `on_keyframe_request` and `on_receiver_report`."""
        self._check_open()
        local = LocalVideoTrack(self, name, track, codec=codec, width=width, height=height, fps=fps,
                                max_bitrate_kbps=max_bitrate_kbps, source=source_kind)
        self._local_tracks.append(local)
        self._add_sender(local)
        await self._peer.negotiate()
        await self._request_publish(local, timeout)
        self.emit("local_track_published", local)
        return local

    async def unpublish_track(self, local: "LocalAudioTrack | LocalVideoTrack") -> None:
        """Stop publishing `local`: its m-line goes inactive (aiortc cannot reuse it: each
        publish after an unpublish adds one), the others see it unpublished, and a rejoin
        no longer brings it back. Its source is the caller's to stop."""
        if local not in self._local_tracks:
            return
        self._local_tracks.remove(local)
        sid, local.sid = local.sid, ""
        local.published.clear()
        if self._peer is None or self.connection_state == "disconnected":
            return
        rtp = local._rtp
        for t in self._peer.pc.getTransceivers():
            if t.sender.track is rtp:
                t.direction = "inactive"
                await t.sender.stop()
        if self.state.local is not None:
            self.state.local.tracks.pop(sid, None)
        await self._peer.negotiate()

    def _add_sender(self, local) -> None:
        if isinstance(local, LocalVideoTrack):
            self._peer.add_video_sender(local)
        else:
            self._peer.add_sender(local.new_rtp_track())

    async def _request_publish(self, local: LocalAudioTrack, timeout: float = 10.0) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._publish_waiters[local.cid] = fut
        await self._send(self._protocol.add_track(local.cid, local.name, source=local.source, muted=local.muted,
                                                  **local.add_track_fields()))
        try:
            info = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise ConnectError(f"server did not confirm publishing {local.name!r} within {timeout:.0f}s") from None
        local.sid = info.sid
        if self.state.local is not None:
            self.state.local.tracks[info.sid] = TrackPublication.from_info(info)
        local.published.set()

    async def _set_muted(self, local: LocalAudioTrack, muted: bool) -> None:
        _mute_locally(local, muted)
        if local.sid:
            await self._send(self._protocol.mute(local.sid, muted))
            self._emit_all(self.state.apply_mute(local.sid, muted))

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        await self._send(self._protocol.update_participant(attributes=attributes))

    async def set_metadata(self, metadata: str) -> None:
        await self._send(self._protocol.update_participant(metadata=metadata))

    async def set_name(self, name: str) -> None:
        await self._send(self._protocol.update_participant(name=name))

    # -- data, RPC, streams -------------------------------------------------------------
    async def publish_data(self, payload: bytes | str, *, reliable: bool = True, topic: str | None = None,
                           destination_identities: list[str] | None = None, timeout: float = 10.0) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        await self._send_packet(user_packet(payload, reliable=reliable, topic=topic,
                                            destination_identities=destination_identities), timeout)

    async def _send_packet(self, packet: models.DataPacket, timeout: float = 10.0) -> None:
        self._check_open()
        # receivers attribute the packet by these, whatever the server adds
        me = self.local_participant
        packet.participant_identity = me.identity
        packet.participant_sid = me.sid
        if packet.WhichOneof("value") == "user":
            packet.user.participant_identity = me.identity
            packet.user.participant_sid = me.sid
        channel = self._peer.reliable if packet.kind == models.DataPacket.Kind.RELIABLE else self._peer.lossy
        deadline = time.monotonic() + timeout
        while channel.readyState != "open":
            if self.connection_state == "disconnected" or time.monotonic() > deadline:
                raise ConnectError(f"data channel {channel.label} is not open")
            await asyncio.sleep(0.02)
            channel = self._peer.reliable if packet.kind == models.DataPacket.Kind.RELIABLE else self._peer.lossy
        channel.send(packet.SerializeToString())

    def _on_data(self, data) -> None:
        try:
            packet = decode_packet(data)
        except ProtocolError as exc:
            log.warning("dropping data packet: %s", exc)
            return
        kind = packet.WhichOneof("value")
        sender = sender_identity(packet)
        if kind == "user":
            msg: DataMessage = to_message(packet)
            self.emit("data_received", msg)
        elif kind == "rpc_request":
            self._spawn(self._rpc.handle_request(sender, packet.rpc_request))
        elif kind == "rpc_ack":
            self._rpc.handle_ack(packet.rpc_ack)
        elif kind == "rpc_response":
            self._rpc.handle_response(packet.rpc_response)
        elif kind == "stream_header":
            try:
                reader = self._streams.on_header(packet.stream_header, sender)
            except ProtocolError as exc:
                log.warning("dropping text stream: %s", exc)
                return
            if reader is not None:
                handler = self._stream_handlers.get(reader.info.topic)
                if handler is not None:
                    result = handler(reader, sender)
                    if asyncio.iscoroutine(result):
                        self._spawn(result)
                if reader.done:
                    self.emit("text_stream_received", reader)
        elif kind == "stream_chunk":
            self._streams.on_chunk(packet.stream_chunk)
        elif kind == "stream_trailer":
            reader = self._streams.on_trailer(packet.stream_trailer)
            if reader is not None:
                self.emit("text_stream_received", reader)

    def register_rpc_method(self, method: str, handler: RpcHandler) -> None:
        self._rpc.register(method, handler)

    def unregister_rpc_method(self, method: str) -> None:
        self._rpc.unregister(method)

    def set_rpc_fallback(self, handler: "RpcFallback | None") -> None:
        """Handle calls to methods nobody registered: handler(method, invocation)."""
        self._rpc.fallback = handler

    async def perform_rpc(self, destination_identity: str, method: str, payload: str = "", *,
                          response_timeout: float = DEFAULT_RESPONSE_TIMEOUT) -> str:
        return await self._rpc.call(destination_identity, method, payload, response_timeout=response_timeout)

    def register_text_stream_handler(self, topic: str, handler: StreamHandler) -> None:
        self._stream_handlers[topic] = handler

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the lifecycle: feed it events, perform its actions -------------------------------
    async def _handle(self, event) -> None:
        await self._perform(self._lifecycle.handle(event, time.monotonic()))

    def _spawn_lifecycle(self, coro, what: str) -> None:
        self._lifecycle_tasks.spawn(coro, what)

    async def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, (StartJoin, StartResume, StartRejoin)):
                self._start_attempt(action)
            elif isinstance(action, AbortAttempt):
                self._abort_attempt(action.attempt, action.reason)
            elif isinstance(action, ResendOffer):
                self._spawn(self._resend_offer())
            elif isinstance(action, ScheduleRetry):
                log.info("next %s attempt in %.1fs", action.attempt_kind, action.delay)
            elif isinstance(action, Close):
                await self._perform_close(action.reason)
            elif isinstance(action, Emit):
                self.emit(action.name, *action.args)
        self._arm_timer()

    async def _resend_offer(self) -> None:
        try:
            if self._peer is not None:
                await self._peer.resend_offer()
        except Exception as exc:  # the link died again: the next resume sends it again
            log.info("could not resend the offer: %s", exc)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._lifecycle.next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None

        async def fire() -> None:
            await self._perform(self._lifecycle.handle_timer(time.monotonic()))

        self._spawn_lifecycle(fire(), "lifecycle timer")

    def _start_attempt(self, action) -> None:
        if isinstance(action, StartResume):
            log.info("resuming the session (attempt %d)", action.attempt)
            coro = self._resume_attempt(action.attempt)
        else:
            rejoin = isinstance(action, StartRejoin)
            if rejoin:
                log.info("rejoining the room (attempt %d)", action.attempt)
            coro = self._join_attempt(action.attempt, rejoin)
        self._live_signal = None  # the old socket's end is old news now
        task = self._lifecycle_tasks.spawn(coro, f"connection attempt {action.attempt}", force=True)
        self._attempt = (action.attempt, task)

    def _abort_attempt(self, attempt: int, reason: str) -> None:
        if self._attempt is None or self._attempt[0] != attempt:
            return
        task = self._attempt[1]
        if task is not asyncio.current_task() and not task.done():
            log.info("abandoning attempt %d: %s", attempt, reason)
            task.cancel()

    async def _join_attempt(self, attempt: int, rejoin: bool) -> None:
        try:
            if rejoin:
                await self._close_session()
            await self._join(rejoin=rejoin)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure is a failed attempt, never the end of the loop
            self._attempt_error = exc
            await self._attempt_failed(attempt, exc)
            return
        await self._handle(JoinSucceeded(attempt))

    async def _resume_attempt(self, attempt: int) -> None:
        try:
            refused = await self._try_resume()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._attempt_failed(attempt, exc)
            return
        if refused is not None:
            log.info("server refused to resume the session (%s)", refused)
            await self._handle(ResumeRefused(attempt, refused))
        else:
            await self._handle(ResumeSucceeded(attempt))

    async def _attempt_failed(self, attempt: int, exc: Exception) -> None:
        event = AttemptFailed.from_exception(attempt, exc)
        if self.connection_state == "reconnecting":
            log.info("reconnect attempt %d failed: %s", attempt, event.error)
        await self._handle(event)

    async def _try_resume(self) -> str | None:
        """Reopen signaling for the same participant; the peer connection stays up.

        Returns None once resumed, else why the server refused."""
        if self._signal is not None:
            await self._signal.close()
        opts = JoinOptions(auto_subscribe=self.options.auto_subscribe)
        query = join_query(opts, reconnect=True, participant_sid=self.local_participant.sid,
                           reconnect_reason=ReconnectReason.RR_SIGNAL_DISCONNECTED)
        first = await self._open_signal(query)
        kind = first.WhichOneof("message")
        if kind != "reconnect":
            await self._signal.close()
            if kind == "leave":
                return DisconnectReason.Name(first.leave.reason)
            return f"answered with {kind}"
        self._start_signal()
        return None

    async def _close_session(self) -> None:
        if self._signal is not None:
            await self._signal.close()
            self._signal = None
        if self._peer is not None:
            peer, self._peer = self._peer, None
            await peer.close()
        for sid, track in list(self._remote_tracks.items()):
            found = self.state.find_track(sid)
            if found:
                self.emit("track_unsubscribed", track, found[1], found[0])
        self._remote_tracks.clear()
        self._unresolved_tracks.clear()

    # -- leave ----------------------------------------------------------------------------
    async def disconnect(self) -> None:
        """Leave the room; the others see us go with reason CLIENT_INITIATED.

        While reconnecting this stops the attempts at once."""
        if self.connection_state == "disconnected":
            return
        if self._signal is not None and self._live_signal is self._signal:
            try:
                await asyncio.wait_for(self._signal.send(self._protocol.leave()), 2)
            except Exception:
                pass
        await self._handle(CloseRequested("CLIENT_INITIATED"))

    async def _perform_close(self, reason: str) -> None:
        if self._attempt is not None:
            task = self._attempt[1]
            self._attempt = None
            if task is not asyncio.current_task() and not task.done():
                task.cancel()
                # let it unwind before we tear down what it may be building
                await asyncio.wait([task], timeout=2)
        self._live_signal = None
        await self._teardown()
        self._closed.set()

    async def _teardown(self) -> None:
        self._rpc.close()
        for t in self._local_tracks:
            t.track.stop()
        await self._close_session()
        for task in list(self._tasks):
            task.cancel()
        # the app's async handlers belong to this session; "disconnected" itself is emitted after this
        await self.cancel_handlers()

    async def wait_closed(self) -> str:
        await self._closed.wait()
        return self.disconnect_reason or ""


async def connect(url: str, token: str, options: RoomOptions | None = None, **kwargs) -> Room:
    """Join the room the token grants; returns a connected `Room`."""
    if options is None:
        options = RoomOptions(**kwargs)
    room = Room(options)
    await room.connect(url, token)
    return room
