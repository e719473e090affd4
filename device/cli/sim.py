"""`lkdevice sim esp32`: the firmware on the MicroPython unix port (a host tool, the `sim` extra).

The parser lives here; the simulator itself (`lkdevice.host_tools.simulator`) is
imported only when the command runs, so the rest of `lkdevice` never loads it.
"""

from __future__ import annotations

import argparse


def add_parsers(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sim", help="run the ESP32 firmware on the MicroPython unix port, against a gateway",
                              epilog="example: lkdevice sim esp32 --play tone:440 --record echo.wav --duration 10 "
                                     "(no --gateway: a local server, echo agent and gateway are started)")
    p.add_argument("target", choices=["esp32"], help="what to simulate")
    p.add_argument("--gateway", help="device gateway URL (ws:// or wss://); without it a local dev server, "
                                     "echo agent and gateway are started")
    p.add_argument("--token", help="the device's LiveKit access token (required with --gateway)")
    p.add_argument("--board", default="sim", help="board file from boards/ (default sim)")
    p.add_argument("--codec", default="pcm16", choices=["pcm16", "ulaw", "adpcm"])
    p.add_argument("--play", help="WAV file (any rate) or tone:FREQ[:SECONDS] for the microphone")
    p.add_argument("--record", help="write the speaker output here (WAV, 16 kHz mono)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to run (default 10)")
    p.add_argument("--heap", default="136K",
                   help="MicroPython heap size (default 136K: the unix port is 64-bit, objects twice an ESP32's)")
    p.add_argument("--identity", default="esp32-sim", help="identity for the embedded dev token (no --gateway)")
    p.add_argument("--room", default="lkdevice-demo", help="room for the embedded dev token (no --gateway)")
    p.add_argument("--app", help="a user app.py to put on the simulated flash")
    p.add_argument("--ca", help="CA certificate (PEM) the board verifies a wss:// gateway with")
    p.add_argument("--push-to-talk", action="store_true", help="gate the mic with the board's button")
    p.add_argument("--half-duplex", action="store_true", help="close the mic while the agent speaks")
    p.add_argument("--volume", type=int, default=100, help="speaker volume 0..100 (default 100)")
    p.add_argument("--stats", help="write the simulation's heap and I2S statistics here (JSON)")
    p.add_argument("--source", action="store_true",
                   help="run the firmware from .py source instead of mpy-cross output (needs ~256K heap)")
    p.add_argument("--keep", action="store_true", help="keep the simulated flash directory and print its path")
    p.add_argument("--pty", action="store_true",
                   help="a board for the board tools instead: its console on a pseudo-terminal, an empty flash, "
                        "running until Ctrl-C (then: lkdevice install --board sim --port PTY, provision, monitor)")
    p.set_defaults(run=_run)
    return p


def _run(args) -> int:
    from ..host_tools import simulator
    return simulator.run(args)
