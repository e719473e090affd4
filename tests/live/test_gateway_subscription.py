"""The gateway receives only what a device hears, and sends a device only what it can take."""

from __future__ import annotations

import asyncio
import json
import time


from lkdevice.host_tools.device_client import DeviceClient
from lkdevice.rtc.playout import tap_for

from ..audio_checks import tone_frames
from .conftest import token
from .test_gateway import clients, device_frames_freq, joined_device  # noqa: F401  (fixture)


def packets_by_track(session) -> dict[str, int]:
    """RTP packets the SFU has sent the gateway for this device, by the track each receiver carries."""
    peer = session.room._peer
    counts: dict[str, int] = {}
    for t in peer.pc.getTransceivers():
        tap = tap_for(t.receiver.track) if t.receiver and t.receiver.track else None
        if tap is None or t.mid is None:
            continue
        sid = peer.mid_to_track_id.get(t.mid, f"mid {t.mid}")
        counts[sid] = counts.get(sid, 0) + tap.packets
    return counts


async def tracks_flowing(session, seconds: float = 1.5) -> dict[str, int]:
    """The tracks whose packets keep arriving at the gateway (a third of their 50 a second at least),
    and how many came in `seconds`; a track that just ended may still trickle in for a moment."""
    before = packets_by_track(session)
    await asyncio.sleep(seconds)
    after = packets_by_track(session)
    return {sid: n - before.get(sid, 0) for sid, n in after.items() if n - before.get(sid, 0) > seconds * 50 / 3}


async def arriving_packets_per_s(session, seconds: float = 1.5) -> float:
    """Everything the SFU sends this device's participant (RTP, RTCP, data), before any routing."""
    async def count() -> int:
        report = await session.room._peer.pc.getStats()
        return sum(s.packetsReceived for s in report.values() if s.type == "transport")

    before = await count()
    await asyncio.sleep(seconds)
    return (await count() - before) / seconds


async def until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def heard_pitch(dev, frequency: float, seconds: float = 2.0) -> int:
    dev.drain_audio()
    pcm = await dev.record(seconds)
    return tone_frames(device_frames_freq(pcm), 16000, frequency, tolerance=10)


def audio_sid(peer) -> str:
    (pub,) = peer.room.local_participant.track_publications.values()
    return pub.sid


async def test_gateway_receives_only_the_track_its_device_hears(server, gateway, clients, peers, room_name):
    dev = await joined_device(clients, gateway, room_name)
    (session,) = gateway.sessions.values()
    players, publishers = [], {}
    try:
        for name, freq in (("alice", 500), ("bob", 700), ("carol", 900)):
            p = publishers[name] = await peers(name, server.url, room_name)
            players.append(await p.publish_tone(freq, name=name + "-voice"))
        agent = await peers("agent", server.url, room_name, kind="agent")
        players.append(await agent.publish_tone(1000))
        agent_sid = audio_sid(agent)
        assert await until(lambda: session.room.subscribed_tracks() == [agent_sid]), \
            f"gateway subscribed to {session.room.subscribed_tracks()}, want only the agent's {agent_sid}"
        # the server forwards the agent's track and nothing else
        flowing = await tracks_flowing(session)
        assert set(flowing) == {agent_sid}, f"packets by track in 1.5 s: {flowing}"
        # and sends nothing aiortc might drop unseen: one track is 50 packets a second
        # (before, with auto_subscribe: about 200)
        rate = await arriving_packets_per_s(session)
        assert rate < 75, f"{rate:.0f} packets/s reach the gateway for one device"
        good = await heard_pitch(dev, 1000)
        assert good >= 80, f"1 kHz in {good} of 100 device frames"

        # the agent leaves: the device hears the newest other track, and only it flows
        await agent.room.disconnect()
        carol_sid = audio_sid(publishers["carol"])
        assert await until(lambda: session.room.subscribed_tracks() == [carol_sid]), \
            f"gateway subscribed to {session.room.subscribed_tracks()}, want carol's {carol_sid}"
        flowing = await tracks_flowing(session)
        assert set(flowing) == {carol_sid}, f"packets by track in 1.5 s: {flowing}, carol {carol_sid}, {dict(session.room._peer.mid_to_track_id)}"
        good = await heard_pitch(dev, 900)
        assert good >= 80, f"carol's 900 Hz in {good} of 100 device frames"

        # carol unpublishes: bob's is the newest left
        await publishers["carol"].room.local_participant.unpublish_track(carol_sid)
        bob_sid = audio_sid(publishers["bob"])
        assert await until(lambda: session.room.subscribed_tracks() == [bob_sid])
        assert await heard_pitch(dev, 700) >= 80

        # nothing left to hear: nothing subscribed, nothing arrives
        for name in ("alice", "bob"):
            await publishers[name].room.local_participant.unpublish_track(audio_sid(publishers[name]))
        assert await until(lambda: session.room.subscribed_tracks() == [])
        assert await tracks_flowing(session, 1.0) == {}
    finally:
        for t in players:
            t.cancel()


# --- the refresh token and the device's max_text --------------------------------------------

