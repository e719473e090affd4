"""The runner: a scenario the target cannot run is skipped with the reason; one over its bound fails saying where."""

from __future__ import annotations

import asyncio

from lkdevice.hil.lab import Lab
from lkdevice.hil.runner import Runner
from lkdevice.hil.scenario import FAILED, PROFILES, SKIPPED, Scenario
from lkdevice.hil.scenarios import SCENARIOS
from lkdevice.hil.sim_pi import SimPi


async def test_a_scenario_needing_what_the_target_lacks_is_skipped_with_the_reason():
    lines: list[str] = []
    runner = Runner(SimPi(), Lab(), PROFILES["ci"], progress=lines.append)
    result = await runner.run_one(SCENARIOS["cycles"], 1)
    assert result.status == SKIPPED
    assert result.reason == "the robot app leaves the room only when it exits: no rejoin within one process"
    assert lines == [f"[hil] cycles#1: skipped ({result.reason})"]


async def test_a_scenario_over_its_bound_fails_naming_the_step_and_what_it_waited_for():
    async def hangs(ctx):
        async with ctx.step("device in the room"):
            ctx.waiting("'robot' in the room")
            await asyncio.sleep(30)

    lines: list[str] = []
    s = Scenario("hangs", frozenset(), hangs, "waits for ever", lambda p: 0.3)
    result = await Runner(SimPi(), Lab(), PROFILES["ci"], progress=lines.append, heartbeat_s=0.1).run_one(s, 1)
    assert result.status == FAILED
    assert result.reason == "over its time bound of 0 s in step 'device in the room', waiting for 'robot' in the room"
    assert any("› device in the room: waiting for 'robot' in the room" in l for l in lines), lines


def test_profiles_differ_as_the_issue_says():
    assert (PROFILES["ci"].long_call_s, PROFILES["ci"].cycles) == (60, 20)
    assert (PROFILES["full"].long_call_s, PROFILES["full"].cycles) == (600, 100)


async def test_a_step_that_times_out_on_its_own_is_not_reported_as_the_scenario_bound():
    # a console wait or a poll raises TimeoutError (asyncio.TimeoutError is the same class since 3.11)
    async def gives_up(ctx):
        async with ctx.step("firmware back"):
            ctx.waiting("a welcome")
            raise TimeoutError("no console line matching 'welcome' (2 s passed)")

    s = Scenario("gives-up", frozenset(), gives_up, "gives up early", lambda p: 60)
    result = await Runner(SimPi(), Lab(), PROFILES["ci"], progress=lambda line: None).run_one(s, 1)
    assert result.status == FAILED
    assert result.reason == ("firmware back: timed out waiting for a welcome: no console line matching 'welcome' "
                             "(2 s passed)"), result.reason
