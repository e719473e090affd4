"""host_tools' token_url server (its decisions, without sockets), `lkdevice
token-server`'s refusals, and the gateway's answer to a wrong path."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from lkdevice.gateway import Gateway, GatewayConfig
from lkdevice.host_tools.token_server import DeviceEntry, TokenServer, TokenServerConfig, load_devices

DEV = "246f284c4b44"


def server(**kw) -> TokenServer:
    return TokenServer(TokenServerConfig("devkey", "secret-secret-secret-secret-0123", room="kitchen", **kw))


def test_each_device_gets_its_own_identity_and_room():
    srv = server(devices={DEV: DeviceEntry("k1", identity="kitchen-speaker", room="kitchen-2")})
    status, _, tok = srv.authorize("/token", {"x-device-id": DEV.upper(), "authorization": "Bearer k1"})
    claims = jwt.decode(tok, options={"verify_signature": False})
    assert status == 200 and claims["sub"] == "kitchen-speaker" and claims["video"]["room"] == "kitchen-2"


@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    ({"x-device-id": DEV}, 401),
    ({"x-device-id": DEV, "authorization": "Basic k1"}, 401),
    ({"x-device-id": DEV, "authorization": "Bearer k2"}, 403),
    ({"x-device-id": "aabbccddeeff", "authorization": "Bearer k1"}, 403),
    ({"x-device-id": "not hex!", "authorization": "Bearer k1"}, 403),
])
def test_missing_or_wrong_credentials_are_refused(headers, status):
    got, message, tok = server(devices={DEV: DeviceEntry("k1")}).authorize("/token", headers)
    assert (got, tok) == (status, None) and "k1" not in message and "k2" not in message


def test_a_shared_key_admits_any_device_with_an_identity_of_its_own():
    srv = server(shared_key="shared")
    status, _, tok = srv.authorize("/token?x=1", {"x-device-id": DEV, "authorization": "Bearer shared"})
    assert status == 200 and jwt.decode(tok, options={"verify_signature": False})["sub"] == f"device-{DEV}"
    assert srv.authorize("/other", {"x-device-id": DEV, "authorization": "Bearer shared"})[0] == 404


def test_the_devices_file_is_checked_with_one_line_errors(tmp_path):
    f = tmp_path / "devices.json"
    f.write_text(json.dumps({DEV: {"key": "k", "identity": "a"}}))
    assert load_devices(str(f))[DEV].identity == "a"
    for bad, why in [("[1]", "must be an object"), ('{"zz": {"key": "k"}}', "not a device id"),
                     (json.dumps({DEV: {}}), 'needs a "key"'), ("{", "not valid JSON")]:
        f.write_text(bad)
        with pytest.raises(ValueError, match=why):
            load_devices(str(f))


def test_token_server_cli_without_devices_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "token-server"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: no devices") and "Traceback" not in r.stderr
    (tmp_path / "d.json").write_text("{")
    r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "token-server", "--devices", str(tmp_path / "d.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr


async def test_the_gateway_names_its_path_in_a_404():
    gw = await Gateway(GatewayConfig(livekit_url="ws://127.0.0.1:9", port=0)).start()
    try:
        with pytest.raises(InvalidStatus) as exc:
            async with connect(f"ws://127.0.0.1:{gw.port}/device"):
                pass
        response = exc.value.response
        assert response.status_code == 404 and response.headers["X-Device-Path"] == "/v1/device"
        assert b"/v1/device" in response.body
    finally:
        await gw.close()
