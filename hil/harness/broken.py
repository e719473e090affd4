"""Targets and links broken on purpose: the harness's own tests show each is caught, and why.

- `SpeakerStopsEsp32`: the simulated board's speaker goes silent `after_s`
  seconds into its playback (the sim's "mute" fault: I2S TX still takes frames,
  the amplifier plays nothing), while mic, session and room go on. The firmware
  cannot tell; the long call must.
- `lossy_link(percent)`: a lab whose server loses `percent` % of the media it
  sends (each direction of a call once): the long call's loss check must fail
  with the figure.
- a gateway that keeps a buffer per device session: `leaky_gateway.py` (a program of its own, the gateway's
  process must not load the harness); `SimEsp32(gateway="leaky")`, target `sim-esp32-leaky-gateway`.
"""

from __future__ import annotations

import asyncio
import time

from .lab import ImpairedLab
from .sim_esp32 import SimEsp32


class SpeakerStopsEsp32(SimEsp32):
    name = "sim-esp32-speaker-stops"

    def __init__(self, *, after_s: float = 20.0, **kw):
        super().__init__(**kw)
        self.after_s = after_s
        self._breaker: asyncio.Task | None = None

    async def start(self, url: str, room: str, token: str) -> None:
        await super().start(url, room, token)
        self._breaker = asyncio.ensure_future(self._break())

    async def _break(self) -> None:
        while self._io_origin("tx") is None:  # the speaker's sample 0: its clock starts there
            await asyncio.sleep(0.1)
        await asyncio.sleep(max(0.0, self._io_origin("tx") + self.after_s - time.monotonic()))
        self.dev.set_fault("speaker", "mute")

    async def stop(self) -> list[str]:
        if self._breaker is not None:
            self._breaker.cancel()
            self._breaker = None
        return await super().stop()


def lossy_link(percent: float = 10.0, max_seconds: float = 600.0) -> ImpairedLab:
    """A started lab that drops `percent` % of its server's media to subscribers (inside isolated.sh)."""
    return ImpairedLab(loss_pct=percent, max_seconds=max_seconds).start()
