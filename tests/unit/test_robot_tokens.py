"""The robot's token sources, against the real `lkdevice token-server` on loopback."""

from __future__ import annotations

import jwt
import pytest

from lkdevice.host_tools.token_server import DeviceEntry, TokenServer, TokenServerConfig
from lkdevice.robot.config import TokenConfig
from lkdevice.robot.tokens import FileToken, TokenError, token_source

DEV = "b827eb4c1e01"


async def test_a_token_url_gives_this_device_its_token(tmp_path):
    key_file = tmp_path / "device_key"
    key_file.write_text("k1\n")
    cfg = TokenServerConfig("devkey", "secret-secret-secret-secret-0123", room="lab",
                            devices={DEV: DeviceEntry("k1", identity="robot-1")})
    async with TokenServer(cfg) as srv:
        url = srv.url
        source = token_source(TokenConfig(token_url=srv.url, device_id=DEV, device_key_file=str(key_file)))
        claims = jwt.decode(await source.get(), options={"verify_signature": False})
        assert claims["sub"] == "robot-1" and claims["video"]["room"] == "lab" and source.renewable
        wrong = token_source(TokenConfig(token_url=srv.url, device_id=DEV, device_key="k2"))
        with pytest.raises(TokenError) as err:
            await wrong.get()
    assert err.value.fatal and "k2" not in str(err.value)
    assert str(err.value) == (f"token server {url} refused device '{DEV}' (HTTP 403): "
                              "check device_id and device_key")


async def test_an_unreachable_token_url_is_worth_another_try():
    from lkdevice.host_tools.livekit_server import free_port

    source = token_source(TokenConfig(token_url=f"http://127.0.0.1:{free_port()}/token", device_id=DEV,
                                      device_key="k"))
    with pytest.raises(TokenError) as err:
        await source.get()
    assert not err.value.fatal and "Connection refused" in str(err.value)


async def test_a_token_file_is_read_at_every_connect(tmp_path):
    path = tmp_path / "token"
    path.write_text("first\n")
    source = FileToken(str(path))
    assert await source.get() == "first"
    path.write_text("second")
    assert await source.get() == "second"
    path.unlink()
    with pytest.raises(TokenError, match="No such file"):
        await source.get()


def test_a_static_token_cannot_be_renewed():
    assert not token_source(TokenConfig(token="t")).renewable
