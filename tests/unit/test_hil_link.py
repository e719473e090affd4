"""hil/harness/link.py: the relay between a real board and the gateway, and its cuts."""

from __future__ import annotations

import asyncio
import time

from lkdevice.hil.link import MAX_CONNECTIONS, LinkRelay
from lkdevice.host_tools.livekit_server import free_port


async def echo_server():
    async def echo(r, w):
        try:
            while data := await r.read(1024):
                w.write(data)
                await w.drain()
        except ConnectionResetError:
            pass
        w.close()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read(r) -> bytes:
    """What comes, or b"" when the connection was closed or reset (a cut is a reset)."""
    try:
        return await asyncio.wait_for(r.read(100), 2)
    except ConnectionResetError:
        return b""


async def roundtrip(port: int, data: bytes = b"hello") -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(data)
        await w.drain()
    except ConnectionResetError:
        return b""
    got = await read(r)
    w.close()
    return got


async def test_it_forwards_then_a_cut_closes_what_is_open_and_refuses_until_its_end():
    server, up = await echo_server()
    relay = await LinkRelay(f"127.0.0.1:{free_port()}", f"127.0.0.1:{up}").start()
    port = int(relay.listen.rpartition(":")[2])
    try:
        assert await roundtrip(port) == b"hello"
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"x")
        assert await asyncio.wait_for(r.read(10), 2) == b"x"
        t0 = time.monotonic()
        relay.cut(0.6)
        assert await read(r) == b""  # the open connection is gone
        assert await roundtrip(port) == b""  # a new one is refused while the link is down
        while relay.down:
            await asyncio.sleep(0.05)
        assert time.monotonic() - t0 >= 0.6
        assert await roundtrip(port, b"back") == b"back"
        assert relay.refused == 1 and relay.connections == 3
    finally:
        await relay.stop()
        server.close()


async def test_it_holds_a_bounded_number_of_connections():
    server, up = await echo_server()
    relay = await LinkRelay(f"127.0.0.1:{free_port()}", f"127.0.0.1:{up}").start()
    port = int(relay.listen.rpartition(":")[2])
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"k")
            assert await asyncio.wait_for(r.read(10), 2) == b"k"
            held.append(w)
        assert await roundtrip(port) == b""  # one more is refused, the others kept
        assert relay.refused == 1
    finally:
        for w in held:
            w.close()
        await relay.stop()
        server.close()
