"""The one interface every target offers (labgrid's driver shape): scenarios use nothing else.

A target is one kind of device under test. It boots (`start`), stops, resets,
shows its console (`expect` a line, like pytest-embedded's `dut.expect`), hears
what the harness plays into its microphone, records its speaker on a known
timeline, says what it is (`identity`) and how much it holds (`samples`:
heap, open handles, RSS). What it can do is a set of capability names; a
scenario that needs one the target lacks is skipped with the reason.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

# capability names (a scenario's `needs` are drawn from these)
JOIN = "join"              # joins the room as `identity`
MIC = "mic"                # play() reaches the room as its microphone
SPEAKER = "speaker"        # recording() holds what the room sent it
DATA_IN = "data_in"        # shows data the room sends it (a console line)
RPC_IN = "rpc_in"          # answers RPCs from the room
DATA_OUT = "data_out"      # sends data to the room (an echo of what it got)
RPC_OUT = "rpc_out"        # calls an RPC in the room
AGENT_STATE = "agent_state"  # shows the agent's state (LED colours or console lines)
LED = "led"                # led_colors()
HEAP = "heap"              # samples() carry the firmware's live heap
RSS = "rss"                # samples() carry a process's resident memory
HANDLES = "handles"        # samples() carry open file descriptors
REJOIN = "rejoin"          # rejoin(): leave the room and join again without a reboot
LINK_DROP = "link_drop"    # drop_link(seconds): the device's network gone for a while, then back
GATEWAY = "gateway"        # reaches the room through a gateway the harness runs: gateway_url(), restart_gateway()

# settings a scenario may ask for before start() (Target.ask); they hold for that one boot
LINK_GRACE = "link_grace_s"  # how long a dropped link keeps its session (the gateway's grace on sim-esp32)


class TargetError(RuntimeError):
    """The target could not do what was asked; the message says why (for the report)."""


@dataclass
class Identity:
    target: str
    firmware_hash: str | None = None
    micropython: str | None = None
    board: str | None = None
    git_commit: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Sample:
    """What the device held at `t` (seconds on the harness's monotonic clock); None: not known."""

    t: float
    heap: int | None = None      # bytes live after a collection (firmware)
    rss: int | None = None       # bytes resident (a process: the robot app, the gateway)
    handles: int | None = None   # open file descriptors
    fw_handles: int | None = None  # the firmware's own, where it runs apart from `handles`' process


@dataclass
class Playout:
    """The device's receive path at `t` (harness clock): one stage's jitter buffer and its frame counters.

    Stages in path order: the first a target names is where the network's packets
    arrive (the gateway's or the robot's Opus jitter buffer), so its `lost` is the
    downlink's loss; later ones (the firmware's buffer) come after it."""

    t: float
    stage: str
    delay_ms: float   # the jitter buffer's target delay
    received: int     # frames that arrived in time, so far
    lost: int         # frames whose packet was missing (lost or late) at its turn, so far


@dataclass
class Recording:
    """The speaker's PCM; sample 0 was played at `origin` (harness monotonic clock, to ~tens of ms)."""

    pcm: np.ndarray
    rate: int
    origin: float

    def at(self, t: float) -> np.ndarray:
        """The part played from harness time `t` on."""
        return self.pcm[max(0, int((t - self.origin) * self.rate)):]


class Console:
    """Lines a target printed, each with its arrival time; `expect` waits for a pattern."""

    def __init__(self, limit: int = 200_000):
        self._lines: list[tuple[float, str]] = []
        self._limit = limit  # a chatty device never fills memory: the oldest half goes
        self._dropped = 0
        self._new = threading.Condition()
        self.closed = False

    def feed(self, line: str) -> None:
        with self._new:
            self._lines.append((time.monotonic(), line))
            if len(self._lines) > self._limit:
                cut = self._limit // 2
                del self._lines[:cut]
                self._dropped += cut
            self._new.notify_all()

    def close(self) -> None:
        with self._new:
            self.closed = True
            self._new.notify_all()

    def reopen(self) -> None:
        with self._new:
            self.closed = False

    def mark(self) -> int:
        with self._new:
            return self._dropped + len(self._lines)

    def lines(self, since: int = 0) -> list[str]:
        with self._new:
            return [l for _, l in self._lines[max(0, since - self._dropped):]]

    def timed_lines(self, since: int = 0) -> list[tuple[float, str]]:
        with self._new:
            return list(self._lines[max(0, since - self._dropped):])

    def find(self, pattern: str, since: int = 0) -> tuple[float, re.Match] | None:
        rx = re.compile(pattern)
        with self._new:
            for ts, line in self._lines[max(0, since - self._dropped):]:
                m = rx.search(line)
                if m:
                    return ts, m
        return None

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.lines()[-n:])

    def wait(self, pattern: str, timeout: float, since: int = 0) -> tuple[float, re.Match]:
        """Block until a line from `since` on matches; TimeoutError with the console's tail."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = since
        with self._new:
            while True:
                for ts, line in self._lines[max(0, i - self._dropped):]:
                    i += 1
                    m = rx.search(line)
                    if m:
                        return ts, m
                i = max(i, self._dropped + len(self._lines))
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    why = "the device stopped" if self.closed else f"{timeout:g} s passed"
                    raise TimeoutError(f"no console line matching {pattern!r} ({why}); last lines:\n"
                                       + "\n".join(l for _, l in self._lines[-15:]))
                self._new.wait(min(left, 0.2))


class Target(ABC):
    """A device under test. Subclasses: one per kind (sim-esp32, sim-pi, ...)."""

    name: str = "target"
    capabilities: frozenset[str] = frozenset()
    identity_name: str = "device"  # its participant identity in the room
    rss_of: str = "the device"  # whose RSS and handles samples() carry

    def __init__(self) -> None:
        self.console = Console()
        self._mic: np.ndarray | None = None

    # --- power

    @abstractmethod
    async def start(self, url: str, room: str, token: str) -> None:
        """Boot and join `room` at `url` with `token` (the gateway's or the server's URL is the target's own)."""

    @abstractmethod
    async def stop(self) -> list[str]:
        """Power off; the errors it showed while running (tracebacks, MemoryError, exit codes)."""

    def ask(self, **settings: float) -> dict[str, float | None]:
        """Settings the next start() should use (e.g. link_grace_s=15); stop() forgets them. Returns what
        the target will really have for each: what was asked, its own fixed value, or None (unknown)."""
        return {k: None for k in settings}

    async def reset(self) -> None:
        """Power-cycle: off and on again with the same flash / configuration."""
        raise TargetError(f"{self.name} cannot be reset")

    async def rejoin(self, timeout: float) -> None:
        """Leave the room and join it again without a reboot (REJOIN)."""
        raise TargetError(f"{self.name} cannot leave and rejoin")

    async def drop_link(self, seconds: float) -> None:
        """The device's network away for `seconds`, then back (LINK_DROP); returns when it is back."""
        raise TargetError(f"{self.name} cannot drop its link")

    def gateway_url(self) -> str:
        """The device-protocol URL of the gateway this target goes through (GATEWAY)."""
        raise TargetError(f"{self.name} has no gateway")

    async def restart_gateway(self) -> None:
        """Stop the gateway process and start it again on the same address (GATEWAY)."""
        raise TargetError(f"{self.name} has no gateway")

    # --- console

    async def expect(self, pattern: str, timeout: float = 10.0, since: int = 0) -> tuple[float, re.Match]:
        """The first console line (from mark `since`) matching `pattern`: (arrival time, match)."""
        import asyncio
        return await asyncio.to_thread(self.console.wait, pattern, timeout, since)

    # --- audio

    def play(self, pcm: np.ndarray, rate: int = 16000) -> None:
        """What the microphone hears from boot on (16 kHz mono int16); call before start()."""
        if rate != 16000:
            raise TargetError("play() takes 16 kHz mono")
        self._mic = np.asarray(pcm, dtype=np.int16)

    @abstractmethod
    def mic_origin(self) -> float | None:
        """When the microphone's sample 0 was heard (harness clock), once known."""

    @abstractmethod
    def recording(self) -> Recording:
        """What the speaker played so far."""

    # --- what it is, what it holds

    @abstractmethod
    def identity(self) -> Identity: ...

    @abstractmethod
    def samples(self) -> list[Sample]:
        """Every sample so far, oldest first."""

    def playout(self) -> list[Playout]:
        """The receive path's stats so far, oldest first (empty: the target does not say)."""
        return []

    def led_colors(self) -> list[tuple[float, tuple[int, int, int]]]:
        """(harness time, colour) of each LED change (LED)."""
        raise TargetError(f"{self.name} has no LED")

    def errors(self) -> list[str]:
        """Console lines that say something went wrong (a traceback, MemoryError, a stop); at most 20."""
        return []

    def describe_missing(self, capability: str) -> str:
        """Why this target lacks `capability`: the skip reason a report shows."""
        return f"{self.name} lacks {capability!r}"

    # --- what the room sends, and what shows it arrived (the driver knows its device's words)

    def data_probe(self, sender: str) -> tuple[str, bytes, str]:
        """(topic, payload, console regex that shows it arrived) for DATA_IN."""
        raise TargetError(f"{self.name} shows no data")

    def rpc_probe(self) -> tuple[str, str, str]:
        """(method, payload, regex the response must match) for RPC_IN."""
        raise TargetError(f"{self.name} answers no RPC")

    def agent_state_line(self, agent: str, state: str) -> str:
        """Console regex that shows the device saw `agent` enter `state` (AGENT_STATE)."""
        raise TargetError(f"{self.name} shows no agent state")
