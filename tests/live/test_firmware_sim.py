"""The ESP32 firmware, simulated on the MicroPython unix port (hil/), through
the gateway and a real livekit-server to an official-SDK peer."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest

from lkdevice.gateway import Gateway, GatewayConfig
from lkdevice.host_tools.simulator import SimulatedDevice

from ..audio_checks import tone_frames
from .conftest import sine, token
from .proxy import TcpRelay


@pytest.fixture
async def sims():
    made: list[SimulatedDevice] = []

    def make(url: str, room: str, identity: str = "esp32", **kw) -> SimulatedDevice:
        dev = SimulatedDevice(url, token(identity, room, ttl=600), **kw).start()
        made.append(dev)
        return dev

    yield make
    for d in made:
        code = await asyncio.to_thread(d.stop)
        errors = d.errors()
        tail = "\n".join(d.lines()[-40:])
        d.cleanup()
        assert code == 0 and not errors, f"firmware ended with {code}: {errors}\n{tail}"


def speaker_frames(dev: SimulatedDevice, seconds: float) -> list[np.ndarray]:
    pcm = dev.speaker_pcm()[-int(seconds * 16000):]
    return [pcm[i:i + 320] for i in range(0, len(pcm) - 319, 320)]


async def mic_reaches_peer(peer, freq: float, seconds: float = 3.0) -> int:
    track, _, _ = await peer.expect("track_subscribed", lambda t, pub, p: p.identity == "esp32", timeout=20)
    frames = await peer.record(track, seconds)
    return tone_frames(frames, 48000, freq)


@pytest.mark.parametrize("codec", ["pcm16", "ulaw", "adpcm"])
async def test_tone_both_ways_per_codec(server, gateway, sims, peers, room_name, codec):
    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, room_name, codec=codec, play=sine(440, 60))
    await dev.wait_line(r"\[lkd\] welcome room=%s identity=esp32 .* codec=%s" % (re.escape(room_name), codec), 20)
    good = await mic_reaches_peer(peer, 440)
    # 0.85: in a full CI run on 2 cores, ulaw once had 133 of 150 (the sim shares the CPU)
    assert good >= 0.85 * 150, f"440 Hz in {good} of 150 peer frames ({codec})"

    playing = await peer.publish_tone(1000)
    try:
        await dev.wait_line(r"\[lkd\] joined identity=agent|participants=1", 10)
        await asyncio.sleep(4)
        frames = speaker_frames(dev, 2.0)
        good = tone_frames(frames, 16000, 1000, tolerance=10)
        assert good >= 0.9 * len(frames) and len(frames) >= 99, \
            f"1 kHz in {good} of {len(frames)} speaker frames ({codec})"
    finally:
        playing.cancel()


APP = '''
def setup(device):
    def on_data(payload, sender, topic):
        if topic == "cmd":
            device.send_data("echo:" + payload, topic="reply")
    device.on("data", on_data)

    def led(caller, payload):
        return "led " + payload + " for " + caller
    device.register_rpc("led.set", led)

    async def on_state(identity, state):
        if state == "thinking":
            try:
                r = await device.perform_rpc(identity, "weather", "here", 5000)
                print("[app] weather " + r)
            except Exception as e:
                print("[app] weather error %r" % (e,))
    device.on("agent_state", on_state)
'''


async def test_data_rpc_and_agent_state_both_ways(server, gateway, sims, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    peer.room.local_participant.register_rpc_method(
        "weather", lambda data: f"sunny for {data.caller_identity} ({data.payload})")
    dev = sims(gateway.url, room_name, app_source=APP)
    await dev.wait_line(r"\[lkd\] app loaded", 10)
    await dev.wait_line(r"\[lkd\] welcome ", 20)
    await peer.expect("participant_connected", lambda p: p.identity == "esp32", timeout=10)

    # peer -> device data; the app answers with data of its own
    await peer.room.local_participant.publish_data(b"hi there", topic="cmd", destination_identities=["esp32"])
    await dev.wait_line(r"\[lkd\] data from=agent topic=cmd text=hi there$", 10)
    (packet,) = await peer.expect("data_received", lambda pk: pk.topic == "reply")
    assert packet.data == b"echo:hi there" and packet.participant.identity == "esp32"

    # peer -> device RPC: an app method, a built-in one, and an unknown one
    lp = peer.room.local_participant
    assert await lp.perform_rpc(destination_identity="esp32", method="led.set", payload="on") == "led on for agent"
    info = json.loads(await lp.perform_rpc(destination_identity="esp32", method="lkdevice.info", payload=""))
    assert info["board"] == "sim" and info["codec"] == "pcm16" and info["heap_free"] > 0
    assert await lp.perform_rpc(destination_identity="esp32", method="lkdevice.set_volume", payload="40") == "40"
    await dev.wait_line(r"\[lkd\] volume 40", 5)
    from livekit import rtc
    with pytest.raises(rtc.RpcError) as err:
        await lp.perform_rpc(destination_identity="esp32", method="nope", payload="")
    assert err.value.code == 1400

    # the agent's state reaches the device; the app then calls the agent
    await lp.set_attributes({"lk.agent.state": "thinking"})
    await dev.wait_line(r"\[lkd\] agent_state agent=agent state=thinking", 10)
    await dev.wait_line(r"\[app\] weather sunny for esp32 \(here\)", 10)
    await lp.set_attributes({"lk.agent.state": "speaking"})
    await dev.wait_line(r"\[lkd\] agent_state agent=agent state=speaking", 10)


async def test_link_drop_resumes_unseen_and_audio_flows_again(server, gateway, sims, peers, room_name):
    relay = await TcpRelay(gateway.port).start()
    try:
        peer = await peers("agent", server.url, room_name)
        dev = sims(f"{relay.url}/v1/device", room_name, play=sine(440, 120))
        await dev.wait_line(r"\[lkd\] welcome ", 20)
        assert await mic_reaches_peer(peer, 440, 1.0) >= 40
        mark = dev.mark()
        relay.target_port = 1  # nothing listens there: reconnects fail while the link is down
        relay.cut()
        await asyncio.sleep(5)
        relay.target_port = gateway.port
        await dev.wait_line(r"\[lkd\] link lost; resuming", 5, since=mark)
        await dev.wait_line(r"\[lkd\] resumed session=", 20, since=mark)
        assert not peer.saw("participant_disconnected", lambda p: p.identity == "esp32")
        assert relay.connections >= 2
        # audio flows again from the device
        await asyncio.sleep(1)
        pubs = [p for p in peer.room.remote_participants["esp32"].track_publications.values() if p.track]
        frames = await peer.record(pubs[0].track, 2.0)
        assert tone_frames(frames, 48000, 440) >= 0.9 * 100
        assert not peer.saw("participant_disconnected", lambda p: p.identity == "esp32")
    finally:
        await relay.close()


async def test_gateway_restart_device_joins_again(server, sims, peers, room_name):
    gw = await Gateway(GatewayConfig(livekit_url=server.url, port=0)).start()
    port = gw.port
    peer = await peers("agent", server.url, room_name)
    dev = sims(gw.url, room_name)
    await dev.wait_line(r"\[lkd\] welcome ", 20)
    await dev.wait_line(r"\[lkd\] token refreshed", 10)
    mark = dev.mark()
    await gw.close()
    await dev.wait_line(r"\[lkd\] leave reason=.*shutting down", 10, since=mark)
    await asyncio.sleep(2)
    async with Gateway(GatewayConfig(livekit_url=server.url, port=port)) as gw2:
        await dev.wait_line(r"\[lkd\] welcome room=%s identity=esp32" % re.escape(room_name), 30, since=mark)
        await peer.expect("participant_connected", lambda p: p.identity == "esp32", timeout=10)
        del gw2


async def test_wss_with_the_ca_on_flash_and_a_stranger_refused(server, sims, peers, room_name, tmp_path):
    from lkdevice.gateway import server_ssl_context
    from lkdevice.host_tools.certs import make_certs

    certs = make_certs(tmp_path / "good")
    other = make_certs(tmp_path / "other")
    config = GatewayConfig(livekit_url=server.url, port=0,
                           ssl_context=server_ssl_context(str(certs.server_cert), str(certs.server_key)))
    async with Gateway(config) as gw:
        assert gw.url.startswith("wss://")
        peer = await peers("agent", server.url, room_name)
        # TLS on the unix port takes mbedtls' buffers from the MicroPython heap (on an
        # ESP32 they come from the IDF heap): give it room
        dev = sims(gw.url, room_name, ca=str(certs.ca_cert), play=sine(440, 30), heap="256K")
        await dev.wait_line(r"\[lkd\] welcome ", 20)
        assert await mic_reaches_peer(peer, 440, 1.0) >= 40
        stranger = sims(gw.url, room_name, identity="stranger", ca=str(other.ca_cert), heap="256K")
        await stranger.wait_line(r"\[lkd\] link lost; reconnecting \(.*(SSL|TLS|cert|CERT|-9984|Error).*\)", 20)
        assert not stranger.find(r"\[lkd\] welcome ")


async def test_bad_device_gets_its_errors_while_the_esp32_keeps_its_audio(server, gateway, sims, peers, room_name):
    from lkdevice import device_protocol as dp
    from lkdevice.host_tools.device_client import DeviceClient

    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, room_name, codec="adpcm", play=sine(440, 60))
    await dev.wait_line(r"\[lkd\] welcome ", 20)
    track, _, _ = await peer.expect("track_subscribed", lambda t, pub, p: p.identity == "esp32", timeout=20)
    recording = asyncio.ensure_future(peer.record(track, 4.0))

    bad = await DeviceClient(gateway.url, codec="ulaw").open()
    try:
        assert (await bad.hello(token("bad", room_name)))["t"] == "welcome"
        quiet = np.zeros(320, np.int16)
        bad.encoder.seq = 9
        await bad.send_pcm(quiet)
        bad.encoder.seq = 8  # out of order
        await bad.send_pcm(quiet)
        err = await bad.expect(lambda m: m["t"] == "error")
        assert (err["code"], err["fatal"], err["seq"]) == ("out_of_order", False, 8)
        await bad.send_raw('{"t": "data", "text": ')  # malformed
        err = await bad.expect(lambda m: m["t"] == "error" and m["code"] == "malformed")
        assert err["fatal"]
        await bad.closed.wait()
        assert bad.close_code == dp.CLOSE_PROTOCOL
    finally:
        await bad.close()
    big = await DeviceClient(gateway.url, codec="pcm16").open()
    try:
        assert (await big.hello(token("big", room_name)))["t"] == "welcome"
        await big.send_raw(b"\x01\x00" + bytes(30000))  # oversized
        err = await big.expect(lambda m: m["t"] == "error")
        assert err["code"] == "too_large" and err["fatal"]
    finally:
        await big.close()

    frames = await recording
    assert tone_frames(frames, 48000, 440) >= 0.9 * 200, "the ESP32's audio suffered from the bad devices"
    assert not dev.errors()


async def test_push_to_talk_button_gates_the_microphone(server, gateway, sims, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, room_name, play=sine(440, 60), push_to_talk=True)
    await dev.wait_line(r"\[lkd\] welcome ", 20)
    track, pub, _ = await peer.expect("track_subscribed", lambda t, pub, p: p.identity == "esp32", timeout=20)
    assert pub.muted, "the microphone should start muted until the button is held"
    dev.press()
    await dev.wait_line(r"\[lkd\] mute muted=0", 5)
    await peer.expect("track_unmuted", lambda p, pub: p.identity == "esp32")
    frames = await peer.record(track, 2.0)
    assert tone_frames(frames, 48000, 440) >= 0.9 * 100
    dev.release()
    await dev.wait_line(r"\[lkd\] mute muted=1", 5)
    await peer.expect("track_muted", lambda p, pub: p.identity == "esp32")


async def test_half_duplex_closes_the_microphone_while_the_agent_speaks(server, gateway, sims, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, room_name, play=sine(440, 60), half_duplex=True)
    await dev.wait_line(r"\[lkd\] welcome ", 20)
    track, _, _ = await peer.expect("track_subscribed", lambda t, pub, p: p.identity == "esp32", timeout=20)
    await peer.room.local_participant.set_attributes({"lk.agent.state": "listening"})
    await dev.wait_line(r"\[lkd\] agent_state agent=agent state=listening", 5)
    assert tone_frames(await peer.record(track, 1.5), 48000, 440) >= 0.9 * 75
    await peer.room.local_participant.set_attributes({"lk.agent.state": "speaking"})
    await dev.wait_line(r"\[lkd\] agent_state agent=agent state=speaking", 5)
    await asyncio.sleep(0.5)
    heard = await peer.record(track, 1.5, wait_audible=1.5)
    assert tone_frames(heard, 48000, 440) <= 5, "the mic stayed open while the agent spoke"
    mark = dev.mark()
    await peer.room.local_participant.set_attributes({"lk.agent.state": "listening"})
    await dev.wait_line(r"\[lkd\] agent_state agent=agent state=listening", 5, since=mark)
    assert tone_frames(await peer.record(track, 1.5), 48000, 440) >= 0.9 * 75


async def test_led_shows_the_agent_state(server, gateway, sims, peers, room_name):
    listening, thinking, speaking = (0, 32, 0), (0, 0, 32), (24, 0, 24)  # firmware/lkd/ui.py's colours
    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, room_name)
    await dev.wait_line(r"\[lkd\] welcome ", 20)

    async def led_turns(rgb, timeout=3.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if rgb in [c for _, c in dev.led_colors()[-2:]]:  # blinking states alternate with dark
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"LED never showed {rgb}; last colours {dev.led_colors()[-5:]}")

    for state, rgb in (("listening", listening), ("thinking", thinking), ("speaking", speaking),
                       ("listening", listening)):
        await peer.room.local_participant.set_attributes({"lk.agent.state": state})
        await led_turns(rgb)
