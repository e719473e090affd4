"""The gateway against the real server: a protocol device on one side, the
official SDK on the other."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from lkdevice import device_protocol as dp
from lkdevice.rtc.room import token_claims
from lkdevice.gateway import Gateway, GatewayConfig
from lkdevice.host_tools.device_client import DeviceClient

from ..audio_checks import frame_frequency, tone_frames
from .conftest import sine, token


@pytest.fixture
async def clients():
    made: list[DeviceClient] = []

    async def make(url: str, codec: str = "pcm16", **open_kw) -> DeviceClient:
        c = await DeviceClient(url, codec=codec).open(**open_kw)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            await asyncio.wait_for(c.close(), 5)
        except Exception:
            pass


async def joined_device(clients, gateway, room: str, identity: str = "esp32", codec: str = "pcm16", **kw):
    dev = await clients(gateway.url, codec)
    welcome = await dev.hello(token(identity, room, **kw))
    assert welcome["t"] == "welcome", welcome
    return dev


def device_frames_freq(samples: np.ndarray) -> list[np.ndarray]:
    return [samples[i:i + 320] for i in range(0, len(samples) - 319, 320)]


@pytest.mark.parametrize("codec", ["pcm16", "ulaw", "adpcm"])
async def test_tone_both_ways_per_codec(server, gateway, clients, peers, room_name, codec):
    dev = await joined_device(clients, gateway, room_name, codec=codec)
    assert dev.welcome["codec"] == codec and dev.welcome["me"]["identity"] == "esp32"
    peer = await peers("agent", server.url, room_name)
    streaming = asyncio.ensure_future(dev.stream(sine(440, 6)))
    track, _, _ = await peer.expect("track_subscribed", lambda t, pub, p: p.identity == "esp32")
    frames = await peer.record(track, 3.0)
    assert tone_frames(frames, 48000, 440) >= 0.9 * 150, f"440 Hz in {tone_frames(frames, 48000, 440)} of 150 frames"

    playing = await peer.publish_tone(1000)
    try:
        await dev.expect(lambda m: m["t"] == "joined" and m["p"]["identity"] == "agent")
        got: list[np.ndarray] = []
        deadline = asyncio.get_running_loop().time() + 8
        while len(got) < 100 and asyncio.get_running_loop().time() < deadline:
            pcm = await dev.record(0.5)
            got += [f for f in device_frames_freq(pcm) if frame_frequency(f, 16000) is not None or got]
        good = tone_frames(got[:100], 16000, 1000, tolerance=10)
        assert good >= 90, f"1 kHz in {good} of {len(got[:100])} device frames ({codec})"
    finally:
        playing.cancel()
        streaming.cancel()


async def test_data_rpc_and_agent_state_both_ways(server, gateway, clients, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    dev = await joined_device(clients, gateway, room_name)
    assert [p["identity"] for p in dev.welcome["participants"]] == ["agent"]
    await peer.expect("participant_connected", lambda p: p.identity == "esp32")

    # device -> peer data, with a topic
    await dev.send({"t": "data", "topic": "sensors", "text": "temp=21.5"})
    (packet,) = await peer.expect("data_received", lambda pk: pk.topic == "sensors")
    assert packet.data == b"temp=21.5" and packet.participant.identity == "esp32"
    # peer -> device, text and binary
    await peer.room.local_participant.publish_data(b"hello device", topic="cmd", destination_identities=["esp32"])
    msg = await dev.expect(lambda m: m["t"] == "data")
    assert msg == {"t": "data", "from": "agent", "topic": "cmd", "text": "hello device"}
    await peer.room.local_participant.publish_data(b"\xff\x00\x01", topic="bin")
    msg = await dev.expect(lambda m: m["t"] == "data" and m.get("topic") == "bin")
    assert msg["b64"] == "/wAB"

    # peer calls the device; the device answers
    call = asyncio.ensure_future(peer.room.local_participant.perform_rpc(
        destination_identity="esp32", method="led.set", payload='{"on":true}'))
    req = await dev.expect(lambda m: m["t"] == "rpc")
    assert (req["from"], req["method"], req["payload"]) == ("agent", "led.set", '{"on":true}')
    await dev.send({"t": "rpc_result", "id": req["id"], "payload": "ok"})
    assert await asyncio.wait_for(call, 10) == "ok"
    # and an error from the device reaches the caller as an RpcError
    from livekit import rtc
    call = asyncio.ensure_future(peer.room.local_participant.perform_rpc(
        destination_identity="esp32", method="motor.run", payload=""))
    req = await dev.expect(lambda m: m["t"] == "rpc" and m["method"] == "motor.run")
    await dev.send({"t": "rpc_result", "id": req["id"], "error": {"code": 1400, "message": "no motor"}})
    with pytest.raises(rtc.RpcError) as err:
        await asyncio.wait_for(call, 10)
    assert err.value.code == 1400 and "no motor" in err.value.message

    # the device calls the peer
    peer.room.local_participant.register_rpc_method("weather", lambda data: f"sunny for {data.caller_identity}")
    await dev.send({"t": "rpc", "id": "r1", "to": "agent", "method": "weather", "payload": ""})
    res = await dev.expect(lambda m: m["t"] == "rpc_result" and m["id"] == "r1")
    assert res["payload"] == "sunny for esp32"
    await dev.send({"t": "rpc", "id": "r2", "to": "agent", "method": "nope", "timeout_ms": 3000})
    res = await dev.expect(lambda m: m["t"] == "rpc_result" and m["id"] == "r2")
    assert res["error"]["code"] == 1400

    # agent state, as LiveKit Agents publish it
    await peer.room.local_participant.set_attributes({"lk.agent.state": "thinking"})
    msg = await dev.expect(lambda m: m["t"] == "agent_state")
    assert msg == {"t": "agent_state", "identity": "agent", "state": "thinking"}
    msg = await dev.expect(lambda m: m["t"] == "attributes")
    assert msg["changed"] == {"lk.agent.state": "thinking"}

    # ping, mute, attributes from the device
    await dev.send({"t": "ping", "id": 7})
    assert (await dev.expect(lambda m: m["t"] == "pong"))["id"] == 7
    await dev.send({"t": "attributes", "attributes": {"battery": "87"}})
    changed, p = await peer.expect("participant_attributes_changed", lambda c, p: p.identity == "esp32")
    assert p.attributes["battery"] == "87"
    await dev.send({"t": "mute", "muted": True})
    await peer.expect("track_muted", lambda p, pub: p.identity == "esp32")


async def test_refresh_token_reaches_device(gateway, clients, room_name):
    dev = await joined_device(clients, gateway, room_name, ttl=600)
    msg = await dev.expect(lambda m: m["t"] == "token", timeout=10)
    claims = token_claims(msg["token"])
    assert claims["sub"] == "esp32" and claims["video"]["room"] == room_name
    assert msg["token"] != token("esp32", room_name, ttl=600)


async def test_link_drop_within_grace_resumes_unseen(server, gateway, clients, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    dev = await joined_device(clients, gateway, room_name)
    await peer.expect("participant_connected", lambda p: p.identity == "esp32")
    dev.ws.transport.abort()  # a Wi-Fi drop: no close frame
    await dev.closed.wait()
    await asyncio.sleep(5)
    await peer.room.local_participant.publish_data(b"while you were away", topic="cmd")

    back = DeviceClient(gateway.url, codec="pcm16")
    back.welcome = dev.welcome
    await back.open()
    try:
        resumed = await back.resume()
        assert resumed["t"] == "resumed" and [p["identity"] for p in resumed["participants"]] == ["agent"]
        # what was sent during the drop is delivered after the resume
        missed = await back.expect(lambda m: m["t"] == "data")
        assert missed["text"] == "while you were away"
        assert not peer.saw("participant_disconnected", lambda p: p.identity == "esp32")
        streaming = asyncio.ensure_future(back.stream(sine(440, 6)))
        track, _, _ = await peer.expect("track_subscribed", lambda t, pub, p: p.identity == "esp32")
        frames = await peer.record(track, 2.0)
        assert tone_frames(frames, 48000, 440) >= 0.9 * 100
        streaming.cancel()
    finally:
        await back.close()


async def test_grace_period_ends_in_leave_and_resume_is_refused(server, clients, peers, room_name):
    async with Gateway(GatewayConfig(livekit_url=server.url, port=0, grace=2.0)) as gw:
        peer = await peers("agent", server.url, room_name)
        dev = await joined_device(clients, gw, room_name)
        assert dev.welcome["grace_s"] == 2
        await peer.expect("participant_connected", lambda p: p.identity == "esp32")
        dev.ws.transport.abort()
        await peer.expect("participant_disconnected", lambda p: p.identity == "esp32", timeout=8)
        again = await clients(gw.url)
        again.welcome = dev.welcome
        msg = await again.resume()
        assert msg["t"] == "error" and msg["code"] == "unknown_session" and msg["fatal"]
        await again.closed.wait()
        assert again.close_code == dp.CLOSE_SESSION


async def test_leave_is_immediate(server, gateway, clients, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    dev = await joined_device(clients, gateway, room_name)
    await peer.expect("participant_connected", lambda p: p.identity == "esp32")
    await dev.send({"t": "leave", "reason": "powering off"})
    await peer.expect("participant_disconnected", lambda p: p.identity == "esp32", timeout=3)
    await dev.closed.wait()
    assert not gateway.sessions


async def test_server_removal_tells_the_device(server, gateway, clients, room_name):
    from livekit import api
    dev = await joined_device(clients, gateway, room_name)
    lk = api.LiveKitAPI(server.http_url, "devkey", "secret")
    try:
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=room_name, identity="esp32"))
    finally:
        await lk.aclose()
    msg = await dev.expect(lambda m: m["t"] == "leave", timeout=10)
    assert "PARTICIPANT_REMOVED" in msg["reason"]
    await dev.closed.wait()
    assert dev.close_code == dp.CLOSE_LEFT


async def test_bad_token_gets_servers_reason_without_the_token(server, gateway, clients, room_name):
    from lkdevice.host_tools.tokens import mint_token
    bad = mint_token("devkey", "not-the-secret", identity="esp32", room=room_name)
    dev = await clients(gateway.url)
    msg = await dev.hello(bad)
    assert msg["t"] == "error" and msg["code"] == "token_rejected" and msg["fatal"]
    assert "signature" in msg["message"].lower() and bad not in msg["message"]
    assert bad.split(".")[2] not in msg["message"]
    await dev.closed.wait()
    assert dev.close_code == dp.CLOSE_TOKEN


@pytest.mark.parametrize("cut", ["\n", "\x00", "\r\nX-Other: 1"])
async def test_a_token_with_a_control_character_is_rejected_without_echoing_it(gateway, clients, room_name, cut):
    """Found by the hil fuzz: such a token cannot go into an HTTP header; the device was told LiveKit was
    unreachable (so it retried for ever) and the message held the token, split where the redaction missed it."""
    from lkdevice.host_tools.tokens import mint_token
    good_shape = mint_token("devkey", "not-the-secret", identity="esp32", room=room_name)
    bad = good_shape[:20] + cut + good_shape[20:]
    dev = await clients(gateway.url)
    msg = await dev.hello(bad)
    assert msg["t"] == "error" and msg["code"] == "token_rejected" and msg["fatal"], msg
    for part in bad.split(cut) + good_shape.split("."):
        assert part[:12] not in msg["message"], msg["message"]
    await dev.closed.wait()
    assert dev.close_code == dp.CLOSE_TOKEN


@pytest.mark.parametrize("first, code", [
    ('{"t":"hello","v":9,"token":"x","codec":"pcm16"}', "unsupported_version"),
    ('{"t":"hello","v":1,"token":"x","codec":"opus"}', "unsupported_codec"),
    ('{"t":"ping"}', "unexpected"),
    ('not json', "malformed"),
    (b"\x01\x00\x00\x01", "unexpected"),
])
async def test_bad_first_message_gets_its_error(gateway, clients, first, code):
    dev = await clients(gateway.url)
    await dev.send_raw(first)
    msg = await dev.expect(lambda m: m["t"] == "error")
    assert msg["code"] == code and msg["fatal"]
    await dev.closed.wait()
    assert dev.close_code in (dp.CLOSE_PROTOCOL, dp.CLOSE_TOO_LARGE)


async def test_bad_device_does_not_disturb_another(server, gateway, clients, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    good = await joined_device(clients, gateway, room_name, identity="good")
    bad = await joined_device(clients, gateway, room_name, identity="bad", codec="ulaw")
    streaming = asyncio.ensure_future(good.stream(sine(440, 12)))
    track, _, _ = await peer.expect("track_subscribed", lambda t, pub, p: p.identity == "good")
    recording = asyncio.ensure_future(peer.record(track, 4.0))

    tone = sine(300, 1)
    # out of order: frame 5 after frame 6
    bad.encoder.seq = 6
    await bad.send_pcm(tone[:320])
    bad.encoder.seq = 5
    await bad.send_pcm(tone[:320])
    err = await bad.expect(lambda m: m["t"] == "error")
    assert (err["code"], err["fatal"], err["seq"]) == ("out_of_order", False, 5)
    # a frame of the wrong length: non-fatal
    await bad.send_raw(bytes([1, 1, 0, 9, 0, 0, 0, 0]) + b"\x00" * 100)
    err = await bad.expect(lambda m: m["t"] == "error" and m["code"] == "bad_frame")
    assert not err["fatal"] and "328" in err["message"]
    await asyncio.sleep(1.1)
    # oversized: fatal, and the socket closes
    await bad.send_raw(b"\x01\x01" + b"\x00" * 5000)
    err = await bad.expect(lambda m: m["t"] == "error" and m["code"] == "too_large")
    assert err["fatal"]
    await bad.closed.wait()
    assert bad.close_code == dp.CLOSE_TOO_LARGE

    # a malformed control message from a second bad link
    bad2 = await joined_device(clients, gateway, room_name, identity="bad2")
    await bad2.send_raw('{"t":"data","to":"not-a-list"}')
    err = await bad2.expect(lambda m: m["t"] == "error")
    assert err["code"] == "malformed" and "'to'" in err["message"]
    await bad2.closed.wait()
    assert bad2.close_code == dp.CLOSE_PROTOCOL

    frames = await recording
    streaming.cancel()
    assert tone_frames(frames, 48000, 440) >= 0.9 * 200, "the good device's audio suffered"


async def test_oversized_text_is_refused_and_data_too_large_for_device_is_reported(
        server, gateway, clients, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    dev = await joined_device(clients, gateway, room_name)
    await peer.expect("participant_connected", lambda p: p.identity == "esp32")
    # a packet bigger than the device said it can take: reported, not sent
    await peer.room.local_participant.publish_data(b"x" * 6000, topic="big")
    msg = await dev.expect(lambda m: m["t"] == "dropped")
    assert msg["what"] == "data" and msg["size"] > 6000
    await dev.send({"t": "data", "topic": "ok", "text": "still here"})
    await peer.expect("data_received", lambda pk: pk.topic == "ok")
    await dev.send_raw(json.dumps({"t": "data", "text": "y" * 20000}))
    err = await dev.expect(lambda m: m["t"] == "error")
    assert err["code"] == "too_large" and err["fatal"]


async def test_wss_with_the_boards_ca(server, clients, room_name, tmp_path):
    import ssl

    from lkdevice.gateway import server_ssl_context
    from lkdevice.host_tools.certs import make_certs

    certs = make_certs(tmp_path / "good")
    other = make_certs(tmp_path / "other")
    config = GatewayConfig(livekit_url=server.url, port=0,
                           ssl_context=server_ssl_context(str(certs.server_cert), str(certs.server_key)))
    async with Gateway(config) as gw:
        assert gw.url.startswith("wss://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(certs.ca_cert))
        dev = await clients(gw.url, ssl=trusting)
        assert (await dev.hello(token("esp32", room_name)))["t"] == "welcome"
        stranger = ssl.create_default_context(cafile=str(other.ca_cert))
        with pytest.raises(ssl.SSLCertVerificationError):
            await clients(gw.url, ssl=stranger)


async def test_gateway_restart_device_joins_again_with_its_refresh_token(server, clients, peers, room_name):
    peer = await peers("agent", server.url, room_name)
    gw = await Gateway(GatewayConfig(livekit_url=server.url, port=0)).start()
    port = gw.port
    dev = await joined_device(clients, gw, room_name, ttl=600)
    newest = (await dev.expect(lambda m: m["t"] == "token"))["token"]
    await gw.close()
    msg = await dev.expect(lambda m: m["t"] == "leave")
    assert "shutting down" in msg["reason"]
    await dev.closed.wait()
    assert dev.close_code == dp.CLOSE_RESTART
    await peer.expect("participant_disconnected", lambda p: p.identity == "esp32")

    async with Gateway(GatewayConfig(livekit_url=server.url, port=port)) as gw2:
        again = await clients(gw2.url)
        again.welcome = dev.welcome  # the old session went with the old process
        msg = await again.resume()
        assert msg["code"] == "unknown_session"
        fresh = await clients(gw2.url)
        assert (await fresh.hello(newest))["t"] == "welcome"
        await peer.expect("participant_connected", lambda p: p.identity == "esp32")


async def test_a_device_that_stops_reading_does_not_slow_another(server, gateway, clients, peers, room_name):
    # an agent: the gateway plays an agent's track over the newer (silent) one of the stuck device
    peer = await peers("agent", server.url, room_name, kind="agent")
    playing = await peer.publish_tone(1000)
    good = await joined_device(clients, gateway, room_name, identity="good")
    stuck = await joined_device(clients, gateway, room_name, identity="stuck")
    try:
        import socket
        stuck.ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.ws.transport.pause_reading()  # its downlink backs up at the gateway
        streaming = asyncio.ensure_future(good.stream(sine(440, 10)))
        track, _, _ = await peer.expect("track_subscribed", lambda t, pub, p: p.identity == "good")
        frames = await peer.record(track, 4.0)
        assert tone_frames(frames, 48000, 440) >= 0.9 * 200
        # the good device kept getting the agent's audio, on time
        good.drain_audio()
        heard = await good.record(1.0)
        assert len(heard) >= 0.8 * 16000
        assert tone_frames(device_frames_freq(heard), 16000, 1000, tolerance=10) >= 40
        session = next(s for s in gateway.sessions.values() if s.identity == "stuck")
        assert len(session.outbox.audio) <= session.outbox.audio_limit
        assert session.outbox.audio_dropped > 50, "the stuck device's stale audio was not dropped"
        streaming.cancel()
    finally:
        playing.cancel()
        stuck.ws.transport.resume_reading()


# --- issue 7, section 4 ------------------------------------------------------------------

async def test_max_devices_counts_joins_in_flight(server, clients, room_name):
    """Six hellos at once on a gateway for four: exactly two are refused, with gateway_full."""
    async with Gateway(GatewayConfig(livekit_url=server.url, port=0, max_devices=4)) as gw:
        devs = [await clients(gw.url) for _ in range(6)]
        answers = await asyncio.gather(*(d.hello(token(f"dev{i}", room_name)) for i, d in enumerate(devs)))
        refused = [a for a in answers if a["t"] == "error"]
        assert sum(a["t"] == "welcome" for a in answers) == 4, answers
        assert len(refused) == 2 and all(a["code"] == dp.E_FULL and a["fatal"] for a in refused), refused
        for d, a in zip(devs, answers):
            if a["t"] == "error":
                await d.closed.wait()
                assert d.close_code == dp.CLOSE_FULL
        assert len(gw.sessions) == 4
        # a slot comes back when a device leaves, and a refused join gives its slot back
        leaver = devs[[a["t"] for a in answers].index("welcome")]
        await leaver.send({"t": "leave"})
        await leaver.closed.wait()
        bad = await clients(gw.url)
        from lkdevice.host_tools.tokens import mint_token
        assert (await bad.hello(mint_token("devkey", "wrong", identity="x", room=room_name)))["code"] == "token_rejected"
        late = await clients(gw.url)
        assert (await late.hello(token("late", room_name)))["t"] == "welcome"


async def test_deeply_nested_json_is_a_protocol_error_to_the_device(gateway, clients, room_name):
    dev = await joined_device(clients, gateway, room_name)
    await dev.send_raw('{"t": "ping", "id": ' + "[" * 5000 + "]" * 5000 + "}")
    err = await dev.expect(lambda m: m["t"] == "error")
    assert err["code"] == "malformed" and err["fatal"], err
    await dev.closed.wait()
    assert dev.close_code == dp.CLOSE_PROTOCOL


async def test_rpc_answer_with_a_code_outside_uint32_fails_the_call_at_once(server, gateway, clients, peers,
                                                                             room_name):
    from livekit import rtc
    peer = await peers("agent", server.url, room_name)
    dev = await joined_device(clients, gateway, room_name)
    await peer.expect("participant_connected", lambda p: p.identity == "esp32")
    call = asyncio.ensure_future(peer.room.local_participant.perform_rpc(
        destination_identity="esp32", method="led.set", payload="", response_timeout=20.0))
    req = await dev.expect(lambda m: m["t"] == "rpc")
    await dev.send({"t": "rpc_result", "id": req["id"], "error": {"code": 2 ** 40, "message": "huge"}})
    err = await dev.expect(lambda m: m["t"] == "error")
    assert err["code"] == "malformed" and err["fatal"] and err.get("id") == req["id"], err
    with pytest.raises(rtc.RpcError) as info:
        await asyncio.wait_for(call, 8)  # well before the caller's own 20 s timeout
    assert info.value.code == 1500, info.value


async def test_welcome_and_resumed_fit_the_devices_max_text_in_a_big_room(server, gateway, peers, room_name):
    """Three peers with large attributes, a device that takes 1 KB frames: it still joins."""
    big = {"profile": "x" * 600}
    await peers("agent", server.url, room_name, kind="agent", attributes=big)
    for i in range(3):
        await peers(f"listener-{i}", server.url, room_name, attributes=big)
    dev = await DeviceClient(gateway.url, codec="pcm16", max_text=dp.MIN_DEVICE_TEXT).open()
    try:
        welcome = await dev.hello(token("esp32", room_name))
        assert welcome["t"] == "welcome", welcome
        assert len(json.dumps(welcome).encode()) <= dp.MIN_DEVICE_TEXT
        sent = {p["identity"] for p in welcome["participants"]}
        truncated = welcome["truncated"]
        assert len(sent) + truncated.get("participants", 0) == 4, welcome
        assert "agent" in sent  # the agent is the one a device cannot do without
        assert truncated.get("attributes", 0) >= 1

        dev.ws.transport.abort()
        await dev.closed.wait()
        back = DeviceClient(gateway.url, codec="pcm16", max_text=dp.MIN_DEVICE_TEXT)
        back.welcome = welcome
        await back.open()
        try:
            resumed = await back.resume()
            assert resumed["t"] == "resumed", resumed
            assert len(json.dumps(resumed).encode()) <= dp.MIN_DEVICE_TEXT
            assert "agent" in {p["identity"] for p in resumed["participants"]} and resumed["truncated"]
            # a newcomer whose attributes alone exceed max_text still shows up, without them
            await peers("newcomer", server.url, room_name, attributes={"profile": "y" * 1500})
            joined = await back.expect(lambda m: m["t"] == "joined" and m["p"]["identity"] == "newcomer")
            assert "attributes" not in joined["p"] and joined["truncated"] == {"attributes": 1}
        finally:
            await back.close()
    finally:
        await dev.close()


async def test_a_closed_session_leaves_no_task_behind(server, gateway, clients, peers, room_name):
    """A device leaves with a call to a slow peer in flight: nothing of its session keeps running."""
    peer = await peers("agent", server.url, room_name)
    release = asyncio.Event()

    async def slow(data):
        await asyncio.wait_for(release.wait(), 30)
        return "late"

    peer.room.local_participant.register_rpc_method("slow", slow)
    dev = await joined_device(clients, gateway, room_name)
    await dev.send({"t": "rpc", "id": "r1", "to": "agent", "method": "slow", "timeout_ms": 30000})
    await asyncio.sleep(1.0)  # the request is acked and waiting for its response

    def session_tasks():
        return [t for t in asyncio.all_tasks() if not t.done() and "gateway/session.py" in
                (getattr(t.get_coro(), "cr_code", None) and t.get_coro().cr_code.co_filename or "")]

    assert session_tasks(), "the call is not running"
    await dev.send({"t": "leave"})
    await dev.closed.wait()
    deadline = asyncio.get_running_loop().time() + 5
    while session_tasks() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    release.set()
    assert not session_tasks(), [t.get_coro() for t in session_tasks()]


def _native_threads() -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split("Threads:")[1].split()[0])


@pytest.mark.parametrize("ending", ["leave", "link lost past the grace"])
async def test_a_closed_session_ends_its_codec_threads_without_waiting_for_a_collection(server, clients, room_name,
                                                                                         ending):
    """Found with the hil's traced gateway (hil/harness/gateway_trace.py): each session's Opus encoder
    holds two libav threads, and the session's objects sit in reference cycles after it closes; so the
    threads (and the encoder's memory) stayed until a full collection, two more a cycle (5 -> 91 over
    60 join/leave cycles of `lkdevice gateway`)."""
    import gc

    gw = await Gateway(GatewayConfig(livekit_url=server.url, port=0, grace=0.5)).start()

    async def one_session(identity: str) -> None:
        dev = await joined_device(clients, gw, room_name, identity=identity)
        if ending == "leave":
            await dev.send({"t": "leave", "reason": "done"})
            await asyncio.wait_for(dev.closed.wait(), 10)
        else:
            await dev.close()
            await asyncio.sleep(1.5)  # past the grace: the session leaves the room
        await asyncio.sleep(0.3)

    try:
        await one_session("warm")  # the first join starts what every join shares (executor threads, ...)
        gc.collect()
        gc.disable()
        try:
            before = _native_threads()
            for i in range(4):
                await one_session(f"esp32-{i}")
            await asyncio.sleep(1.0)
            after = _native_threads()
            assert not gw.sessions
        finally:
            gc.enable()
    finally:
        await gw.close()
    assert after - before <= 1, f"{after - before} more threads after 4 closed sessions ({before} -> {after})"
