"""`lkdevice sim esp32`: the firmware on the MicroPython unix port (a host tool, the `sim` extra)."""

from __future__ import annotations


def add_parsers(sub) -> None:
    from ..host_tools import simulator  # a dev tool: the wheel works without it
    simulator.add_parser(sub)
