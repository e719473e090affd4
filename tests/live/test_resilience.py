"""Losing the signal socket, losing the server, and refusing bad credentials."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
import urllib.parse

import pytest

import lkdevice
from lkdevice import RoomOptions, ServerUnreachable, TokenRejected
from lkdevice.host_tools.livekit_server import LocalServer
from lkdevice.host_tools.tokens import mint_token
from livekit.protocol import rtc as lkrtc
from tests.audio_checks import tone_frames

from .conftest import server_config, token
from .proxy import TcpRelay


async def test_signal_drop_resumes_without_leaving(server, room_name, peers):
    agent = await peers("agent", server.url, room_name)
    relay = await TcpRelay(server.config.port).start()
    dev = await lkdevice.connect(relay.url, token("device", room_name))
    try:
        states: asyncio.Queue = asyncio.Queue()
        dev.on("reconnecting", lambda kind: states.put_nowait(("reconnecting", kind)))
        dev.on("reconnected", lambda kind: states.put_nowait(("reconnected", kind)))
        await dev.publish_audio(lkdevice.tone(440))
        await agent.expect("participant_connected")
        await agent.expect("track_subscribed")

        relay.cut()
        assert await asyncio.wait_for(states.get(), 10) == ("reconnecting", "resume")
        assert await asyncio.wait_for(states.get(), 10) == ("reconnected", "resume")
        assert relay.connections == 2

        # signaling works again: a change we make reaches the agent
        await dev.set_attributes({"battery": "80"})
        await agent.expect("participant_attributes_changed",
                           lambda changed, p: p.identity == "device" and changed.get("battery") == "80")
        await asyncio.sleep(2)
        assert not agent.saw("participant_disconnected")
        assert dev.connection_state == "connected"
    finally:
        await dev.disconnect()
        await relay.close()


async def test_silent_server_is_detected_by_ping_timeout(server, room_name, peers):
    agent = await peers("agent", server.url, room_name)
    relay = await TcpRelay(server.config.port).start()
    dev = await lkdevice.connect(relay.url, token("device", room_name))
    try:
        states: asyncio.Queue = asyncio.Queue()
        dev.on("reconnecting", lambda kind: states.put_nowait(("reconnecting", kind, time.monotonic())))
        dev.on("reconnected", lambda kind: states.put_nowait(("reconnected", kind, time.monotonic())))
        await agent.expect("participant_connected")
        timeout = dev._protocol.ping_timeout
        frozen_at = time.monotonic()
        relay.freeze()
        what, kind, at = await asyncio.wait_for(states.get(), timeout + 10)
        assert (what, kind) == ("reconnecting", "resume")
        # noticed after the server's ping timeout, not before, and not much later
        assert timeout - 1 <= at - frozen_at <= timeout + dev._protocol.ping_interval + 1
        what, kind, _ = await asyncio.wait_for(states.get(), 10)
        assert (what, kind) == ("reconnected", "resume")
        assert not agent.saw("participant_disconnected")
    finally:
        await dev.disconnect()
        await relay.close()


@pytest.fixture
async def own_server():
    srv = LocalServer(server_config()).start()
    yield srv
    srv.stop()


async def test_server_restart_rejoins_and_audio_flows(own_server, room_name, peers):
    dev = await lkdevice.connect(own_server.url, token("device", room_name))
    try:
        states: asyncio.Queue = asyncio.Queue()
        dev.on("reconnected", lambda kind: states.put_nowait(kind))
        await dev.publish_audio(lkdevice.tone(440))

        await asyncio.to_thread(own_server.restart)
        assert await asyncio.wait_for(states.get(), 30) == "rejoin"
        assert dev.connection_state == "connected"

        agent = await peers("agent", own_server.url, room_name)
        track, pub, who = await agent.expect("track_subscribed")
        assert who.identity == "device"
        frames = await agent.record(track, 2.0)
        assert tone_frames(frames, 48000, 440) >= 0.95 * 100
    finally:
        await dev.disconnect()


async def test_wrong_secret_is_refused_with_the_server_reason(server, room_name):
    bad = mint_token("devkey", "not-the-secret", identity="device", room=room_name)
    started = time.monotonic()
    with pytest.raises(TokenRejected) as err:
        await lkdevice.connect(server.url, bad)
    assert err.value.status == 401
    assert "signature" in err.value.reason.lower() or "invalid" in err.value.reason.lower()
    assert "not-the-secret" not in str(err.value)
    assert bad not in str(err.value) and bad.split(".")[1] not in str(err.value)  # the server quotes it
    assert time.monotonic() - started < 5


async def test_expired_token_is_refused(server, room_name):
    expired = mint_token("devkey", "secret", identity="device", room=room_name,
                         ttl=-60, not_before=time.time() - 3600)
    with pytest.raises(TokenRejected) as err:
        await lkdevice.connect(server.url, expired)
    assert "expired" in err.value.reason.lower()
    assert expired.split(".")[1] not in str(err.value)


async def test_token_for_another_room_is_refused(server):
    other = token("device", "garage")
    with pytest.raises(TokenRejected) as err:
        await lkdevice.connect(server.url, other, RoomOptions(room="kitchen"))
    assert "garage" in str(err.value) and "kitchen" in str(err.value)


async def test_unreachable_url_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ServerUnreachable) as err:
        await lkdevice.connect(f"ws://127.0.0.1:{port}", token("device", "r"))
    assert f"127.0.0.1:{port}" in str(err.value)
    assert time.monotonic() - started < 3


async def test_silent_server_times_out_within_the_bound():
    # accepts TCP but never answers the WebSocket handshake
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(ServerUnreachable):
            await lkdevice.connect(f"ws://127.0.0.1:{port}", token("device", "r"), RoomOptions(connect_timeout=2))
        assert time.monotonic() - started < 4
    finally:
        listener.close()


async def test_rejoin_after_the_join_token_expired_uses_the_refresh_token(own_server, room_name):
    # expiry only matters for a fresh join, which is what a server restart forces
    dev = await lkdevice.connect(own_server.url, token("device", room_name, ttl=2))
    try:
        assert dev.refresh_token is not None
        outcome: asyncio.Queue = asyncio.Queue()
        dev.on("reconnected", outcome.put_nowait)
        dev.on("disconnected", lambda reason: outcome.put_nowait(f"disconnected: {reason}"))
        await asyncio.sleep(64)  # the join token is now expired, past the server's 60 s leeway
        await asyncio.to_thread(own_server.restart)
        assert await asyncio.wait_for(outcome.get(), 30) == "rejoin"
    finally:
        await dev.disconnect()


async def test_offer_lost_with_the_signal_link_is_answered_after_resume(server, room_name, peers):
    agent = await peers("agent", server.url, room_name)
    relay = await TcpRelay(server.config.port).start()
    dev = await lkdevice.connect(relay.url, token("device", room_name))
    try:
        states: asyncio.Queue = asyncio.Queue()
        dev.on("reconnected", states.put_nowait)
        # the server's answer to our publish offer is in the bytes the dying link loses
        answer_lost = asyncio.Event()
        deliver = dev._signal._on_message

        async def lose_answers(msg):
            if msg.WhichOneof("message") == "answer":
                answer_lost.set()
                return
            await deliver(msg)

        dev._signal._on_message = lose_answers
        await dev.publish_audio(lkdevice.tone(440), name="first")
        await asyncio.wait_for(answer_lost.wait(), 5)
        relay.cut()
        assert await asyncio.wait_for(states.get(), 10) == "resume"

        await dev.publish_audio(lkdevice.tone(660), name="second")
        for name in ("first", "second"):
            track, pub, who = await agent.expect(
                "track_subscribed", lambda t, pub, p, name=name: p.identity == "device" and pub.name == name)
        frames = await agent.record(track, 1.0)
        assert tone_frames(frames, 48000, 660) >= 0.9 * 50
    finally:
        await dev.disconnect()
        await relay.close()


def _fresh_join(request_head: bytes) -> bool:
    """Is this signal request a full join (not a resume)?"""
    target = request_head.split(b" ", 2)[1].decode()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    wrapped = lkrtc.WrappedJoinRequest.FromString(base64.urlsafe_b64decode(query["join_request"][0]))
    return not lkrtc.JoinRequest.FromString(wrapped.join_request).reconnect


async def test_rejoin_attempt_cut_mid_join_is_retried(own_server, room_name):
    relay = await TcpRelay(own_server.config.port).start()
    dev = await lkdevice.connect(relay.url, token("device", room_name))
    try:
        outcome: asyncio.Queue = asyncio.Queue()
        dev.on("reconnected", outcome.put_nowait)
        dev.on("disconnected", lambda reason: outcome.put_nowait(f"disconnected: {reason}"))
        await dev.publish_audio(lkdevice.tone(440))
        cut: list[bytes] = []

        def cut_first_rejoin(head: bytes) -> bool:
            # the socket ends right after the join response, while we republish:
            # the attempt fails with websockets' ConnectionClosed, not a LiveKitError
            if not cut and _fresh_join(head):
                cut.append(head)
                return True
            return False

        relay.cut_after_first_message = cut_first_rejoin
        await asyncio.to_thread(own_server.restart)
        assert await asyncio.wait_for(outcome.get(), 30) == "rejoin"
        assert cut, "no rejoin attempt was cut"
        assert dev.connection_state == "connected"
        await dev.set_attributes({"battery": "80"})  # signaling works
    finally:
        await dev.disconnect()
        await relay.close()


async def test_disconnect_while_the_server_is_gone_stops_the_attempts(server, room_name):
    relay = await TcpRelay(server.config.port).start()
    dev = await lkdevice.connect(relay.url, token("device", room_name), RoomOptions(reconnect_max_delay=0.5))
    try:
        ended: list[str] = []
        dev.on("disconnected", ended.append)
        reconnecting = asyncio.Event()
        dev.on("reconnecting", lambda kind: reconnecting.set())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            relay.target_port = s.getsockname()[1]  # nothing listens there: the server is gone
        relay.cut()
        await asyncio.wait_for(reconnecting.wait(), 5)
        async def attempts(n: int) -> None:
            while relay.connections < n:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(attempts(4), 20)  # the first connection plus three failed attempts
        assert dev.connection_state == "reconnecting"

        started = time.monotonic()
        await dev.disconnect()
        assert time.monotonic() - started < 1
        assert ended == ["CLIENT_INITIATED"] and dev.connection_state == "disconnected"
        tried = relay.connections
        await asyncio.sleep(2)
        assert relay.connections == tried  # no attempt after the close
        assert ended == ["CLIENT_INITIATED"]
    finally:
        await dev.disconnect()
        await relay.close()