async def test_token_too_large_for_the_device_is_reported_not_sent(server, gateway, clients, room_name, caplog):
    """A device with max_text 1024 and a token carrying 1.5 KB of metadata: the gateway
    never sends it a frame larger than it takes; it says a token was dropped instead."""
    dev = DeviceClient(gateway.url, codec="pcm16", max_text=1024)
    await dev.open()
    try:
        welcome = await dev.hello(token("esp32", room_name, ttl=600, metadata="m" * 1500))
        assert welcome["t"] == "welcome", welcome
        # before: the gateway queued the token at attach whatever its size (and a later
        # refresh was refused by send() without a word)
        msg = await dev.expect(lambda m: m["t"] == "token" or (m["t"] == "dropped" and m["what"] == "token"),
                               timeout=15)
        size = len(json.dumps(msg).encode())
        assert msg["t"] == "dropped", f"a {size}-byte token frame for a device that takes 1024"
        assert msg["size"] > 1024
        # the gateway says why in its log, without the token
        (session,) = gateway.sessions.values()
        secret = session.room.refresh_token
        logged = [r.getMessage() for r in caplog.records]
        assert any("max_text" in m and "token" in m for m in logged)
        assert secret and not any(secret in m for m in logged)
        dev.ws.transport.abort()
        await dev.closed.wait()

        back = DeviceClient(gateway.url, codec="pcm16", max_text=1024)
        back.welcome = dev.welcome
        await back.open()
        try:
            assert (await back.resume())["t"] == "resumed"
            await back.expect(lambda m: m["t"] == "dropped" and m["what"] == "token")
            sizes = [len(json.dumps(m).encode()) for m in back.log]
            assert max(sizes) <= 1024, f"a {max(sizes)}-byte frame for a device that takes 1024"
            assert not any(m["t"] == "token" for m in back.log)
        finally:
            await back.close()
    finally:
        await dev.close()


# --- Room.set_subscribed, under the gateway ----------------------------------------------

async def test_room_without_auto_subscribe_knows_tracks_and_subscribes_on_request(server, room_name, peers, devices):
    from lkdevice.rtc.room import RoomOptions

    dev = await devices(server.url, room_name, options=RoomOptions(auto_subscribe=False))
    events: list[tuple[str, str]] = []
    for name in ("track_published", "track_subscribed", "track_unsubscribed"):
        dev.on(name, lambda *a, name=name: events.append((name, a[-2].sid)))
    peer = await peers("alice", server.url, room_name)
    player = await peer.publish_tone(1000)
    try:
        sid = audio_sid(peer)
        assert await until(lambda: ("track_published", sid) in events)
        await asyncio.sleep(1.0)
        assert dev.subscribed_tracks() == [] and ("track_subscribed", sid) not in events

        await dev.set_subscribed(sid, True)
        assert await until(lambda: ("track_subscribed", sid) in events)
        assert dev.subscribed_tracks() == [sid]
        frames = []
        async for chunk in dev.audio_stream(sid, sample_rate=16000):
            frames.append(chunk.samples)
            if len(frames) == 75:
                break
        assert tone_frames(frames[25:], 16000, 1000, tolerance=10) >= 40

        await dev.set_subscribed(sid, False)
        assert ("track_unsubscribed", sid) in events and dev.subscribed_tracks() == []
        await asyncio.sleep(0.5)  # packets already on their way
        tap = tap_for(next(t.receiver.track for t in dev._peer.pc.getTransceivers()
                           if dev._peer.mid_to_track_id.get(t.mid) == sid))
        before = tap.packets
        await asyncio.sleep(1.0)
        assert tap.packets - before < 5, "the server kept sending an unsubscribed track"
    finally:
        player.cancel()


async def test_a_rejoin_asks_again_for_the_tracks_it_had(server, room_name, peers, devices):
    """A rejoin is a new participant on the server, with no subscriptions: Room asks again."""
    from lkdevice.rtc.lifecycle import MediaFailed
    from lkdevice.rtc.room import RoomOptions

    dev = await devices(server.url, room_name, options=RoomOptions(auto_subscribe=False))
    kinds: asyncio.Queue = asyncio.Queue()
    dev.on("reconnected", kinds.put_nowait)
    peer = await peers("alice", server.url, room_name)
    player = await peer.publish_tone(1000)
    try:
        sid = audio_sid(peer)
        assert await until(lambda: dev.state.find_track(sid) is not None)
        await dev.set_subscribed(sid, True)
        assert await until(lambda: dev.subscribed_tracks() == [sid])
        await dev._handle(MediaFailed())  # as when ICE gives up
        assert await asyncio.wait_for(kinds.get(), 30) == "rejoin"
        # before: the new participant subscribed to nothing, so nothing came back
        assert await until(lambda: dev.subscribed_tracks() == [sid]), "not subscribed again after the rejoin"
        frames = []
        async for chunk in dev.audio_stream(sid, sample_rate=16000):
            frames.append(chunk.samples)
            if len(frames) == 75:
                break
        assert tone_frames(frames[25:], 16000, 1000, tolerance=10) >= 40
    finally:
        player.cancel()
