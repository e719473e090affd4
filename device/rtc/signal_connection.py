"""The WebSocket around `SignalProtocol`: open, read, send, keepalive."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from typing import Awaitable, Callable

import websockets
from websockets.asyncio.client import ClientConnection, connect
from livekit.protocol import rtc

from .errors import ConnectError, ProtocolError, ServerUnreachable, TokenRejected, redact_tokens
from .logs import websocket_logger
from .signaling import MAX_SIGNAL_MESSAGE, SignalProtocol, signal_url, validate_url

log = logging.getLogger(__name__)

OnMessage = Callable[[rtc.SignalResponse], Awaitable[None]]
OnLost = Callable[[str], Awaitable[None]]


def _validate_reason(url: str, query: str, token: str, timeout: float) -> tuple[int, str]:
    req = urllib.request.Request(f"{validate_url(url)}?{query}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(2048).decode(errors="replace").strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read(2048).decode(errors="replace").strip()


class SignalConnection:
    """One signal WebSocket. Call `open`, then `run` until it ends; `lost` says why."""

    def __init__(self, protocol: SignalProtocol, on_message: OnMessage, on_lost: OnLost):
        self.protocol = protocol
        self._on_message = on_message
        self._on_lost = on_lost
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    async def open(self, url: str, token: str, query: str, timeout: float) -> rtc.SignalResponse:
        """Connect and return the first response (join, reconnect or leave)."""
        if any(c < " " or c == "\x7f" for c in token):
            # no header can carry it, and websockets' complaint would quote the token whole
            raise TokenRejected(0, "access token holds a control character")
        uri = f"{signal_url(url)}?{query}"
        try:
            self._ws = await asyncio.wait_for(
                connect(uri, additional_headers={"Authorization": f"Bearer {token}"},
                        open_timeout=None, ping_interval=None, max_size=MAX_SIGNAL_MESSAGE,
                        compression=None, logger=websocket_logger("client")),
                timeout,
            )
        except websockets.exceptions.InvalidStatus as exc:
            status = exc.response.status_code
            body = (exc.response.body or b"").decode(errors="replace").strip()
            if status in (401, 403):
                try:
                    _, reason = await asyncio.wait_for(
                        asyncio.to_thread(_validate_reason, url, query, token, timeout), timeout)
                except Exception:
                    reason = body
                raise TokenRejected(status, reason or body or "unauthorized") from None
            raise ConnectError(f"server refused the join (HTTP {status}): "
                               f"{redact_tokens(body) or 'no reason given'}") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise ServerUnreachable(f"no answer from {signal_url(url, '')} within {timeout:.0f}s") from None
        except OSError as exc:
            raise ServerUnreachable(f"cannot reach {signal_url(url, '')}: {exc.strerror or exc}") from None
        except websockets.exceptions.InvalidHandshake as exc:
            raise ConnectError(f"WebSocket handshake with {signal_url(url, '')} failed: {exc}") from None
        try:
            data = await asyncio.wait_for(self._ws.recv(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            await self._ws.close()
            raise ConnectError(f"server accepted the socket but sent no join response within {timeout:.0f}s") from None
        except websockets.exceptions.ConnectionClosed as exc:
            raise ConnectError(f"server closed the signal socket during join: {exc}") from None
        return self.protocol.receive(data)

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._keepalive())]

    async def send(self, data: bytes) -> None:
        if self._ws is None:
            raise ConnectError("signal socket is not open")
        try:
            await self._ws.send(data)
        except websockets.exceptions.ConnectionClosed as exc:
            # callers (publish_data, set_attributes, ...) handle LiveKitError, not websockets' types
            raise ConnectError(f"signal link is down ({exc.rcvd.code if exc.rcvd else 'no close frame'})") from None

    async def _read(self) -> None:
        reason = "signal socket closed"
        try:
            async for data in self._ws:
                try:
                    msg = self.protocol.receive(data)
                except ProtocolError as exc:
                    log.warning("dropping signal message: %s", exc)
                    continue
                await self._on_message(msg)
        except websockets.exceptions.ConnectionClosed as exc:
            reason = f"signal socket closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except Exception as exc:  # a handler bug must not silently kill the session
            log.exception("signal handling failed")
            reason = f"signal handling failed: {exc}"
        await self._lost(reason)

    async def _keepalive(self) -> None:
        # cancellation (close, or the reader reporting the loss) propagates
        while True:
            await asyncio.sleep(self.protocol.ping_interval)
            if self.protocol.ping_timed_out():
                await self._lost(f"no message from server for {self.protocol.ping_timeout:.0f}s")
                return
            try:
                await self.send(self.protocol.ping())
            except ConnectError:
                return  # the reader reports it

    async def _lost(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        self.abort()  # the link is dead: a close handshake would only wait out its timeout
        await self._on_lost(reason)

    async def close(self) -> None:
        self._closing = True
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        if self._ws is not None:
            try:
                await asyncio.wait_for(self._ws.close(), 2)
            except Exception:
                pass

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (tests, dead links)."""
        if self._ws is not None:
            self._ws.transport.abort()
