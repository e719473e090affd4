"""The gateway: puts constrained devices into LiveKit rooms.

Each device speaks the device protocol (docs/device-protocol.md) over one
WebSocket; the gateway joins the room as that device with the device's own
token (it holds no API secret) and bridges audio and events. A device's
trouble stays with that device: its own queues, limits and errors.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .. import device_protocol as dp
from ..rtc.room import RoomOptions
from ..rtc.errors import ConnectError, LiveKitError, ServerUnreachable, TokenRejected, redact_tokens
from ..rtc.logs import websocket_logger
from ..rtc.tasks import TaskSet
from .closing import LINK_CLOSE_TIMEOUT, close_link, send_then_close
from .link import FrameRejected
from .session import DeviceSession

log = logging.getLogger(__name__)

DEVICE_PATH = "/v1/device"
# Frames up to this size get a protocol error; websockets itself cuts larger ones.
SOCKET_MAX_FRAME = 4 * dp.MAX_TEXT_FRAME
# What may sit in buffers on the way to a device that reads slowly: beyond this
# the Outbox drops its oldest audio, rather than the kernel keeping seconds of it.
DEVICE_SNDBUF = 16384
DEVICE_WRITE_LIMIT = 4096


@dataclass
class GatewayConfig:
    livekit_url: str
    host: str = "127.0.0.1"
    port: int = 8765
    grace: float = 15.0            # seconds a dropped device keeps its participant
    idle_timeout: float = 15.0     # a device silent this long has lost its link
    hello_timeout: float = 10.0
    join_timeout: float = 10.0
    max_devices: int = 500
    ssl_context: ssl.SSLContext | None = None
    ice_host_addresses: list[str] | None = None
    stats_every: float = 0.0       # seconds between each device's downlink stats lines (0: none)


class _Fatal(Exception):
    def __init__(self, code: str, message: str, close: int, id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
        self.id = id


_CLOSE_FOR = {dp.E_TOO_LARGE: dp.CLOSE_TOO_LARGE, dp.E_TOKEN: dp.CLOSE_TOKEN, dp.E_SESSION: dp.CLOSE_SESSION,
              dp.E_UNREACHABLE: dp.CLOSE_UNREACHABLE, dp.E_FULL: dp.CLOSE_FULL}


def _fatal(code: str, message: str, id: str | None = None) -> _Fatal:
    return _Fatal(code, message, _CLOSE_FOR.get(code, dp.CLOSE_PROTOCOL), id)


class Gateway:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self.sessions: dict[str, DeviceSession] = {}
        self._joining = 0  # hellos accepted and still joining: they hold a slot of max_devices
        self._tasks = TaskSet(log)
        self._server: Server | None = None

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.ssl_context else "ws"
        return f"{scheme}://{self.config.host}:{self.port}{DEVICE_PATH}"

    @property
    def port(self) -> int:
        if self._server is not None:
            return self._server.sockets[0].getsockname()[1]
        return self.config.port

    async def start(self) -> "Gateway":
        self._server = await serve(self._serve, self.config.host, self.config.port, ssl=self.config.ssl_context,
                                   max_size=SOCKET_MAX_FRAME, max_queue=32, process_request=self._check_path,
                                   ping_interval=10, ping_timeout=self.config.idle_timeout, compression=None,
                                   close_timeout=LINK_CLOSE_TIMEOUT,
                                   write_limit=DEVICE_WRITE_LIMIT, logger=websocket_logger("server"))
        log.info("gateway listening on %s for LiveKit at %s", self.url, self.config.livekit_url)
        return self

    async def close(self) -> None:
        """Stop: each device is told and its link closed with 1012, so it comes back with hello."""
        if self._server is not None:
            self._server.close(close_connections=False)
        await asyncio.gather(*(s.close("gateway shutting down", code=dp.CLOSE_RESTART)
                               for s in list(self.sessions.values())), return_exceptions=True)
        await self._tasks.aclose()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> "Gateway":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @staticmethod
    def _check_path(connection: ServerConnection, request):
        if not request.path.split("?", 1)[0].endswith(DEVICE_PATH):
            # a wrong gateway URL on a device: the header tells its firmware what to say
            response = connection.respond(404, f"the device protocol is served at {DEVICE_PATH}\n")
            response.headers["X-Device-Path"] = DEVICE_PATH
            return response
        return None

    # -- one device socket ---------------------------------------------------------
    async def _serve(self, ws: ServerConnection) -> None:
        session: DeviceSession | None = None
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DEVICE_SNDBUF)
        try:
            session = await self._open(ws)
            await self._receive(ws, session)
        except _Fatal as exc:
            await self._reject(ws, exc)
        except ConnectionClosed:
            pass
        finally:
            if session is not None:
                session.detach(ws)

    async def _reject(self, ws: ServerConnection, exc: _Fatal) -> None:
        error = dp.error_message(exc.code, exc.message[:2 * dp.MAX_REASON], True, id=exc.id)
        await send_then_close(ws, json.dumps(error), exc.close, exc.code)

    async def _open(self, ws: ServerConnection) -> DeviceSession:
        try:
            first = await asyncio.wait_for(ws.recv(), self.config.hello_timeout)
        except asyncio.TimeoutError:
            raise _fatal(dp.E_STATE, f"no hello within {self.config.hello_timeout:.0f} s") from None
        if not isinstance(first, str):
            raise _fatal(dp.E_STATE, "the first message must be a hello or resume text frame")
        try:
            msg = dp.decode_message(first, dp.DEVICE_MESSAGES)
        except dp.ProtocolError as exc:
            raise _fatal(exc.code, exc.message) from None
        if msg.get("v") != dp.PROTOCOL_VERSION and msg["t"] in ("hello", "resume"):
            raise _fatal(dp.E_VERSION, f"protocol version {msg.get('v')} is not spoken here; "
                         f"this gateway speaks version {dp.PROTOCOL_VERSION}")
        if msg["t"] == "hello":
            return await self._hello(ws, msg)
        if msg["t"] == "resume":
            return self._resume(ws, msg)
        raise _fatal(dp.E_STATE, f"the first message must be hello or resume, not {msg['t']!r}")

    async def _hello(self, ws: ServerConnection, msg: dict[str, Any]) -> DeviceSession:
        try:
            codec = dp.codec_id(msg["codec"])
        except dp.ProtocolError as exc:
            raise _fatal(exc.code, exc.message) from None
        if len(self.sessions) + self._joining >= self.config.max_devices:
            raise _fatal(dp.E_FULL, f"gateway is full ({self.config.max_devices} devices); try again later")
        self._joining += 1  # the slot is this hello's from now on, until it joins or fails
        try:
            return await self._join(ws, msg, codec)
        finally:
            self._joining -= 1

    async def _join(self, ws: ServerConnection, msg: dict[str, Any], codec: int) -> DeviceSession:
        max_text = min(max(msg.get("max_text", dp.DEFAULT_DEVICE_TEXT), dp.MIN_DEVICE_TEXT), dp.MAX_TEXT_FRAME)
        options = RoomOptions(auto_subscribe=False, connect_timeout=self.config.join_timeout,
                              ice_host_addresses=self.config.ice_host_addresses)
        session = DeviceSession(codec=codec, max_text=max_text, grace=self.config.grace,
                                device_info=msg.get("device"), room_options=options,
                                stats_every=self.config.stats_every)
        try:
            await session.join(self.config.livekit_url, msg["token"], muted=msg.get("muted", False))
        except TokenRejected as exc:
            await session.close("join refused", notify=False)
            raise _fatal(dp.E_TOKEN, redact_tokens(exc.reason or str(exc))) from None
        except ServerUnreachable as exc:
            await session.close("LiveKit unreachable", notify=False)
            raise _fatal(dp.E_UNREACHABLE, redact_tokens(str(exc))) from None
        except (ConnectError, LiveKitError, OSError, asyncio.TimeoutError) as exc:
            await session.close("join failed", notify=False)
            raise _fatal(dp.E_UNREACHABLE, f"joining LiveKit failed: {redact_tokens(str(exc))}") from None
        except BaseException:
            await session.close("join aborted", notify=False)
            raise
        if ws.state.name != "OPEN":  # the device went away while we joined: it cannot resume
            await session.close("device left during join", notify=False)
            raise ConnectionClosed(None, None)
        welcome = session.welcome()
        if welcome is None:
            await session.close("welcome too large", notify=False)
            raise _fatal(dp.E_TOO_LARGE, f"even trimmed, the welcome exceeds max_text ({max_text} bytes)")
        self.sessions[session.id] = session
        session.on_closed = lambda s: self.sessions.pop(s.id, None)
        log.info("device %s joined room %s (%s)", session.identity, session.room.name, msg["codec"])
        session.attach(ws, welcome)
        return session

    def _resume(self, ws: ServerConnection, msg: dict[str, Any]) -> DeviceSession:
        session = self.sessions.get(msg["session"])
        if session is None or not hmac.compare_digest(session.key, msg["key"]) or session.closed.is_set():
            raise _fatal(dp.E_SESSION, "no such session (the grace period may have passed); send hello")
        if "codec" in msg and msg["codec"] != dp.CODEC_NAMES[session.codec]:
            raise _fatal(dp.E_CODEC, "a resumed session keeps its codec")
        resumed = session.resumed()
        if resumed is None:
            raise _fatal(dp.E_TOO_LARGE, f"even trimmed, the room exceeds max_text ({session.max_text} bytes)")
        old = session._ws
        if old is not None:
            session.detach(old)
            self._tasks.spawn(close_link(old, dp.CLOSE_REPLACED, "resumed on another link"),
                              f"closing device {session.identity}'s old link", force=True)
        log.info("device %s resumed", session.identity)
        session.attach(ws, resumed)
        return session

    async def _receive(self, ws: ServerConnection, session: DeviceSession) -> None:
        try:
            await self._receive_frames(ws, session)
        finally:
            if session.closed.is_set():
                # the session closes the socket itself, after its leave message; returning
                # from this handler first would close it under the leave with a plain 1000
                try:
                    await asyncio.wait_for(ws.wait_closed(), 3.0)
                except asyncio.TimeoutError:
                    pass

    async def _receive_frames(self, ws: ServerConnection, session: DeviceSession) -> None:
        while not session.closed.is_set():
            try:
                frame = await asyncio.wait_for(ws.recv(), self.config.idle_timeout)
            except asyncio.TimeoutError:
                log.info("device %s silent for %.0f s; treating its link as lost", session.identity,
                         self.config.idle_timeout)
                # the grace runs from now: a vanished device's socket answers no close frame
                session.detach(ws)
                await close_link(ws, 1001, "silent")
                return
            try:
                if isinstance(frame, bytes):
                    session.on_audio(frame)
                else:
                    data = frame.encode()  # the limit is in bytes, as the device counts them
                    if len(data) > dp.MAX_TEXT_FRAME:
                        raise _fatal(dp.E_TOO_LARGE, f"text frame of {len(data)} bytes exceeds "
                                     f"{dp.MAX_TEXT_FRAME}")
                    await session.on_control(dp.decode_message(data, dp.DEVICE_MESSAGES))
            except FrameRejected as exc:
                if exc.fatal:
                    session.detach(ws)
                    raise _fatal(exc.code, exc.message) from None
                if exc.report:
                    session.send(dp.error_message(exc.code, exc.message, False, seq=exc.seq))
            except dp.ProtocolError as exc:
                session.detach(ws)
                if exc.id is not None:  # a malformed answer to a call: its caller need not wait
                    session.fail_device_answer(exc.id, exc.message)
                raise _fatal(exc.code, exc.message, exc.id) from None


async def run_gateway(config: GatewayConfig, stop: asyncio.Event | None = None) -> None:
    async with Gateway(config) as gw:
        print(f"gateway: serving devices at {gw.url} for LiveKit at {config.livekit_url}", flush=True)
        await (stop.wait() if stop else asyncio.Future())


def server_ssl_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx
