"""`lkdevice doctor`: what is wrong between a board, its gateway and LiveKit, one line per check.

The parser lives here; `lkdevice.host_tools.board.doctor` is imported only when
the command runs.
"""

from __future__ import annotations

import argparse


def add_parsers(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "doctor", help="check the gateway URL, TLS, the token and the board, and say what to fix",
        epilog="example: lkdevice doctor --board esp32-s3-devkitc-inmp441-max98357a "
               "--gateway wss://192.168.1.20:8765/v1/device --ca ca.pem "
               "--livekit-url ws://192.168.1.20:7880 --token \"$TOKEN\"   (exit 0: all good, 1: a problem found)")
    p.add_argument("--board", help="board file from boards/: the chip the board must be")
    p.add_argument("--port", help="the board's serial port (default with --board: the one USB serial port "
                                  "that looks like an ESP32)")
    p.add_argument("--gateway", help="the gateway URL the board uses (ws:// or wss://)")
    p.add_argument("--ca", help="the CA certificate (PEM) the board verifies a wss:// gateway with")
    p.add_argument("--livekit-url", help="the LiveKit server the gateway joins (asked whether it accepts --token)")
    p.add_argument("--token", help="the board's access token (its grants and expiry are read; never printed)")
    p.set_defaults(run=_run)
    return p


def _run(args) -> int:
    from ..host_tools.board import doctor
    return doctor.run(args)
