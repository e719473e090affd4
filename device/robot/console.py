"""What the robot shows on its console: the agent's state and what was said, one line each."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

# a transcript longer than this is cut on the console (the plugins get all of it)
MAX_LINE = 500


class Console:
    def __init__(self, out: TextIO | None = None, clock=time.monotonic, sink: Callable[[str], None] | None = None):
        # sink: where lines go instead of `out` (the JSON log, when every line must be JSON)
        self._out = out or sys.stdout
        self._sink = sink
        self._clock = clock
        self._started = clock()
        self._states: dict[str, str] = {}

    def line(self, text: str) -> None:
        if self._sink is not None:
            self._sink(text)
            return
        print(f"[{self._clock() - self._started:7.2f}s] {text}", file=self._out, flush=True)

    def agent_state(self, identity: str, state: str | None) -> None:
        if state is None or self._states.get(identity) == state:
            return
        self._states[identity] = state
        if len(self._states) > 64:  # participants come and go; keep the newest few
            self._states.pop(next(iter(self._states)))
        self.line(f"agent {identity}: {state}")

    def transcript(self, identity: str, text: str, final: bool) -> None:
        if not final:
            return  # interim text goes to the plugins only: the console shows what was said
        text = " ".join(text.split())
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + "..."
        self.line(f"{identity} said: {text}")
