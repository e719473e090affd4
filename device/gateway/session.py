"""One device's LiveKit participant, kept by the gateway across link drops.

The session owns a `Room` joined with the device's token, an Opus microphone
fed from the device's frames, and the downlink: the agent's audio encoded in the
device's codec. A device socket attaches to it; when the socket goes, the
session waits out the grace period before leaving the room.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import secrets
from typing import Any

from .. import device_protocol as dp
from .codecs import FrameCodec
from ..rtc.room import LocalAudioTrack, Room, RoomOptions
from ..rtc.data import DataMessage
from ..rtc.errors import DataTooLarge, LiveKitError, RpcError
from .closing import close_link, send_then_close
from .link import FrameRejected, Outbox, UplinkGuard
from . import roster
from ..rtc.rpc import RpcInvocation
from ..rtc.state import Participant
from ..rtc.tasks import TaskSet

log = logging.getLogger(__name__)

DETACHED_CONTROL_LIMIT = 64   # events kept for a device while its link is down
MAX_DEVICE_RPCS = 8           # calls a device may have in flight
MIC_BUFFER_MS = 60            # device audio waiting for the Opus encoder
MAX_SESSION_TASKS = MAX_DEVICE_RPCS + 24  # the device's calls, link closes, the session's own close


def participant_info(p: Participant) -> dict[str, Any]:
    info: dict[str, Any] = {"sid": p.sid, "identity": p.identity, "name": p.name, "kind": p.kind,
                            "attributes": dict(p.attributes)}
    if p.agent_state is not None:
        info["agent_state"] = p.agent_state
    return info


def _payload_fields(payload: bytes) -> dict[str, str]:
    try:
        return {"text": payload.decode()}
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(payload).decode()}


def pick_downlink(candidates: list[tuple[str, bool]]) -> str | None:
    """From (track sid, is an agent's), oldest first: the newest agent track, else the newest."""
    best: tuple[str, bool] | None = None
    for sid, is_agent in candidates:
        if best is None or is_agent >= best[1]:
            best = (sid, is_agent)
    return best[0] if best else None


class DeviceSession:
    def __init__(self, *, codec: int, max_text: int, grace: float, device_info: dict[str, str] | None = None,
                 room_options: RoomOptions | None = None, stats_every: float = 0.0):
        self.id = secrets.token_urlsafe(12)
        self.stats_every = stats_every  # seconds between downlink stats lines; 0: none
        self.key = secrets.token_urlsafe(24)
        self.codec = codec
        self.max_text = max_text
        self.grace = grace
        self.device_info = device_info or {}
        # subscribed only to the one track the device hears (_choose_downlink)
        self.room = Room(dataclasses.replace(room_options or RoomOptions(), auto_subscribe=False))
        self.mic: LocalAudioTrack | None = None
        self.guard = UplinkGuard(codec)
        self.outbox = Outbox()
        self.decoder = FrameCodec(codec)
        self.encoder = FrameCodec(codec)
        self._ws = None
        self._wake = asyncio.Event()
        self._writer: asyncio.Task | None = None
        self._grace_task: asyncio.Task | None = None
        self._downlink: asyncio.Task | None = None
        self._downlink_sid: str | None = None  # the track the device hears
        self._downlink_track = None            # the receiver it comes through
        self._asked: str | None = None         # the track we told the server we want
        self._syncing: asyncio.Task | None = None
        self._pending_rpcs: dict[str, asyncio.Future] = {}
        self._device_rpcs = 0
        self._tasks = TaskSet(log, MAX_SESSION_TASKS)
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.on_closed = None  # set by the gateway: forget the session
        self.frames_down = 0

    # -- joining ---------------------------------------------------------------
    @property
    def identity(self) -> str:
        return self.room.local_participant.identity

    async def join(self, url: str, token: str, *, muted: bool = False) -> None:
        await self.room.connect(url, token)
        for name in ("participant_connected", "participant_disconnected", "participant_attributes_changed",
                     "agent_state_changed", "active_speakers_changed", "data_received", "token_refreshed",
                     "track_published", "track_unpublished", "track_subscribed", "track_unsubscribed",
                     "reconnected", "disconnected"):
            self.room.on(name, getattr(self, "_on_" + name))
        self.room.set_rpc_fallback(self._forward_rpc)
        # 3 frames: enough for network jitter; more would only hold latency once it builds up.
        # Encoded here at the device's rate, mono: no resampling, no 48 kHz stereo encode
        self.mic = await self.room.publish_audio(name="microphone", max_buffer_ms=MIC_BUFFER_MS,
                                                 paced_by_source=True, voice_rate=dp.SAMPLE_RATE)
        if muted:
            await self.mic.mute()
        self._choose_downlink()

    def welcome(self) -> dict[str, Any] | None:
        """The join result, trimmed to the device's max_text; None if it cannot fit at all."""
        me = self.room.local_participant
        msg = {"t": "welcome", "v": dp.PROTOCOL_VERSION, "session": self.id, "key": self.key,
               "grace_s": int(self.grace), "codec": dp.CODEC_NAMES[self.codec],
               "room": {"name": self.room.name, "sid": self.room.sid, "metadata": self.room.metadata},
               "me": {"sid": me.sid, "identity": me.identity, "name": me.name},
               "participants": self._participants()}
        return roster.fit(msg, self.max_text)

    def resumed(self) -> dict[str, Any] | None:
        """The room as it is now, for a device that resumes; None if it cannot fit at all."""
        return roster.fit({"t": "resumed", "session": self.id, "participants": self._participants()},
                          self.max_text)

    def _participants(self) -> list[dict[str, Any]]:
        return [participant_info(p) for p in self.room.remote_participants.values()]

    # -- the device's socket -------------------------------------------------------
    @property
    def attached(self) -> bool:
        return self._ws is not None

    def attach(self, ws, first: dict[str, Any]) -> None:
        """Make ws the device's link; `first` is the welcome or resumed message."""
        if self._grace_task:
            self._grace_task.cancel()
            self._grace_task = None
        self._ws = ws
        self.guard.resync()
        self.outbox.clear_audio()
        detached_backlog = list(self.outbox.control)
        self.outbox.control.clear()
        self.outbox.put_control(json.dumps(first))
        if self.outbox.control_dropped:
            self.outbox.put_control(json.dumps({"t": "dropped", "what": "events",
                                                "count": self.outbox.control_dropped}))
            self.outbox.control_dropped = 0
        for text in detached_backlog:
            self.outbox.put_control(text)
        token = self.room.refresh_token
        if token:
            self.outbox.put_control(json.dumps(self._token_message(token)))
        self._writer = asyncio.ensure_future(self._write_loop(ws))
        self._wake.set()

    def detach(self, ws) -> None:
        """The link is gone; keep the participant for the grace period."""
        if self._ws is not ws:
            return
        self._ws = None
        if self._writer:
            self._writer.cancel()
            self._writer = None
        self.outbox.clear_audio()
        if not self.closed.is_set() and self._grace_task is None:
            self._grace_task = asyncio.ensure_future(self._grace_expiry())

    async def _grace_expiry(self) -> None:
        await asyncio.sleep(self.grace)
        if self._ws is None:
            log.info("device %s did not come back within %.0f s; leaving", self.identity, self.grace)
            await self.close("device link lost")

    async def _write_loop(self, ws) -> None:
        try:
            while True:
                item = self.outbox.pop()
                if item is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await ws.send(item)
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket closed under us; the reader notices too
            return

    def send(self, msg: dict[str, Any]) -> bool:
        """Queue a control message; False if it is too large for the device."""
        text = json.dumps(msg)
        if len(text.encode()) > self.max_text:
            return False
        if self._ws is None:
            if len(self.outbox.control) >= DETACHED_CONTROL_LIMIT:
                self.outbox.control.popleft()
                self.outbox.control_dropped += 1
            self.outbox.control.append(text)
            return True
        if not self.outbox.put_control(text):
            # the device stopped reading: drop its link, its session waits for a resume
            log.warning("device %s is not reading its messages; dropping its link", self.identity)
            ws = self._ws
            self.detach(ws)
            self._tasks.spawn(close_link(ws, 1008, "device too slow"),
                              f"closing the link of device {self.identity}", force=True)
            return True
        self._wake.set()
        return True

    def send_or_report(self, msg: dict[str, Any], what: str) -> bool:
        if self.send(msg):
            return True
        size = len(json.dumps(msg).encode())
        self.send({"t": "dropped", "what": what, "size": size})
        return False

    # -- uplink: from the device --------------------------------------------------------
    def on_audio(self, frame: bytes) -> None:
        """A binary frame; raises FrameRejected for the caller to report."""
        self.guard.check_audio(frame)
        if self.mic is None:
            raise FrameRejected(dp.E_STATE, "audio before the session is joined", fatal=True)
        self.mic.track.write_nowait(self.decoder.decode(frame), dp.SAMPLE_RATE)

    async def on_control(self, msg: dict[str, Any]) -> None:
        self.guard.check_control()
        t = msg["t"]
        if t == "ping":
            self.send({"t": "pong", **({"id": msg["id"]} if "id" in msg else {})})
        elif t == "data":
            await self._publish_data(msg)
        elif t == "rpc":
            self._call_rpc(msg)
        elif t == "rpc_result":
            self._rpc_result(msg)
        elif t == "mute":
            if self.mic:
                await (self.mic.mute() if msg["muted"] else self.mic.unmute())
        elif t == "attributes":
            await self.room.set_attributes(msg["attributes"])
        elif t == "leave":
            await self.close("device left: " + msg.get("reason", ""), notify=False)
        else:  # hello or resume on a live link
            raise FrameRejected(dp.E_STATE, f"{t!r} is only valid as the first message", fatal=True)

    async def _publish_data(self, msg: dict[str, Any]) -> None:
        try:
            payload = base64.b64decode(msg["b64"], validate=True) if "b64" in msg else msg.get("text", "").encode()
        except ValueError:
            self.send(dp.error_message(dp.E_DATA, "b64 is not valid base64", False))
            return
        try:
            await self.room.publish_data(payload, reliable=msg.get("reliable", True), topic=msg.get("topic"),
                                         destination_identities=msg.get("to"), timeout=5.0)
        except DataTooLarge as exc:
            self.send(dp.error_message(dp.E_TOO_LARGE, str(exc), False))
        except LiveKitError as exc:
            self.send(dp.error_message(dp.E_DATA, f"data not sent: {exc}", False))

    def _call_rpc(self, msg: dict[str, Any]) -> None:
        rid = msg["id"]
        if self._device_rpcs >= MAX_DEVICE_RPCS:
            self.send(self._rpc_error(rid, RpcError(RpcError.APPLICATION_ERROR,
                                                    f"more than {MAX_DEVICE_RPCS} calls in flight")))
            return
        self._device_rpcs += 1

        async def call() -> None:
            try:
                timeout = max(0.5, msg.get("timeout_ms", 10000) / 1000.0)
                payload = await self.room.perform_rpc(msg["to"], msg["method"], msg.get("payload", ""),
                                                      response_timeout=timeout)
                reply = {"t": "rpc_result", "id": rid, "payload": payload}
            except RpcError as err:
                reply = self._rpc_error(rid, err)
            except LiveKitError as exc:
                reply = self._rpc_error(rid, RpcError(RpcError.SEND_FAILED, str(exc)))
            except Exception:  # our bug: log it, and the device still gets its answer
                log.exception("device %s's call %r failed", self.identity, msg["method"])
                reply = self._rpc_error(rid, RpcError(RpcError.APPLICATION_ERROR, "gateway error"))
            finally:
                self._device_rpcs -= 1
            self.send_or_report(reply, "rpc_result")

        if self._tasks.spawn(call(), f"device {self.identity}'s call {msg['method']!r}") is None:
            self._device_rpcs -= 1
            self.send(self._rpc_error(rid, RpcError(RpcError.APPLICATION_ERROR, "gateway busy")))

    @staticmethod
    def _rpc_error(rid: str, err: RpcError) -> dict[str, Any]:
        # a remote participant's error may be longer than the device protocol carries
        error: dict[str, Any] = {"code": err.code, "message": err.message[:dp.MAX_REASON]}
        if err.data:
            error["data"] = err.data[:dp.MAX_PAYLOAD]
        return {"t": "rpc_result", "id": rid, "error": error}

    def fail_device_answer(self, rid: str, why: str) -> None:
        """The device answered call `rid` with a malformed rpc_result: the caller hears it now, not at its timeout."""
        fut = self._pending_rpcs.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_exception(RpcError(RpcError.APPLICATION_ERROR, f"the device's answer was malformed: {why}"))

    def _rpc_result(self, msg: dict[str, Any]) -> None:
        fut = self._pending_rpcs.pop(msg["id"], None)
        if fut is None or fut.done():
            return  # the caller gave up already
        err = msg.get("error")
        if err is not None:
            code = err.get("code") if isinstance(err.get("code"), int) else RpcError.APPLICATION_ERROR
            fut.set_exception(RpcError(code, str(err.get("message", ""))[:256], str(err.get("data", ""))))
        else:
            fut.set_result(msg.get("payload", ""))

    async def _forward_rpc(self, method: str, inv: RpcInvocation) -> str:
        """A participant calls the device: forward it, wait for the device's answer."""
        fut = asyncio.get_running_loop().create_future()
        self._pending_rpcs[inv.request_id] = fut
        msg = {"t": "rpc", "id": inv.request_id, "from": inv.caller_identity, "method": method,
               "payload": inv.payload, "timeout_ms": int(inv.response_timeout * 1000)}
        if not self.send_or_report(msg, "rpc"):
            self._pending_rpcs.pop(inv.request_id, None)
            raise RpcError(RpcError.REQUEST_PAYLOAD_TOO_LARGE, "request too large for the device")
        try:
            return await fut
        finally:
            self._pending_rpcs.pop(inv.request_id, None)

    # -- downlink: to the device ------------------------------------------------------
    def _choose_downlink(self) -> None:
        """Hear one track: an agent's if there is one, else the newest audio track.

        Only that one is subscribed: every other track would cost the SFU's
        bandwidth and our SRTP decryption for nothing."""
        candidates = [(sid, p.is_agent) for p in self.room.remote_participants.values()
                      for sid, pub in p.tracks.items() if pub.kind == "audio"]
        sid = pick_downlink(candidates)
        if sid != self._downlink_sid:
            self._downlink_sid = sid
            if self._downlink:
                self._downlink.cancel()
                self._downlink = None
        self._sync_subscription()
        track = self.room.remote_track(sid) if sid is not None else None
        if self._downlink and not self._downlink.done() and track is self._downlink_track:
            return
        if self._downlink:  # the server moved our track onto another receiver
            self._downlink.cancel()
            self._downlink = None
        self._downlink_track = track
        if track is not None:  # else its track_subscribed brings us back here
            self._downlink = asyncio.ensure_future(self._pump_downlink(track))

    def _sync_subscription(self) -> None:
        """Bring the server's view (`_asked`) to `_downlink_sid`, one request at a time, in order."""
        if self._asked != self._downlink_sid and (self._syncing is None or self._syncing.done()):
            self._syncing = self._tasks.spawn(self._sync_loop(), f"device session {self.id}'s subscription",
                                              force=True)  # at most one at a time

    async def _sync_loop(self) -> None:
        while self._asked != self._downlink_sid:
            old, want = self._asked, self._downlink_sid
            try:
                if old is not None:
                    if self.room.state.find_track(old) is not None:
                        await self.room.set_subscribed(old, False)
                    self._asked = None
                elif want is not None:
                    await self.room.set_subscribed(want, True)
                    self._asked = want
            except KeyError:  # unpublished meanwhile; its track_unpublished chose another already
                if want == self._downlink_sid:
                    return
            except LiveKitError as exc:  # offline: "reconnected" brings us back
                log.info("device session %s: subscription change waits for the room: %s", self.id, exc)
                return

    async def _pump_downlink(self, track) -> None:
        stream = self.room.audio_stream(track, sample_rate=dp.SAMPLE_RATE, frame_ms=dp.FRAME_MS)
        every = max(1, round(self.stats_every * 1000 / dp.FRAME_MS)) if self.stats_every > 0 else 0
        n = 0
        async for chunk in stream:
            n += 1
            if every and n % every == 0:
                # the downlink's jitter buffer and concealment, for a harness or an operator watching a call
                log.info("device %s downlink stats %s", self.identity, json.dumps(stream.stats, sort_keys=True))
            if self._ws is None:
                continue
            self.outbox.put_audio(self.encoder.encode(chunk.samples))
            self.frames_down += 1
            self._wake.set()

    # -- room events -> device messages -------------------------------------------------
    def _on_participant_connected(self, p: Participant) -> None:
        msg = {"t": "joined", "p": participant_info(p)}
        self.send_or_report(roster.fit_participant(msg, self.max_text) or msg, "joined")

    def _on_participant_disconnected(self, p: Participant, reason=None) -> None:
        self.send({"t": "left", "identity": p.identity, "reason": str(reason or "")[:dp.MAX_REASON]})
        self._choose_downlink()

    def _on_participant_attributes_changed(self, changed: dict[str, str], p: Participant) -> None:
        if p.identity == self.room.local_participant.identity:
            return
        self.send_or_report({"t": "attributes", "identity": p.identity, "changed": dict(changed)}, "attributes")

    def _on_agent_state_changed(self, p: Participant, state: str) -> None:
        self.send({"t": "agent_state", "identity": p.identity, "state": state or ""})

    def _on_active_speakers_changed(self, speakers: list[Participant]) -> None:
        self.send({"t": "speakers", "identities": [p.identity for p in speakers][:64]})

    def _on_data_received(self, message: DataMessage) -> None:
        msg = {"t": "data", "from": message.participant_identity or "", **_payload_fields(message.payload)}
        if message.topic:
            msg["topic"] = message.topic
        self.send_or_report(msg, "data")

    def _token_message(self, token: str) -> dict[str, Any]:
        """The token, or (a device cannot use part of one) `dropped` if it is larger than max_text."""
        msg = {"t": "token", "token": token}
        size = len(json.dumps(msg).encode())
        if size <= self.max_text:
            return msg
        log.warning("device %s: its refreshed token (%d bytes) exceeds its max_text (%d); not sent",
                    self.identity, size, self.max_text)
        return {"t": "dropped", "what": "token", "size": size}

    def _on_token_refreshed(self, token: str) -> None:
        if self._ws is not None:
            self.send(self._token_message(token))
        # a detached device gets the newest token when it attaches again

    def _on_track_published(self, *args) -> None:
        self._choose_downlink()

    def _on_track_unpublished(self, *args) -> None:
        self._choose_downlink()

    def _on_track_subscribed(self, *args) -> None:
        self._choose_downlink()

    def _on_track_unsubscribed(self, *args) -> None:
        self._choose_downlink()

    def _on_reconnected(self, *args) -> None:
        self._choose_downlink()

    def _on_disconnected(self, reason=None) -> None:
        if not self.closed.is_set():
            self._tasks.spawn(self.close(f"room left: {reason}"), f"closing device session {self.id}", force=True)

    # -- ending -------------------------------------------------------------------------
    async def close(self, reason: str, *, notify: bool = True, code: int = dp.CLOSE_LEFT) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.close_reason = reason
        if self.on_closed:  # no longer resumable, whatever happens below
            self.on_closed(self)
        if self._grace_task:
            self._grace_task.cancel()
        if self._downlink:
            self._downlink.cancel()
        self._tasks.cancel()  # the device's calls; not this close, if it runs in one of them
        for fut in self._pending_rpcs.values():
            if not fut.done():
                fut.set_exception(RpcError(RpcError.RECIPIENT_DISCONNECTED, "device left"))
        ws = self._ws
        self._ws = None
        if self._writer:
            self._writer.cancel()
            self._writer = None
        if ws is not None:  # bounded: leaving the room must not wait on a dead link
            if notify:  # the leave goes ahead of anything still queued
                leave = json.dumps({"t": "leave", "reason": reason[:dp.MAX_REASON]})
                await send_then_close(ws, leave, code, reason[:120])
            else:
                await close_link(ws, dp.CLOSE_NORMAL, reason[:120])
        try:
            await self.room.disconnect()
        except Exception:
            log.exception("leaving the room for device session %s", self.id)

