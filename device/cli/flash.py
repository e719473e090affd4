"""`lkdevice flash`: MicroPython onto an ESP32 board with esptool (a host tool, the `board` extra).

The parser lives here; `lkdevice.host_tools.board.flash` is imported only when
the command runs.
"""

from __future__ import annotations

import argparse


def add_parsers(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "flash", help="write MicroPython to a board (esptool), checking the chip against the board file",
        epilog="example: lkdevice flash --board esp32-s3-devkitc-inmp441-max98357a "
               "--image ESP32_GENERIC_S3-20250415-v1.25.0.bin   (without --image: which image to download)")
    p.add_argument("--board", required=True, help="board file from boards/ (its chip and PSRAM choose the image)")
    p.add_argument("--port", help="serial port (default: the one USB serial port that looks like an ESP32)")
    p.add_argument("--image", help="the MicroPython .bin from micropython.org/download/; without it, "
                                   "say which one to download")
    p.add_argument("--baud", type=int, default=460800, help="baud rate for writing (default 460800; "
                                                            "try 115200 if writing fails partway)")
    p.add_argument("--erase", action="store_true", help="erase the whole flash first (files and config.json too); "
                                                        "MicroPython advises it the first time")
    p.set_defaults(run=_run)
    return p


def _run(args) -> int:
    from ..host_tools.board import flash
    return flash.run(args)
