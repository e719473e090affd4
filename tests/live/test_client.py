"""Our client against a real livekit-server, with the official SDK on the far side."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc

import lkdevice
from lkdevice import RoomOptions, RpcError
from tests.audio_checks import tone_frames

from .conftest import token

SECONDS = 3.0
EXPECTED_FRAMES = int(SECONDS / 0.02)


async def test_both_sides_see_each_other(server, room_name, peers, devices):
    agent = await peers("agent", server.url, room_name, name="Agent Smith", attributes={"role": "agent"})
    dev = await devices(server.url, room_name, identity="kitchen-speaker", name="Kitchen",
                        options=RoomOptions(attributes={"location": "kitchen"}))

    assert dev.name == room_name
    assert dev.local_participant.identity == "kitchen-speaker"
    seen = dev.remote_participants["agent"]
    assert seen.name == "Agent Smith"
    assert seen.attributes == {"role": "agent"}

    (p,) = await agent.expect("participant_connected")
    assert p.identity == "kitchen-speaker"
    assert p.name == "Kitchen"
    for _ in range(50):  # attributes from the join request arrive with the join or just after
        if dict(p.attributes) == {"location": "kitchen"}:
            break
        await asyncio.sleep(0.1)
    assert dict(p.attributes) == {"location": "kitchen"}


async def test_our_tone_reaches_the_peer_at_440_hz(server, room_name, peers, devices):
    agent = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    mic = await dev.publish_audio(lkdevice.tone(440, sample_rate=16000))
    assert mic.sid.startswith("TR_")

    track, pub, who = await agent.expect("track_subscribed")
    assert who.identity == "device" and pub.sid == mic.sid
    frames = await agent.record(track, SECONDS)
    good = tone_frames(frames, 48000, 440)
    assert good >= 0.95 * EXPECTED_FRAMES, f"{good}/{EXPECTED_FRAMES} frames at 440 Hz"


async def test_voice_encoded_tone_reaches_the_peer_on_pitch_as_a_speaker(server, room_name, peers, devices):
    """publish_audio(voice_rate=16000): we encode 16 kHz mono Opus ourselves and hand aiortc packets."""
    agent = await peers("agent", server.url, room_name)
    speakers: asyncio.Queue = asyncio.Queue()
    agent.room.on("active_speakers_changed", lambda ps: speakers.put_nowait([p.identity for p in ps]))
    dev = await devices(server.url, room_name)
    mic = await dev.publish_audio(lkdevice.tone(440, sample_rate=16000), voice_rate=16000)

    track, pub, who = await agent.expect("track_subscribed")
    assert who.identity == "device" and pub.sid == mic.sid
    frames = await agent.record(track, SECONDS)
    good = tone_frames(frames, 48000, 440)
    assert good >= 0.95 * EXPECTED_FRAMES, f"{good}/{EXPECTED_FRAMES} frames at 440 Hz"
    # the SFU ranks speakers by the audio level in each RTP packet: the packet path must carry it
    heard: list[str] = []
    while "device" not in heard:
        heard = await asyncio.wait_for(speakers.get(), 10)
    # and the wire carries the voice bitrate, not aiortc's 96 kb/s stereo
    async def received_bytes() -> tuple[float, int]:
        stats = [s.inbound_rtp for s in await track.get_stats() if s.HasField("inbound_rtp")]
        return asyncio.get_running_loop().time(), stats[0].inbound.bytes_received

    t0, b0 = await received_bytes()
    await asyncio.sleep(1.5)
    t1, b1 = await received_bytes()
    kbps = (b1 - b0) * 8 / 1000 / (t1 - t0)
    assert 12 < kbps < 60, f"{kbps:.1f} kb/s"


async def test_peer_tone_reaches_us_at_1khz(server, room_name, peers, devices):
    agent = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    player = await agent.publish_tone(1000)
    try:
        track = await dev.wait_for_audio_track("agent")
        stream = dev.audio_stream(track, sample_rate=16000, frame_ms=20)
        frames = []
        loop = asyncio.get_running_loop()
        start = None
        async for chunk in stream:
            if start is None:
                if np.abs(chunk.samples).max() < 1000:
                    continue
                start = loop.time()
            frames.append(chunk.samples)
            if loop.time() - start >= SECONDS:
                break
        assert all(len(f) == 320 for f in frames)  # 20 ms at the rate we asked for
        good = tone_frames(frames, 16000, 1000)
        assert good >= 0.95 * EXPECTED_FRAMES, f"{good}/{EXPECTED_FRAMES} frames at 1 kHz"
    finally:
        player.cancel()


async def test_data_both_ways_with_topic_and_destination(server, room_name, peers, devices):
    agent = await peers("agent", server.url, room_name)
    bystander = await peers("bystander", server.url, room_name)
    dev = await devices(server.url, room_name)
    received: asyncio.Queue = asyncio.Queue()
    dev.on("data_received", received.put_nowait)

    await agent.expect("participant_connected", lambda p: p.identity == "device")
    await dev.publish_data(b"turn left", topic="cmd", destination_identities=["agent"])
    (pkt,) = await agent.expect("data_received")
    assert pkt.data == b"turn left" and pkt.topic == "cmd"
    assert pkt.participant.identity == "device"

    await dev.publish_data(b"telemetry", reliable=False, topic="sensors")
    (pkt,) = await agent.expect("data_received", lambda p: p.topic == "sensors")
    assert pkt.data == b"telemetry" and pkt.kind == rtc.DataPacketKind.KIND_LOSSY

    await agent.room.local_participant.publish_data(b"ok", topic="reply", destination_identities=["device"])
    msg = await asyncio.wait_for(received.get(), 10)
    assert (msg.payload, msg.topic, msg.participant_identity, msg.reliable) == (b"ok", "reply", "agent", True)

    # the bystander got the broadcast but never the packet addressed to the agent
    await bystander.expect("data_received", lambda p: p.topic == "sensors")
    assert not bystander.saw("data_received", lambda p: p.topic == "cmd")

    with pytest.raises(lkdevice.DataTooLarge):
        await dev.publish_data(b"x" * 20000)


async def test_rpc_both_ways(server, room_name, peers, devices):
    agent = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    lp = agent.room.local_participant

    @lp.register_rpc_method("get_weather")
    async def get_weather(data: rtc.RpcInvocationData):
        return f"sunny in {data.payload} for {data.caller_identity}"

    @lp.register_rpc_method("explode")
    async def explode(data: rtc.RpcInvocationData):
        raise rtc.RpcError(1777, "boom", "details")

    @lp.register_rpc_method("slow")
    async def slow(data: rtc.RpcInvocationData):
        await asyncio.sleep(5)
        return "late"

    assert await dev.perform_rpc("agent", "get_weather", "Oslo") == "sunny in Oslo for device"
    with pytest.raises(RpcError) as err:
        await dev.perform_rpc("agent", "explode")
    assert (err.value.code, err.value.message, err.value.data) == (1777, "boom", "details")
    with pytest.raises(RpcError) as err:
        await dev.perform_rpc("agent", "slow", response_timeout=1.0)
    assert err.value.code == RpcError.RESPONSE_TIMEOUT
    with pytest.raises(RpcError) as err:
        await dev.perform_rpc("agent", "no_such_method")
    assert err.value.code == RpcError.UNSUPPORTED_METHOD

    leds = []

    def set_led(inv: lkdevice.RpcInvocation) -> str:
        leds.append(inv.payload)
        return f"led={inv.payload}"

    def fail(inv: lkdevice.RpcInvocation) -> str:
        raise RpcError(1600, "motor stalled")

    dev.register_rpc_method("set_led", set_led)
    dev.register_rpc_method("drive", fail)
    assert await lp.perform_rpc(destination_identity="device", method="set_led", payload="red") == "led=red"
    assert leds == ["red"]
    with pytest.raises(rtc.RpcError) as err2:
        await lp.perform_rpc(destination_identity="device", method="drive", payload="")
    assert (err2.value.code, err2.value.message) == (1600, "motor stalled")


async def test_mute_is_seen_by_the_peer(server, room_name, peers, devices):
    agent = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    mic = await dev.publish_audio(lkdevice.tone(440))
    await agent.expect("track_subscribed")

    await mic.mute()
    (who, pub) = await agent.expect("track_muted")
    assert pub.sid == mic.sid and who.identity == "device"
    await mic.unmute()
    (who, pub) = await agent.expect("track_unmuted")
    assert pub.sid == mic.sid


async def test_agent_state_attribute_reaches_us(server, room_name, peers, devices):
    agent = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    states: asyncio.Queue = asyncio.Queue()
    dev.on("agent_state_changed", lambda p, s: states.put_nowait((p.identity, s)))

    await agent.room.local_participant.set_attributes({"lk.agent.state": "thinking"})
    assert await asyncio.wait_for(states.get(), 10) == ("agent", "thinking")
    await agent.room.local_participant.set_attributes({"lk.agent.state": "speaking"})
    assert await asyncio.wait_for(states.get(), 10) == ("agent", "speaking")
    assert dev.remote_participants["agent"].agent_state == "speaking"


async def test_text_streams_arrive(server, room_name, peers, devices):
    agent = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    done: asyncio.Queue = asyncio.Queue()
    dev.on("text_stream_received", lambda reader: done.put_nowait(reader))
    chunks = []

    async def on_transcript(reader, identity):
        async for part in reader:
            chunks.append(part)

    dev.register_text_stream_handler("lk.transcription", on_transcript)

    await agent.room.local_participant.send_text("hello device", topic="lk.chat")
    reader = await asyncio.wait_for(done.get(), 10)
    assert (reader.text, reader.info.topic, reader.info.participant_identity) == ("hello device", "lk.chat", "agent")

    writer = await agent.room.local_participant.stream_text(topic="lk.transcription")
    for word in ["The ", "robot ", "turns ", "left."]:
        await writer.write(word)
    await writer.aclose()
    reader = await asyncio.wait_for(done.get(), 10)
    assert reader.text == "The robot turns left."
    assert "".join(chunks) == "The robot turns left."


async def test_leave_is_seen_with_reason(server, room_name, peers, devices):
    agent = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    await agent.expect("participant_connected", lambda p: p.identity == "device")
    await dev.disconnect()
    (p,) = await agent.expect("participant_disconnected")
    assert p.identity == "device"
    assert p.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
    assert dev.connection_state == "disconnected"
    with pytest.raises(lkdevice.Disconnected) as err:
        await dev.publish_data(b"too late")
    assert err.value.reason == "CLIENT_INITIATED"


async def test_server_removal_surfaces_reason(server, room_name, devices):
    from livekit import api

    dev = await devices(server.url, room_name)
    gone = asyncio.get_running_loop().create_future()
    dev.on("disconnected", lambda reason: gone.done() or gone.set_result(reason))
    async with api.LiveKitAPI(server.http_url, "devkey", "secret") as lk:
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=room_name, identity="device"))
    assert await asyncio.wait_for(gone, 10) == "PARTICIPANT_REMOVED"


async def test_signal_rtt_is_measured(server, room_name, devices):
    dev = await devices(server.url, room_name)
    for _ in range(80):
        if dev.rtt is not None:
            break
        await asyncio.sleep(0.1)
    assert dev.rtt is not None and 0 <= dev.rtt < 1.0
    assert dev.refresh_token  # the server hands one out at join


async def test_room_metadata_and_active_speakers(server, room_name, peers, devices):
    from livekit import api

    agent = await peers("agent", server.url, room_name)
    dev = await devices(server.url, room_name)
    changes: asyncio.Queue = asyncio.Queue()
    speakers: asyncio.Queue = asyncio.Queue()
    dev.on("room_metadata_changed", lambda old, new: changes.put_nowait(new))
    dev.on("active_speakers_changed", lambda ps: speakers.put_nowait([p.identity for p in ps]))

    async with api.LiveKitAPI(server.http_url, "devkey", "secret") as lk:
        await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=room_name, metadata="mode=demo"))
    assert await asyncio.wait_for(changes.get(), 10) == "mode=demo"
    assert dev.metadata == "mode=demo"

    player = await agent.publish_tone(300)
    try:
        while "agent" not in await asyncio.wait_for(speakers.get(), 10):
            pass
        assert dev.remote_participants["agent"].is_speaking
    finally:
        player.cancel()


async def test_disconnect_ends_the_async_handlers_still_running(server, room_name, peers, devices):
    """An app's async handler that is still waiting when the room closes does not outlive it."""
    dev = await devices(server.url, room_name)
    started, ended = asyncio.Event(), asyncio.Event()

    async def slow_greeting(participant) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            ended.set()

    dev.on("participant_connected", slow_greeting)
    await peers("visitor", server.url, room_name)
    await asyncio.wait_for(started.wait(), 10)
    await dev.disconnect()
    assert ended.is_set(), "the handler was still running after disconnect()"
