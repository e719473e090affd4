"""Closing a device's socket, bounded: a vanished device must not hold the gateway up.

websockets' `close()` writes a close frame, then waits for the device's answer
and the TCP close, up to its `close_timeout` (10 s by default); before that it
drains the send buffer, which does not end at all while a device does not read.
A device whose access point vanished sends no FIN and no RST, so nothing ends
that wait. Here each close gets LINK_CLOSE_TIMEOUT, and then the connection is
aborted: the socket is freed, and a device still there sees its link end.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

# A device that is there answers a close frame in well under this, even over Wi-Fi and TLS.
LINK_CLOSE_TIMEOUT = 2.0


async def close_link(ws: Connection, code: int, reason: str, timeout: float = LINK_CLOSE_TIMEOUT) -> None:
    """The closing handshake if the device answers within `timeout`, else the connection aborted."""
    try:
        await asyncio.wait_for(ws.close(code, reason), timeout)
    except ConnectionClosed:
        pass
    except asyncio.TimeoutError:
        ws.transport.abort()


async def send_then_close(ws: Connection, text: str, code: int, reason: str,
                          timeout: float = LINK_CLOSE_TIMEOUT) -> None:
    """A last message (an error, a leave) if it can go within `timeout`, then close_link."""
    try:
        await asyncio.wait_for(ws.send(text), timeout)
    except (ConnectionClosed, asyncio.TimeoutError):
        pass
    await close_link(ws, code, reason, timeout)
