"""The simulated ESP32's session lifecycle, against a real gateway and
livekit-server: its token from a token_url (with its device credential, and a
token server that hangs), the refreshed token kept on flash across a reboot,
the board that stops rejoining after a final leave (removed by the server, a
duplicate identity, a refused token, a gateway URL that is a 404), and which
codec implementation it runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time

import jwt
import pytest
from livekit import api

from lkdevice.host_tools.livekit_server import DEV_API_KEY, DEV_API_SECRET
from lkdevice.host_tools.simulator import SimulatedDevice
from lkdevice.host_tools.token_server import DeviceEntry, TokenServer, TokenServerConfig

from .conftest import token

SIM_ID = "246f284c4b44"  # hil/sim/machine.py's unique_id()
KEY = "board-key-7f3a9c0d2e8b41"
RED = (32, 0, 0)
CONNECTING = (24, 16, 0)


@pytest.fixture
async def sims():
    made: list[SimulatedDevice] = []

    def make(url: str, tok: str | None, **kw) -> SimulatedDevice:
        dev = SimulatedDevice(url, tok, **kw).start()
        made.append(dev)
        return dev

    yield make
    for d in made:
        code = await asyncio.to_thread(d.stop)
        errors = d.errors()
        tail = "\n".join(d.lines()[-40:])
        d.cleanup()
        assert code == 0 and not errors, f"firmware ended with {code}: {errors}\n{tail}"


def console(dev: SimulatedDevice) -> str:
    return "\n".join(dev.lines())


def assert_no_secret(text: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in text, f"a secret ({s[:6]}..., {len(s)} chars) is on the console"
        if s.count(".") == 2:
            assert s.rsplit(".", 1)[1] not in text, "a token's signature is on the console"


def attempts(dev: SimulatedDevice, since: int = 0) -> int:
    return sum(1 for line in dev.lines()[since:] if "[lkd] connecting url=" in line)


async def assert_stays_stopped(dev: SimulatedDevice, seconds: float) -> None:
    """No new connection attempt for `seconds`, and the LED steady red (not connecting's amber)."""
    mark = dev.mark()
    await asyncio.sleep(seconds)
    assert attempts(dev, mark) == 0, "\n".join(dev.lines()[mark:])
    colours = dev.led_colors()
    assert colours and colours[-1][1] == RED, colours[-6:]


def origin(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


async def test_token_url_with_the_device_key_and_a_token_server_that_hangs(server, gateway, sims, peers, room_name,
                                                                          caplog):
    caplog.set_level(logging.DEBUG)
    cfg = TokenServerConfig(DEV_API_KEY, DEV_API_SECRET, room=room_name,
                            devices={SIM_ID: DeviceEntry(KEY, identity="esp32")})
    async with TokenServer(cfg) as ts:
        ts.token_override = issued = token("esp32", room_name, ttl=600)  # known, to look for it in the logs
        ts.hang = True  # accepts, never answers
        peer = await peers("agent", server.url, room_name)
        dev = sims(gateway.url, None, token_url=ts.url, config={"device_key": KEY})
        await dev.wait_line(r"\[lkd\] link lost; reconnecting \(OSError\('token_url did not answer within 10000 ms'",
                            25)
        ts.hang = False
        await dev.wait_line(r"\[lkd\] welcome room=%s identity=esp32 " % re.escape(room_name), 30)
        await peer.expect("participant_connected", lambda p: p.identity == "esp32", timeout=10)
        assert ts.requests.get(200) == 1
    assert_no_secret(console(dev), KEY, issued)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "token_url /token device 246f284c4b44: 200" in logged  # the server's log line is there...
    assert_no_secret(logged, KEY, issued)  # ...without the key or the token


async def test_an_https_token_url_is_verified_with_the_boards_ca(server, gateway, sims, room_name, tmp_path):
    from lkdevice.gateway.server import server_ssl_context
    from lkdevice.host_tools.certs import make_certs

    certs, other = make_certs(tmp_path / "good"), make_certs(tmp_path / "other")
    cfg = TokenServerConfig(DEV_API_KEY, DEV_API_SECRET, room=room_name,
                            devices={SIM_ID: DeviceEntry(KEY, identity="esp32")},
                            ssl_context=server_ssl_context(str(certs.server_cert), str(certs.server_key)))
    async with TokenServer(cfg) as ts:
        assert ts.url.startswith("https://")
        # TLS on the unix port needs more heap than 128K, as for wss (test_firmware_sim.py)
        stranger = sims(gateway.url, None, token_url=ts.url, ca=str(other.ca_cert), heap="256K",
                        config={"device_key": KEY})
        await stranger.wait_line(r"\[lkd\] link lost; reconnecting \(ValueError\(.*certificate is not correctly signed", 20)
        dev = sims(gateway.url, None, token_url=ts.url, ca=str(certs.ca_cert), heap="256K",
                   config={"device_key": KEY})
        await dev.wait_line(r"\[lkd\] welcome room=%s identity=esp32 " % re.escape(room_name), 30)
        assert ts.requests == {200: 1}  # the stranger never got as far as asking
    assert_no_secret(console(dev) + console(stranger), KEY)


async def test_a_board_the_token_server_refuses_stops_and_says_why(server, gateway, sims, room_name):
    cfg = TokenServerConfig(DEV_API_KEY, DEV_API_SECRET, room=room_name, devices={SIM_ID: DeviceEntry(KEY)})
    async with TokenServer(cfg) as ts:
        dev = sims(gateway.url, None, token_url=ts.url, config={"device_key": "an-old-key-0000"})
        await dev.wait_line(r"\[lkd\] stopped: token_url refused this device \(403\): check device_key in "
                            r"config.json, and that the token server knows device %s; will retry on a new token "
                            r"or a reset" % SIM_ID, 15)
        await assert_stays_stopped(dev, 4)
        assert ts.requests == {403: 1}
    assert_no_secret(console(dev), KEY, "an-old-key-0000")


async def test_a_rebooted_board_joins_with_its_saved_token_after_the_config_token_expired(
        server, gateway, sims, peers, room_name):
    now = time.time()
    expired = token("esp32", room_name, not_before=now - 600, ttl=-300)  # beyond LiveKit's 1 min leeway
    saved = token("esp32", room_name, ttl=60)  # the refresh token a previous boot saved
    flash = {"refresh_token.json": json.dumps({"from": origin(expired), "token": saved})}
    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, expired, flash_files=flash)
    await dev.wait_line(r"\[lkd\] token: the newer one saved on flash", 10)
    await dev.wait_line(r"\[lkd\] welcome room=%s identity=esp32 " % re.escape(room_name), 20)
    # the gateway passes on LiveKit's refresh token: 9 minutes newer than the saved one, so it is saved
    await dev.wait_line(r"\[lkd\] token saved on flash", 20)
    on_flash = json.loads((dev.flash / "refresh_token.json").read_text())
    refreshed = on_flash["token"]
    assert on_flash["from"] == origin(expired) and refreshed not in (saved, expired)
    claims = jwt.decode(refreshed, options={"verify_signature": False})
    assert claims["sub"] == "esp32" and claims["exp"] > jwt.decode(saved, options={"verify_signature": False})["exp"]
    assert not (dev.flash / "refresh_token.tmp").exists()
    await peer.expect("participant_connected", lambda p: p.identity == "esp32", timeout=10)

    mark = dev.mark()
    await asyncio.to_thread(dev.reboot)
    await dev.wait_line(r"\[lkd\] token: the newer one saved on flash", 10, since=mark)
    await dev.wait_line(r"\[lkd\] welcome room=%s identity=esp32 " % re.escape(room_name), 20, since=mark)
    assert not dev.find(r"token_rejected", since=mark)
    assert_no_secret(console(dev), expired, saved, refreshed)


async def test_a_board_whose_only_token_is_refused_stops(server, gateway, sims, room_name):
    expired = token("esp32", room_name, not_before=time.time() - 600, ttl=-300)
    dev = sims(gateway.url, expired)
    await dev.wait_line(r"\[lkd\] stopped: the gateway refused the token \(token_rejected\); "
                        r"will retry on a new token or a reset", 15)
    await assert_stays_stopped(dev, 4)
    assert attempts(dev) == 1
    assert_no_secret(console(dev), expired)


async def test_removed_by_the_server_the_board_stays_out_until_its_config_changes(server, gateway, sims, peers,
                                                                                room_name):
    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, token("esp32", room_name, ttl=600), config={"stopped_poll_s": 2})
    await dev.wait_line(r"\[lkd\] welcome room=%s identity=esp32 " % re.escape(room_name), 20)
    await peer.expect("participant_connected", lambda p: p.identity == "esp32", timeout=10)
    async with api.LiveKitAPI(server.url.replace("ws://", "http://"), DEV_API_KEY, DEV_API_SECRET) as lk:
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=room_name, identity="esp32"))
    await dev.wait_line(r"\[lkd\] stopped: removed from the room by the server \(PARTICIPANT_REMOVED\); "
                        r"will retry on a new token or a reset", 10)
    await assert_stays_stopped(dev, 6)
    assert not any(p.identity == "esp32" for p in peer.room.remote_participants.values())

    # a new token in config.json (as `lkdevice provision` writes it): the board tries again
    cfg_path = dev.flash / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["token"] = token("esp32", room_name, ttl=600, name="esp32 again")
    cfg_path.write_text(json.dumps(cfg))
    mark = dev.mark()
    await dev.wait_line(r"\[lkd\] config.json changed; trying again", 10, since=mark)
    await dev.wait_line(r"\[lkd\] welcome room=%s identity=esp32 " % re.escape(room_name), 20, since=mark)
    # the boot loop repaints the LED every 250 ms: give it a second after the welcome
    for _ in range(20):
        if dev.led_colors()[-1][1] != RED:
            break
        await asyncio.sleep(0.1)
    assert dev.led_colors()[-1][1] != RED


