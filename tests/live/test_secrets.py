"""No log holds a secret, at any level: access tokens, refresh tokens, resume keys.

Every logger at DEBUG (websockets prints handshake headers and frames there,
aiortc and aioice their ICE and DTLS traffic), through a client join and a
gateway device's hello, refresh, resume and leave; and `lkdevice -v gateway`
as a user runs it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys


import lkdevice
from lkdevice.host_tools.device_client import DeviceClient

from .conftest import token


def secrets_of(*tokens_or_keys: str) -> list[str]:
    """Each secret, and for a JWT its signature alone (the part that makes it a credential)."""
    out = []
    for s in tokens_or_keys:
        out.append(s)
        if s.count(".") == 2:
            out.append(s.rsplit(".", 1)[1])
    return out


def everything_logged(caplog) -> str:
    """Every record as a handler would write it: message, arguments, traceback."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(r) for r in caplog.records)


def assert_not_in(text: str, secrets: list[str]) -> None:
    for s in secrets:
        assert s not in text, f"a secret ({s[:6]}…, {len(s)} chars) is in the log"
    # nor a piece of one (an elided frame shows a payload's start and end): any 12
    # characters of a signature or a key
    for s in secrets:
        if "." not in s:
            for i in range(len(s) - 11):
                assert s[i:i + 12] not in text, f"12 characters of a secret ({s[:6]}…) are in the log"


def debug_everywhere(caplog):
    # in the test body: pytest's log_level applies afresh at each phase
    caplog.set_level(logging.DEBUG)  # the root logger, so every library logs at DEBUG
    return caplog


async def test_a_client_join_logs_no_token(server, room_name, caplog):
    debug_logs = debug_everywhere(caplog)
    tok = token("pi", room_name, ttl=600)
    room = await lkdevice.connect(server.url, tok)
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while room.refresh_token is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        refresh = room.refresh_token
        assert refresh and refresh != tok
    finally:
        await room.disconnect()
    text = everything_logged(debug_logs)
    assert "websockets.client" in text and "> GET /rtc/v1" in text, "websockets' debug log was not captured"
    assert "Authorization" in text  # the header line is there, its value is not
    assert_not_in(text, secrets_of(tok, refresh))


async def test_a_gateway_device_logs_no_token_or_resume_key(server, room_name, caplog):
    from lkdevice.gateway import Gateway, GatewayConfig

    debug_logs = debug_everywhere(caplog)
    async with Gateway(GatewayConfig(livekit_url=server.url, port=0)) as gateway:
        await _device_session(gateway, room_name, debug_logs)


async def _device_session(gateway, room_name, debug_logs) -> None:
    tok = token("esp32", room_name, ttl=600)
    dev = await DeviceClient(gateway.url, codec="ulaw").open()
    try:
        welcome = await dev.hello(tok)
        assert welcome["t"] == "welcome", welcome
        refresh = (await dev.expect(lambda m: m["t"] == "token"))["token"]
        dev.ws.transport.abort()
        await dev.closed.wait()
        back = DeviceClient(gateway.url, codec="ulaw")
        back.welcome = welcome
        await back.open()
        try:
            assert (await back.resume())["t"] == "resumed"
            await back.send({"t": "leave", "reason": "done"})
            await back.closed.wait()
        finally:
            await back.close()
    finally:
        await dev.close()
    text = everything_logged(debug_logs)
    assert "websockets.server" in text and "TEXT" in text, "websockets' frame log was not captured"
    assert_not_in(text, secrets_of(tok, refresh, welcome["key"]))


async def test_lkdevice_v_gateway_logs_no_token(server, room_name):
    """The user's command: `lkdevice -v gateway`, its whole output."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkdevice.cli", "-v", "gateway", "--livekit-url", server.url,
        "--listen", f"127.0.0.1:{port}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    tok = token("esp32", room_name, ttl=600)
    seen = b""
    try:
        while b"/v1/device" not in seen:
            seen += await asyncio.wait_for(proc.stdout.readline(), 20)
        dev = await DeviceClient(f"ws://127.0.0.1:{port}/v1/device", codec="ulaw").open()
        try:
            welcome = await dev.hello(tok)
            assert welcome["t"] == "welcome", welcome
            refresh = (await dev.expect(lambda m: m["t"] == "token"))["token"]
            await dev.send({"t": "leave"})
            await dev.closed.wait()
        finally:
            await dev.close()
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    text = (seen + out).decode(errors="replace")
    assert "DEBUG websockets" in text, text[-2000:]
    assert_not_in(text, secrets_of(tok, refresh, welcome["key"]))
