"""`lkdevice.hil`: the hardware-in-the-loop harness (hil/README.md).

Targets (`target.Target`: sim-esp32, sim-pi, esp32:PORT, pi:USER@HOST) offer one small interface;
scenarios (`scenarios.SCENARIOS`) use only it; `runner.Runner` runs them,
`report.write` writes report.json, junit.xml, report.md and report.html.
Imported only by `lkdevice hil` and the pytest plugin: it needs the test
extras (the official SDK as the far side, livekit-agents, matplotlib).
"""

from __future__ import annotations

TARGETS = ("sim-esp32", "sim-pi", "esp32:PORT", "pi:USER@HOST", "sim-esp32-leaky-gateway")  # the last: a self-test

# which target kinds take which option (the CLI's --board etc., the plugin's --lkd-board etc.)
OPTIONS = {
    "board": ("sim-esp32", "esp32"), "gateway_listen": ("esp32",), "gateway_url": ("esp32",), "wifi": ("esp32",),
    "sound_card": ("esp32",), "ssh_key": ("pi",), "known_hosts": ("pi",), "pi_python": ("pi",),
    "pi_offline": ("pi",), "pi_any_arch": ("pi",),
}


def make_target(name: str, **options):
    """A target by its command-line name; ValueError (one line) names the known ones, or what is wrong.

    `options` left None are not given; one given that the target's kind does not take is an error."""
    kind, sep, where = name.partition(":")
    if name in ("sim-esp32", "sim-pi"):
        kind = name
    elif kind not in ("esp32", "pi") or not sep:
        raise ValueError(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    for k in given:
        if kind not in OPTIONS.get(k, (kind,)):
            flag = "--" + k.replace("_", "-")
            raise ValueError(f"{flag} is for {' and '.join(OPTIONS[k])} targets, not {name}")
    if not where and sep:
        raise ValueError(f"target {name!r}: say which " + ("serial port (esp32:/dev/ttyUSB0)" if kind == "esp32"
                                                          else "Pi (pi:pi@raspberrypi.local)"))
    if kind == "sim-esp32":
        from .sim_esp32 import SimEsp32
        return SimEsp32(**given)
    if kind == "sim-esp32-leaky-gateway":  # broken on purpose: `cycles` must fail it (leaky_gateway.py)
        from .sim_esp32 import SimEsp32
        return SimEsp32(gateway="leaky", **given)
    if kind == "sim-pi":
        from .sim_pi import SimPi
        return SimPi(**given)
    if kind == "esp32":
        from .esp32_serial import Esp32Serial
        return Esp32Serial(where, **given)
    from .pi_ssh import PiSsh
    return PiSsh(where, **{k.removeprefix("pi_"): v for k, v in given.items()})
