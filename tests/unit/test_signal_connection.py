"""rtc/signal_connection.py: its loops end when cancelled, and say so.

A loop that returns on cancellation looks, to whoever cancelled it (a close,
a task group, a timeout), like one that finished: the cancel is lost and the
canceller goes on as if nothing asked it to stop.
"""

from __future__ import annotations

import asyncio

import pytest
from livekit.protocol import rtc
from websockets.asyncio.server import serve

from lkdevice.rtc.signal_connection import SignalConnection
from lkdevice.rtc.signaling import SignalProtocol


async def _quiet_server(ws) -> None:
    await ws.send(rtc.SignalResponse(join=rtc.JoinResponse(ping_interval=30, ping_timeout=60)).SerializeToString())
    await ws.wait_closed()  # silence until we close


@pytest.mark.parametrize("loop", [0, 1], ids=["read", "keepalive"])
async def test_cancelled_loop_propagates_the_cancellation(loop):
    async with serve(_quiet_server, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]

        async def lost(reason: str) -> None:
            raise AssertionError(f"reported lost: {reason}")

        async def message(msg) -> None:
            pass

        conn = SignalConnection(SignalProtocol(), message, lost)
        first = await conn.open(f"ws://127.0.0.1:{port}", "token", "join_request=", 5)
        assert first.WhichOneof("message") == "join"
        conn.start()
        await asyncio.sleep(0.05)
        task = conn._tasks[loop]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        await conn.close()


async def test_a_send_on_a_dead_link_is_a_connect_error_not_a_websockets_one():
    """`publish_data` or `set_attributes` during an outage: the caller catches LiveKitError."""
    from lkdevice.rtc.errors import ConnectError

    async def closing_server(ws) -> None:
        await ws.send(rtc.SignalResponse(join=rtc.JoinResponse(ping_interval=30, ping_timeout=60)).SerializeToString())
        await ws.close()

    async with serve(closing_server, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]

        async def nothing(*_) -> None:
            pass

        conn = SignalConnection(SignalProtocol(), nothing, nothing)
        await conn.open(f"ws://127.0.0.1:{port}", "token", "join_request=", 5)
        await asyncio.sleep(0.1)  # the server's close arrives
        with pytest.raises(ConnectError, match="signal link"):
            await conn.send(b"x")
        await conn.close()
