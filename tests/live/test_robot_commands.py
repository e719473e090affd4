"""Robot commands on a real server: the official SDK, as the agent, drives our Room's CommandRouter."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from livekit import rtc

from lkdevice.robot.commands import CommandRouter, load_plugins


@pytest.fixture
async def robot(server, room_name, peers, devices):
    """The agent (official SDK) and our robot room with the sim drive and the test horn attached."""
    agent = await peers("agent", server.url, room_name)
    room = await devices(server.url, room_name, identity="robot")
    plugins = load_plugins(["sim", "tests.robot_plugin:Horn"], {"tests.robot_plugin:Horn": {"max_times": 4}})
    router = CommandRouter(room, plugins, watchdog_s=0.3, log=logging.getLogger("test.robot"))
    router.attach()
    # what the app does: the agent's state and transcripts go to the router
    room.on("agent_state_changed", lambda p, state: router.agent_state(p.identity, state))

    async def on_transcript(reader, identity):
        async for _ in reader:
            pass
        router.transcript(identity, reader.text, reader.info.attributes.get("lk.transcription_final") == "true")

    room.register_text_stream_handler("lk.transcription", on_transcript)
    await agent.expect("participant_connected", lambda p: p.identity == "robot")
    yield agent, router
    await router.close()


async def call(agent, method: str, payload: str = "") -> dict:
    answer = await agent.room.local_participant.perform_rpc(
        destination_identity="robot", method=method, payload=payload, response_timeout=5.0)
    return json.loads(answer)


async def test_the_agent_drives_and_the_watchdog_stops_a_move(robot, caplog):
    agent, router = robot
    caplog.set_level(logging.INFO, logger="test.robot")

    moved = await call(agent, "move", json.dumps({"direction": "forward", "speed": 0.6, "duration_ms": 5000}))
    assert moved == {"moving": True, "direction": "forward", "speed": 0.6, "duration_ms": 5000}
    assert "drive: move forward at speed 0.60 for 5000 ms (from agent)" in caplog.text
    battery = await call(agent, "get_battery")
    assert 99 < battery["percent"] <= 100 and 8.0 < battery["voltage"] <= 8.4 and battery["charging"] is False
    assert (await call(agent, "set_led", '{"color": "blue"}')) == {"color": "#0000ff"}

    # the agent says nothing more: the watchdog stops the motors long before the 5 s are up
    await asyncio.sleep(0.8)
    state = await call(agent, "get_state")
    assert state["moving"] is False and state["last_stop_reason"] == "watchdog: no command for 300 ms"
    assert "drive: stop (watchdog: no command for 300 ms)" in caplog.text

    # a move of its own short duration ends by itself
    await call(agent, "move", '{"direction": "left", "speed": 0.2, "duration_ms": 100}')
    await asyncio.sleep(0.5)
    assert (await call(agent, "get_state"))["last_stop_reason"] == "duration 100 ms elapsed"

    # the joystick path: a move as a data message on the drive topic, no answer
    await agent.room.local_participant.publish_data(b'{"direction": "right", "speed": 0.9}', topic="robot.drive",
                                                    destination_identities=["robot"])
    for _ in range(50):
        state = await call(agent, "get_state")
        if state["moving"]:
            break
    assert (state["moving"], state["direction"], state["speed"]) == (True, "right", 0.9)

    await router.stop_all("SIGTERM")
    state = await call(agent, "get_state")
    assert state["moving"] is False and state["last_stop_reason"] == "SIGTERM"


async def test_unknown_methods_and_bad_payloads_get_the_rpc_errors(robot):
    agent, _ = robot
    lp = agent.room.local_participant
    with pytest.raises(rtc.RpcError) as err:
        await lp.perform_rpc(destination_identity="robot", method="fly", payload="{}")
    assert err.value.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD

    for payload, message in [
        ('{"direction": "up"}', "move: direction must be one of forward, backward, left, right, got 'up'"),
        ('{"direction": "forward", "speed": 3}', "move: speed must be between 0 and 1, got 3"),
        ("{direction: forward", "move: payload is not JSON: Expecting property name enclosed in double quotes"),
    ]:
        with pytest.raises(rtc.RpcError) as err:
            await lp.perform_rpc(destination_identity="robot", method="move", payload=payload)
        assert err.value.code == rtc.RpcError.ErrorCode.APPLICATION_ERROR
        assert err.value.message.startswith(message), err.value.message
    with pytest.raises(rtc.RpcError) as err:
        await lp.perform_rpc(destination_identity="robot", method="set_led", payload='{"color": "#12"}')
    assert "color must be a name" in err.value.message
    # and the robot is still there, answering
    assert (await call(agent, "get_state"))["moving"] is False


async def test_a_plugin_by_module_object_answers_and_hears_the_agent(robot):
    agent, _ = robot
    lp = agent.room.local_participant
    assert await call(agent, "honk", '{"times": 2}') == {"honked": 2, "total": 2}
    with pytest.raises(rtc.RpcError) as err:  # its settings from the config: at most 4
        await lp.perform_rpc(destination_identity="robot", method="honk", payload='{"times": 5}')
    assert err.value.message == "honk: times must be between 1 and 4, got 5"

    await lp.set_attributes({"lk.agent.state": "thinking"})
    writer = await lp.stream_text(topic="lk.transcription", attributes={"lk.transcription_final": "true"})
    await writer.write("turn left ")
    await writer.write("slowly")
    await writer.aclose()
    for _ in range(50):
        heard = await call(agent, "horn.heard")
        if heard["states"] and heard["transcripts"]:
            break
        await asyncio.sleep(0.1)
    assert heard["states"] == [["agent", "thinking"]]
    assert heard["transcripts"] == [["agent", "turn left slowly", True]]
