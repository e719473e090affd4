"""Robot commands: payload checks, the watchdog on an injected clock, plugin loading, the router's bounds."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from lkdevice.robot.commands import (CommandRouter, PayloadError, Plugin, PluginError, Watchdog, load_plugins,
                                     parse_params)
from lkdevice.robot.drive_sim import SimDrive, parse_color, parse_move
from lkdevice.rtc.errors import RpcError
from lkdevice.rtc.rpc import RpcInvocation
from tests.robot_plugin import Horn


# -- payloads --------------------------------------------------------------------------------------------

def test_a_move_is_parsed_with_its_defaults():
    assert parse_move('{"direction": "forward", "speed": 0.3, "duration_ms": 1200}') == \
        parse_move(b'{"direction":"Forward","speed":0.3,"duration_ms":1200.0}')
    m = parse_move('{"direction": "left"}')
    assert (m.direction, m.speed, m.duration_ms) == ("left", 0.5, None)


@pytest.mark.parametrize("payload, says", [
    ("", "direction is required"),
    ("not json", "payload is not JSON"),
    ("[1, 2]", "must be a JSON object, got list"),
    ('{"direction": "up"}', "direction must be one of forward, backward, left, right, got 'up'"),
    ('{"direction": "forward", "speed": 1.5}', "speed must be between 0 and 1, got 1.5"),
    ('{"direction": "forward", "speed": -0.1}', "speed must be between 0 and 1"),
    ('{"direction": "forward", "speed": "fast"}', 'speed must be a number, got "fast"'),
    ('{"direction": "forward", "speed": true}', "speed must be a number"),
    ('{"direction": "forward", "speed": NaN}', "speed must be a number"),
    ('{"direction": "forward", "duration_ms": 60000}', "duration_ms must be between 1 and 10000, got 60000"),
    ('{"direction": "forward", "duration_ms": 0}', "duration_ms must be between 1 and 10000"),
    ('{"direction": "forward", "duration_ms": 10.5}', "whole number"),
    ('{"direction": "forward", "sped": 0.2}', "unknown field 'sped' (expected direction, speed, duration_ms)"),
])
def test_a_bad_move_says_what_is_wrong(payload, says):
    with pytest.raises(PayloadError) as err:
        parse_move(payload)
    assert says in str(err.value)


def test_colours_by_name_or_hex():
    assert parse_color('{"color": "Red"}') == "#ff0000"
    assert parse_color('{"color": "#A0b1C2"}') == "#a0b1c2"
    assert parse_color('{"color": "off"}') == "#000000"
    for bad, says in [('{"color": "#12345"}', "got '#12345'"), ('{"color": "chartreuse-ish"}', "or #rrggbb"),
                      ("{}", "color is required"), ('{"color": 7}', "color is required")]:
        with pytest.raises(PayloadError, match=says):
            parse_color(bad)


def test_params_refuse_what_is_not_an_object():
    assert parse_params("") == {}
    assert parse_params("  ") == {}
    assert parse_params("null") == {}
    with pytest.raises(PayloadError, match="got str"):
        parse_params('"forward"')
    with pytest.raises(PayloadError, match="not UTF-8"):
        parse_params(b"\xff\xfe")
    with pytest.raises(PayloadError, match="unknown field 'x'"):
        parse_params('{"x": 1}', ())


# -- the watchdog ----------------------------------------------------------------------------------------

def test_the_watchdog_stops_a_move_when_commands_stop():
    dog = Watchdog(0.5)
    assert dog.deadline() is None and dog.expired(100.0) is None
    dog.moving(10.0)
    assert dog.expired(10.49) is None
    dog.moving(10.4)  # a command feeds it
    assert dog.expired(10.85) is None
    assert dog.expired(10.9) == "watchdog: no command for 500 ms"
    assert dog.expired(11.0) is None and not dog.armed  # once


def test_a_move_ends_with_its_duration_before_the_watchdog():
    dog = Watchdog(0.5)
    dog.moving(0.0, duration_s=0.2)
    assert dog.deadline() == pytest.approx(0.2)
    assert dog.expired(0.19) is None
    assert dog.expired(0.2) == "duration 200 ms elapsed"
    # a longer duration is cut by the watchdog when nothing follows
    dog.moving(1.0, duration_s=2.0)
    assert dog.expired(1.5) == "watchdog: no command for 500 ms"
    # a new move replaces the old one's end
    dog.moving(2.0, duration_s=0.1)
    dog.moving(2.05)
    assert dog.expired(2.2) is None and dog.expired(2.55) is not None


def test_a_watchdog_of_zero_leaves_only_the_duration():
    dog = Watchdog(0)
    dog.moving(0.0)
    assert dog.deadline() is None and dog.expired(1e6) is None
    dog.moving(0.0, duration_s=3.0)
    assert dog.expired(3.0) == "duration 3000 ms elapsed"
    dog.moving(5.0)
    dog.stopped()
    assert not dog.armed and dog.deadline() is None


# -- loading ---------------------------------------------------------------------------------------------

def test_plugins_load_by_name_and_by_module_object():
    sim, horn, horn2 = load_plugins(["sim", "tests.robot_plugin:Horn", "tests.robot_plugin:make_horn"],
                                    {"sim": {"battery_percent": 40}, "tests.robot_plugin:Horn": {"max_times": 5}})
    assert isinstance(sim, SimDrive) and sim.battery_percent() == 40
    assert isinstance(horn, Horn) and horn.settings == {"max_times": 5}
    assert isinstance(horn2, Horn) and horn2.settings == {}


@pytest.mark.parametrize("spec, says", [
    ("nosuchplugin", "no entry point of that name in group lkdevice.robot_plugins"),
    ("no_such_module_x:Thing", "cannot import no_such_module_x: ModuleNotFoundError"),
    ("tests.robot_plugin:Nope", "tests.robot_plugin has no 'Nope'"),
    ("tests.robot_plugin:not_a_plugin", "is a int: expected a Plugin subclass"),
    ("tests.robot_plugin:", "expected 'module:object'"),
    ("", "empty plugin spec"),
])
def test_a_bad_spec_is_one_line_that_names_it(spec, says):
    with pytest.raises(PluginError) as err:
        load_plugins([spec], {})
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_plugin_found_by_entry_point(tmp_path, monkeypatch):
    dist = tmp_path / "lkdevice_test_horn-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lkdevice-test-horn\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lkdevice.robot_plugins]\nhorn = tests.robot_plugin:Horn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (horn,) = load_plugins(["horn"], {"horn": {"max_times": 2}})
    assert isinstance(horn, Horn) and horn.settings == {"max_times": 2}
    with pytest.raises(PluginError, match=r"installed: .*horn"):
        load_plugins(["klaxon"])


def test_two_plugins_with_one_method_are_refused():
    with pytest.raises(PluginError, match="'honk' is registered by both 'horn' and 'horn'"):
        CommandRouter(StandInRoom(), [Horn(), Horn()])


# -- the router, on a stand-in room (the live tests put it on a real one) -------------------------------------

class StandInRoom:
    """Only what the router uses of a Room: its RPC registry and its events."""

    def __init__(self):
        self.methods = {}
        self.handlers = {}

    def register_rpc_method(self, method, handler):
        self.methods[method] = handler

    def unregister_rpc_method(self, method):
        self.methods.pop(method, None)

    def on(self, event, handler):
        self.handlers.setdefault(event, []).append(handler)

    def off(self, event, handler):
        self.handlers[event].remove(handler)

    async def call(self, method, payload="", timeout=10.0):
        return await self.methods[method](RpcInvocation("req", "agent", payload, timeout))


async def test_a_bad_payload_is_an_application_error_that_says_why():
    room = StandInRoom()
    router = CommandRouter(room, [SimDrive()])
    router.attach()
    try:
        with pytest.raises(RpcError) as err:
            await room.call("move", '{"direction": "up"}')
        assert err.value.code == RpcError.APPLICATION_ERROR
        assert err.value.message.startswith("move: direction must be one of forward")
        battery = json.loads(await room.call("get_battery"))
        assert battery["percent"] == 100 and not battery["charging"]
    finally:
        await router.close()
    assert room.methods == {} and room.handlers["data_received"] == []


async def test_the_watchdog_stops_the_sim_drive(caplog):
    room = StandInRoom()
    drive = SimDrive()
    router = CommandRouter(room, [drive], watchdog_s=0.1)
    router.attach()
    caplog.set_level(logging.INFO)
    try:
        await room.call("move", '{"direction": "forward", "speed": 0.4, "duration_ms": 5000}')
        assert drive.move is not None and router.moving
        for _ in range(3):  # fed every 50 ms: keeps going
            await asyncio.sleep(0.05)
            await room.call("move", '{"direction": "forward", "speed": 0.4}')
        assert drive.move is not None
        await asyncio.sleep(0.3)
        assert drive.move is None and drive.last_stop_reason == "watchdog: no command for 100 ms"
        assert not router.moving
        assert "drive: stop (watchdog: no command for 100 ms)" in caplog.text
    finally:
        await router.close()


async def test_stop_all_stops_at_once_and_close_unregisters():
    room = StandInRoom()
    drive = SimDrive()
    router = CommandRouter(room, [drive], watchdog_s=0)
    router.attach()
    await room.call("move", '{"direction": "left"}')
    await router.stop_all("SIGTERM")
    assert drive.move is None and drive.last_stop_reason == "SIGTERM"
    await router.close()
    assert "move" not in room.methods


async def test_close_right_after_stop_all_ends_while_a_move_is_watched():
    # SIGTERM: stop_all, then close, in one turn of the loop. On Python 3.11 a
    # wait_for whose inner wait completes in the turn it is cancelled returns
    # normally and the cancel is lost: the watch loop then waited for ever
    room = StandInRoom()
    drive = SimDrive()
    router = CommandRouter(room, [drive], watchdog_s=5)
    router.attach()
    await room.call("move", '{"direction": "forward", "duration_ms": 5000}')
    await asyncio.sleep(0)  # the watch loop is now waiting on the move's deadline
    await router.stop_all("SIGTERM")
    await asyncio.wait_for(router.close(), 2)
    assert drive.move is None and drive.last_stop_reason == "SIGTERM"


async def test_a_hanging_handler_is_timed_out_and_commands_are_bounded():
    room = StandInRoom()
    router = CommandRouter(room, [Horn()], handler_timeout_s=0.1, max_concurrent=2)
    router.attach()
    try:
        with pytest.raises(RpcError) as err:
            await room.call("horn.hang")
        assert (err.value.code, err.value.message) == (RpcError.APPLICATION_ERROR, "horn.hang timed out after 0.1 s")
        # a caller's own shorter timeout wins: it hears the error before it gives up
        router.handler_timeout_s = 5.0
        with pytest.raises(RpcError, match="timed out after 0.3 s"):
            await room.call("horn.hang", timeout=0.5)
        await asyncio.sleep(0.01)
        assert router._running == 0  # the cancelled handlers gave their slots back
        router.handler_timeout_s = 0.1

        release = asyncio.Event()

        async def stubborn(cmd):
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    pass  # a handler that refuses to end keeps its slot, so the bound holds
        room.methods["stubborn"] = router._rpc_handler("stubborn", router.plugins[0], stubborn)
        for _ in range(2):
            with pytest.raises(RpcError, match="timed out"):
                await room.call("stubborn")
        with pytest.raises(RpcError) as err:
            await room.call("honk")
        assert err.value.message == "busy: 2 commands already running" and router.busy_refused == 1
        release.set()  # they end at last: their slots come back
        await asyncio.sleep(0.01)
        assert router._running == 0
        assert await room.call("honk") == '{"honked":1,"total":1}'
    finally:
        await router.close()


async def test_data_topics_and_agent_state_reach_the_plugin():
    from lkdevice.rtc.data import DataMessage

    room = StandInRoom()
    horn = Horn()
    router = CommandRouter(room, [horn])
    router.attach()
    try:
        (on_data,) = room.handlers["data_received"]
        on_data(DataMessage(b'{"times": 2}', "agent", topic="horn"))
        on_data(DataMessage(b'{"times": 99}', "agent", topic="horn"))  # refused, logged
        on_data(DataMessage(b'{"times": 1}', "agent", topic="other"))  # nobody's topic
        await asyncio.sleep(0.05)
        assert horn.honks == 2
        router.agent_state("agent", "thinking")
        router.transcript("agent", "turning left", True)
        assert horn.states == [("agent", "thinking")] and horn.transcripts == [("agent", "turning left", True)]
    finally:
        await router.close()


class Broken(Plugin):
    name = "broken"

    def setup(self, api):
        api.rpc("explode", self.explode)

    def explode(self, cmd):
        raise KeyError("secret internals")

    def agent_state(self, identity, state):
        raise RuntimeError("no")


async def test_a_plugin_that_raises_gives_an_error_not_a_crash():
    room = StandInRoom()
    router = CommandRouter(room, [Broken(), Horn()])
    router.attach()
    try:
        with pytest.raises(RpcError) as err:
            await room.call("explode")
        assert (err.value.code, err.value.message) == (RpcError.APPLICATION_ERROR, "explode failed: KeyError")
        router.agent_state("agent", "speaking")  # the broken one is logged, the next still told
        assert router.plugins[1].states == [("agent", "speaking")]
    finally:
        await router.close()


async def test_losing_the_room_stops_a_moving_drive():
    room = StandInRoom()
    drive = SimDrive()
    router = CommandRouter(room, [drive], watchdog_s=0)  # no watchdog: only the disconnect can stop it
    router.attach()
    try:
        await room.call("move", '{"direction": "backward"}')
        for handler in room.handlers["disconnected"]:
            handler("SIGNAL_CLOSE")
        await asyncio.sleep(0.01)
        assert drive.move is None and drive.last_stop_reason == "disconnected (SIGNAL_CLOSE)"
    finally:
        await router.close()
