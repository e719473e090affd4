"""Runs scenarios on a target, each `repeat` times, within its time bound, and says what it is doing."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from . import scenario as sc
from .target import Identity, Target


@dataclass
class RunResult:
    target: str
    profile: str
    repeat: int
    identity: Identity
    started: float  # unix time
    elapsed_s: float = 0.0
    results: list[sc.ScenarioResult] = field(default_factory=list)

    @property
    def failed(self) -> list[sc.ScenarioResult]:
        return [r for r in self.results if r.status == sc.FAILED]


class _OverBound(Exception):
    pass


async def _within(coro, bound: float):
    """`coro` with a time bound of its own: a TimeoutError the scenario raises (a console wait, a poll)
    is the scenario's failure, not the bound (asyncio.TimeoutError is TimeoutError since 3.11)."""
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=bound)
    except asyncio.CancelledError:  # the run itself stopped (Ctrl-C): the scenario with it
        task.cancel()
        raise
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise _OverBound
    return task.result()


def missing(scenario: sc.Scenario, target: Target) -> list[str]:
    return sorted(scenario.needs - set(target.capabilities))


class Runner:
    def __init__(self, target: Target, lab, profile: sc.Profile, *, repeat: int = 1,
                 progress: Callable[[str], None] | None = None, heartbeat_s: float = 15.0):
        if repeat < 1:
            raise ValueError("repeat must be at least 1")
        self.target = target
        self.lab = lab
        self.profile = profile
        self.repeat = repeat
        self.progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
        self.heartbeat_s = heartbeat_s
        self._last_line = time.monotonic()

    def _say(self, line: str) -> None:
        self._last_line = time.monotonic()
        self.progress(line)

    async def run(self, scenarios: list[sc.Scenario]) -> RunResult:
        t0 = time.monotonic()
        out = RunResult(self.target.name, self.profile.name, self.repeat, self.target.identity(), time.time())
        for s in scenarios:
            for r in range(1, self.repeat + 1):
                out.results.append(await self.run_one(s, r))
        out.elapsed_s = time.monotonic() - t0
        return out

    async def run_one(self, s: sc.Scenario, repeat: int) -> sc.ScenarioResult:
        lacking = missing(s, self.target)
        if lacking:
            reason = "; ".join(self.target.describe_missing(c) for c in lacking)
            self._say(f"[hil] {s.name}#{repeat}: skipped ({reason})")
            return sc.ScenarioResult(s.name, repeat, sc.SKIPPED, reason)
        ctx = sc.Context(s, self.target, self.lab, self.profile, self.lab.room_name(s.name), repeat, self._say)
        bound = s.bound_s(self.profile)
        ctx.say(f"start ({s.summary}; bound {bound:.0f} s)")
        beat = asyncio.ensure_future(self._heartbeat(ctx))
        result = ctx.result
        try:
            await _within(s.run(ctx), bound)
        except _OverBound:
            result.status = sc.FAILED
            result.reason = (f"over its time bound of {bound:.0f} s"
                             + (f" in step {ctx.step_name!r}" if ctx.step_name else "")
                             + (f", waiting for {ctx.waiting_for}" if ctx.waiting_for else ""))
        except Exception as e:  # a scenario's failure is the report's, never the run's end
            result.status = sc.FAILED
            failed = next((st for st in reversed(result.steps) if st.status == sc.FAILED), None)
            result.reason = (f"{failed.name}: {failed.message}" if failed else sc.describe(e, ctx.waiting_for))
        finally:
            beat.cancel()
            for fn in reversed(ctx.cleanups):
                try:
                    await asyncio.wait_for(fn(), 10)
                except Exception:
                    pass
            try:
                errors = await asyncio.wait_for(self.target.stop(), 30)
            except Exception as e:
                errors = [f"stopping the target: {sc.describe(e)}"]
        result.device_errors = errors
        if result.status == sc.PASSED and errors:
            result.status = sc.FAILED
            result.reason = "the device reported: " + " | ".join(errors[:3])
        elif result.status == sc.FAILED and errors and not any(e in result.reason for e in errors[:1]):
            result.reason += "; the device reported: " + " | ".join(errors[:3])
        result.elapsed_s = ctx.elapsed()
        ctx.say(f"{result.status.upper()} in {result.elapsed_s:.1f} s" + (f": {result.reason}" if result.reason else ""))
        return result

    async def _heartbeat(self, ctx: sc.Context) -> None:
        while True:
            await asyncio.sleep(1.0)
            if time.monotonic() - self._last_line >= self.heartbeat_s:
                ctx.say(f"still waiting for {ctx.waiting_for}" if ctx.waiting_for else "running")