async def test_a_duplicate_identity_does_not_start_a_tug_of_war(server, gateway, sims, peers, room_name):
    dev = sims(gateway.url, token("esp32", room_name, ttl=600))
    await dev.wait_line(r"\[lkd\] welcome room=%s identity=esp32 " % re.escape(room_name), 20)
    other = await peers("esp32", server.url, room_name)  # the same identity, elsewhere
    await dev.wait_line(r"\[lkd\] stopped: another participant joined with this identity \(DUPLICATE_IDENTITY\)",
                        10)
    await assert_stays_stopped(dev, 5)
    assert other.room.isconnected()  # the board did not throw it out again


async def test_a_gateway_url_with_the_wrong_path_is_a_config_error(server, gateway, sims, room_name):
    wrong = gateway.url.replace("/v1/device", "/device")
    dev = sims(wrong, token("esp32", room_name, ttl=600))
    await dev.wait_line(r"\[lkd\] config error: gateway answered 404 for /device; it serves /v1/device$", 10)
    await dev.wait_line(r"\[lkd\] stopped: gateway answered 404", 5)
    await assert_stays_stopped(dev, 5)
    assert attempts(dev) == 1


async def test_the_boot_line_and_lkdevice_info_say_which_codecs_run(server, gateway, sims, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, token("esp32", room_name, ttl=600), codec="ulaw")
    await dev.wait_line(r"\[lkd\] boot firmware=\S+ board=\S+ chip=\S+ codec=ulaw codecs=viper$", 10)
    await peer.expect("participant_connected", lambda p: p.identity == "esp32", timeout=20)
    await dev.wait_line(r"\[lkd\] welcome room=", 20)
    answer = await peer.room.local_participant.perform_rpc(destination_identity="esp32", method="lkdevice.info",
                                                           payload="")
    info = json.loads(answer)
    assert info["codec"] == "ulaw" and info["codec_implementation"] == "viper"
