"""The scenario model: what a scenario needs, the steps it took, the figures it measured.

A scenario is a name, the capabilities it needs, a time bound per profile and
an async `run(ctx)`. It talks to the device only through `ctx.target` (the
Target interface) and to the room through `ctx.lab`. Everything it finds goes
into plain records (`StepResult`, `ScenarioResult`) that the runner collects and
the reports render; nothing here prints or writes a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class Profile:
    name: str
    long_call_s: float
    cycles: int
    warmup_cycles: int
    talk_turns: int
    # limits a scenario fails beyond (bytes)
    heap_per_min: float = 1024.0
    heap_per_cycle: float = 512.0
    rss_per_min: float = 4 * 1024 * 1024
    rss_per_cycle: float = 256 * 1024
    # media over a call (media.py): on a healthy network and on the lossy one (2 %, ±30 ms) alike
    loss_max_pct: float = 5.0            # per direction: RTP packets lost (uplink), frames concealed (downlink)
    rtt_p95_max_ms: float = 2000.0       # round trip, uplink + downlink markers of one second
    markers_found_min_pct: float = 80.0  # markers each direction must carry for its latency to mean anything


PROFILES = {
    "ci": Profile("ci", long_call_s=60.0, cycles=20, warmup_cycles=3, talk_turns=1),
    "full": Profile("full", long_call_s=600.0, cycles=100, warmup_cycles=5, talk_turns=3),
}


class Failed(Exception):
    """A check did not hold; the message is the report's reason."""


@dataclass
class Figure:
    value: float | int | str | None
    unit: str = ""

    def text(self) -> str:
        if isinstance(self.value, float):
            v = f"{self.value:.3g}" if abs(self.value) < 1000 else f"{self.value:.0f}"
        else:
            v = str(self.value)
        return f"{v} {self.unit}".strip()


@dataclass
class StepResult:
    name: str
    status: str = PASSED
    started_s: float = 0.0      # since the scenario started
    elapsed_s: float = 0.0
    message: str = ""
    figures: dict[str, Figure] = field(default_factory=dict)


@dataclass
class ScenarioResult:
    scenario: str
    repeat: int
    status: str
    reason: str = ""
    elapsed_s: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    # named series for plots: name -> {"x": label, "y": label, "points": [[x, y], ...]}
    series: dict[str, dict[str, Any]] = field(default_factory=dict)
    device_errors: list[str] = field(default_factory=list)
    # audio a person may want to hear (name -> (int16 pcm, rate)); written as WAV beside the report
    recordings: dict[str, tuple[Any, int]] = field(default_factory=dict, repr=False)


Progress = Callable[[str], None]


class Context:
    """What a running scenario gets: the target, the lab, the profile, its room, and a notebook."""

    def __init__(self, scenario: "Scenario", target, lab, profile: Profile, room: str, repeat: int,
                 progress: Progress, clock=time.monotonic):
        self.scenario = scenario
        self.target = target
        self.lab = lab
        self.profile = profile
        self.room = room
        self.repeat = repeat
        self._progress = progress
        self._clock = clock
        self.started = clock()
        self.result = ScenarioResult(scenario.name, repeat, PASSED)
        self.step_name = ""
        self.waiting_for = ""
        self.cleanups: list[Callable[[], Awaitable[None]]] = []

    def elapsed(self) -> float:
        return self._clock() - self.started

    def say(self, text: str) -> None:
        self._progress(f"[hil] {self.elapsed():7.1f}s {self.scenario.name}#{self.repeat}"
                       f"{' › ' + self.step_name if self.step_name else ''}: {text}")

    def waiting(self, what: str) -> None:
        """Say what the scenario waits for now (the progress line, and the reason if it times out)."""
        self.waiting_for = what
        self.say(f"waiting for {what}")

    @contextlib.asynccontextmanager
    async def step(self, name: str):
        step = StepResult(name, started_s=self.elapsed())
        self.result.steps.append(step)
        self.step_name, self.waiting_for = name, ""
        t0 = self._clock()
        try:
            yield step
        except BaseException as e:
            step.status = FAILED
            step.elapsed_s = self._clock() - t0
            # the name stays: a time bound that ends the scenario here reports this step
            step.message = ("stopped at the scenario's time bound" if isinstance(e, asyncio.CancelledError)
                            else describe(e, self.waiting_for))
            raise
        step.elapsed_s = self._clock() - t0
        self.step_name = ""

    def figure(self, name: str, value, unit: str = "", step: StepResult | None = None) -> None:
        fig = Figure(value, unit)
        self.result.figures[name] = fig
        if step is not None:
            step.figures[name] = fig
        elif self.result.steps and self.result.steps[-1].status == PASSED:
            self.result.steps[-1].figures[name] = fig

    def series(self, name: str, x: str, y: str, points: list[tuple[float, float]]) -> None:
        self.result.series[name] = {"x": x, "y": y, "points": [[float(a), float(b)] for a, b in points]}

    def multi_series(self, name: str, x: str, y: str, lines: dict[str, list[tuple[float, float]]]) -> None:
        """A plot of several labelled lines (`points` holds the first, for readers of one line)."""
        clean = {k: [[float(a), float(b)] for a, b in v] for k, v in lines.items()}
        first = next(iter(clean.values()), [])
        self.result.series[name] = {"x": x, "y": y, "points": first, "lines": clean}

    def keep_audio(self, name: str, pcm, rate: int) -> None:
        self.result.recordings[name] = (pcm, rate)

    def check(self, ok: bool, reason: str) -> None:
        if not ok:
            raise Failed(reason)

    def on_cleanup(self, fn: Callable[[], Awaitable[None]]) -> None:
        self.cleanups.append(fn)


def describe(e: BaseException, waiting_for: str = "") -> str:
    if isinstance(e, Failed):
        return str(e)
    if isinstance(e, TimeoutError):
        return f"timed out{' waiting for ' + waiting_for if waiting_for else ''}: {e}".rstrip(": ")
    return f"{type(e).__name__}: {e}"


@dataclass(frozen=True)
class Scenario:
    name: str
    needs: frozenset[str]
    run: Callable[[Context], Awaitable[None]]
    summary: str
    bound_s: Callable[[Profile], float]  # the whole scenario, boot to stop
