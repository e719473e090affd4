"""`lkdevice doctor` as a user runs it, against a real gateway (ws and wss) and a real livekit-server,
each fault made on purpose."""

from __future__ import annotations

import asyncio
import sys

import pytest

from lkdevice.gateway import Gateway, GatewayConfig, server_ssl_context
from lkdevice.host_tools.certs import make_certs
from lkdevice.host_tools.livekit_server import DEV_API_KEY
from lkdevice.host_tools.tokens import mint_token

from .conftest import token


async def doctor(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkdevice.cli", "doctor", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert "Traceback" not in text, text
    return proc.returncode, text


def line(text: str, check: str) -> str:
    found = [x for x in text.splitlines() if x.split(":", 1)[0].split(None, 1)[-1] == check]
    assert len(found) == 1, text
    return found[0]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    base = tmp_path_factory.mktemp("doctor-certs")
    return {"good": make_certs(base / "good"), "other-host": make_certs(base / "other", hosts=("gw.example",)),
            "other-ca": make_certs(base / "ca2")}


@pytest.fixture
async def tls_gateway(server, certs):
    made = []

    async def make(which: str = "good") -> Gateway:
        c = certs[which]
        gw = await Gateway(GatewayConfig(livekit_url=server.url, port=0,
                                         ssl_context=server_ssl_context(str(c.server_cert),
                                                                        str(c.server_key)))).start()
        made.append(gw)
        return gw

    yield make
    for gw in made:
        await gw.close()


async def test_a_good_setup_is_all_good_and_exits_0(server, gateway, room_name):
    rc, out = await doctor("--gateway", gateway.url, "--livekit-url", server.url,
                           "--token", token("esp32", room_name))
    assert rc == 0, out
    assert out.rstrip().endswith("all good")
    assert line(out, "path").startswith("ok ")
    assert f"ok       LiveKit: {server.url} accepts the token" in out
    assert gateway.sessions == {}  # the doctor opened the socket, said no hello, joined nothing


async def test_a_wrong_path_says_which_path_the_gateway_serves(gateway):
    rc, out = await doctor("--gateway", f"ws://127.0.0.1:{gateway.port}/device")
    assert rc == 1
    assert (f"PROBLEM  path: the gateway answers 404 for /device; it serves the device protocol at /v1/device: "
            f"use ws://127.0.0.1:{gateway.port}/v1/device") in out


async def test_wss_to_a_plain_gateway(gateway):
    rc, out = await doctor("--gateway", f"wss://127.0.0.1:{gateway.port}/v1/device")
    assert rc == 1
    assert f"does not speak TLS: use ws://127.0.0.1:{gateway.port}/v1/device" in line(out, "ws/wss")
    assert line(out, "path").startswith("ok ")


async def test_ws_to_a_tls_gateway_and_its_certificate_checked_anyway(tls_gateway, certs):
    gw = await tls_gateway()
    rc, out = await doctor("--gateway", f"ws://127.0.0.1:{gw.port}/v1/device", "--ca", str(certs["good"].ca_cert))
    assert rc == 1
    assert f"speaks TLS: use wss://127.0.0.1:{gw.port}/v1/device" in line(out, "ws/wss")
    assert line(out, "certificate").startswith("ok ")
    rc, out = await doctor("--gateway", f"wss://127.0.0.1:{gw.port}/v1/device", "--ca", str(certs["good"].ca_cert))
    assert rc == 0, out


async def test_a_certificate_for_another_host(tls_gateway, certs):
    gw = await tls_gateway("other-host")
    rc, out = await doctor("--gateway", f"wss://127.0.0.1:{gw.port}/v1/device",
                           "--ca", str(certs["other-host"].ca_cert))
    assert rc == 1
    assert "the gateway's certificate is for gw.example, not 127.0.0.1" in line(out, "certificate")


async def test_a_certificate_not_signed_by_the_boards_ca(tls_gateway, certs):
    gw = await tls_gateway()
    rc, out = await doctor("--gateway", f"wss://127.0.0.1:{gw.port}/v1/device",
                           "--ca", str(certs["other-ca"].ca_cert))
    assert rc == 1
    assert f"not signed by the board's CA ({certs['other-ca'].ca_cert})" in line(out, "certificate")


async def test_a_token_signed_with_the_wrong_secret_gets_livekits_reason(server, room_name):
    bad = mint_token(DEV_API_KEY, "not-the-servers-secret-at-all", identity="esp32", room=room_name)
    rc, out = await doctor("--livekit-url", server.url, "--token", bad)
    assert rc == 1
    refused = line(out, "LiveKit")
    assert refused.startswith(f"PROBLEM  LiveKit: {server.url} refuses the token (HTTP 401): ")
    assert "signature" in refused.lower() or "invalid" in refused.lower(), refused
    assert line(out, "token grants").startswith("ok ")  # its claims are fine: only the server can tell
    for part in bad.split("."):
        assert part not in out


async def test_a_token_without_can_publish(server, room_name):
    rc, out = await doctor("--livekit-url", server.url, "--token", token("esp32", room_name, can_publish=False))
    assert rc == 1
    assert "lacks canPublish, which a device needs" in line(out, "token grants")
    assert line(out, "LiveKit").startswith("ok ")  # LiveKit lets it join: it just could not talk


async def test_an_expired_token(server, room_name):
    rc, out = await doctor("--livekit-url", server.url, "--token", token("esp32", room_name, ttl=-120))
    assert rc == 1
    assert "the token expired 2" in line(out, "token expiry")
    assert line(out, "LiveKit").startswith("PROBLEM  LiveKit:") and "expired" in line(out, "LiveKit").lower()
