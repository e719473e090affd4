"""Closing a device's socket is bounded even when the device vanished: a real
websockets server on loopback, and a raw TCP client that upgrades, then neither
reads nor answers (an access point gone: no FIN, no RST)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.protocol import State

from lkdevice.gateway.closing import close_link, send_then_close

UPGRADE = (b"GET /v1/device HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def vanished_device(fill: bool):
    """(the server's connection to a client that stopped reading and answering, the client's socket)."""
    accepted: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        await accepted.put(ws)
        await ws.wait_closed()

    server = await serve(handler, "127.0.0.1", 0, write_limit=4096, ping_interval=None)
    port = server.sockets[0].getsockname()[1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await asyncio.to_thread(client.connect, ("127.0.0.1", port))
    client.sendall(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.to_thread(client.recv, 1)
    ws = await asyncio.wait_for(accepted.get(), 5)
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    if fill:  # the downlink goes on until the buffers are full and a send waits
        with pytest.raises(asyncio.TimeoutError):
            for _ in range(10000):
                await asyncio.wait_for(ws.send(bytes(1024)), 1.0)
    return server, ws, client


async def bounded(closing, limit: float = 8.0) -> float:
    """Seconds `closing` took; a close that still waits after `limit` fails here rather than hang the run."""
    start = time.monotonic()
    try:
        await asyncio.wait_for(closing, limit)
    except asyncio.TimeoutError:
        pytest.fail(f"closing still waits after {limit:.0f} s")
    return time.monotonic() - start


def ends(client: socket.socket) -> bool:
    """The client's socket ends (reset, or end of stream) once what was buffered for it is read."""
    client.settimeout(5)
    try:
        while client.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return False
    return True


@pytest.mark.parametrize("fill", [False, True], ids=["idle", "send-buffer-full"])
async def test_closing_a_vanished_device_takes_the_bound_and_frees_the_socket(fill):
    server, ws, client = await vanished_device(fill)
    try:
        took = await bounded(close_link(ws, 1001, "silent", timeout=1.0))
        # websockets' own close waits 10 s for the answer (close_timeout), and forever on a full buffer
        assert took < 3.0, f"closing took {took:.1f} s"
        await asyncio.wait_for(ws.wait_closed(), 2)
        assert ws.state is State.CLOSED
        assert await asyncio.to_thread(ends, client)
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_a_last_message_to_a_device_that_does_not_read_is_bounded_too():
    server, ws, client = await vanished_device(fill=True)
    try:
        took = await bounded(send_then_close(ws, '{"t":"leave","reason":"gone"}', 4000, "gone", timeout=1.0))
        assert took < 4.0, f"the leave and the close took {took:.1f} s"
        await asyncio.wait_for(ws.wait_closed(), 2)
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_a_device_that_answers_gets_a_clean_close_with_its_code():
    from websockets.asyncio.client import connect

    async def handler(ws: ServerConnection) -> None:
        await close_link(ws, 4000, "bye", timeout=2.0)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/v1/device") as client:
            await asyncio.wait_for(client.wait_closed(), 5)
            assert client.close_code == 4000 and client.close_reason == "bye"
