"""`lkdevice.hil`: the hardware-in-the-loop harness (hil/README.md).

Targets (`target.Target`: sim-esp32, sim-pi) offer one small interface;
scenarios (`scenarios.SCENARIOS`) use only it; `runner.Runner` runs them,
`report.write` writes report.json, junit.xml, report.md and report.html.
Imported only by `lkdevice hil` and the pytest plugin: it needs the test
extras (the official SDK as the far side, livekit-agents, matplotlib).
"""

from __future__ import annotations

TARGETS = ("sim-esp32", "sim-pi", "sim-esp32-leaky-gateway")  # the last: a self-test of the harness


def make_target(name: str, **options):
    """A target by its command-line name; ValueError names the known ones."""
    if name == "sim-esp32":
        from .sim_esp32 import SimEsp32
        return SimEsp32(**options)
    if name == "sim-esp32-leaky-gateway":  # broken on purpose: `cycles` must fail it (broken.py)
        from .sim_esp32 import SimEsp32
        return SimEsp32(gateway="leaky", **options)
    if name == "sim-pi":
        from .sim_pi import SimPi
        return SimPi(**options)
    raise ValueError(f"unknown target {name!r}; targets: {', '.join(TARGETS)} "
                     "(esp32:PORT and pi:HOST are not built yet)")
