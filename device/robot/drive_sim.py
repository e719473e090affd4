"""The built-in `sim` drive: answers move, stop, set_led, get_battery and get_state, and logs what it would do.

A robot without motors (or a developer's laptop) runs it to see what the agent
asks for; a real drive plugin takes the same payloads. The checks are pure
functions (`parse_move`, `parse_color`), so a real drive can reuse them.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from .commands import Command, Plugin, PluginAPI, PayloadError, number, parse_params

DIRECTIONS = ("forward", "backward", "left", "right")
MAX_DURATION_MS = 10_000
DEFAULT_SPEED = 0.5
COLORS = {
    "off": "#000000", "black": "#000000", "white": "#ffffff", "red": "#ff0000", "green": "#00ff00",
    "blue": "#0000ff", "yellow": "#ffff00", "cyan": "#00ffff", "magenta": "#ff00ff", "orange": "#ffa500",
    "purple": "#800080", "pink": "#ffc0cb",
}
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
# the joystick path: a move payload as a data message, no answer
DRIVE_TOPIC = "robot.drive"


@dataclass(frozen=True)
class Move:
    direction: str
    speed: float
    duration_ms: int | None  # None: until stop or the watchdog


def parse_move(payload: str | bytes, max_duration_ms: int = MAX_DURATION_MS) -> Move:
    params = parse_params(payload, ("direction", "speed", "duration_ms"))
    direction = params.get("direction")
    if direction is None:
        raise PayloadError(f"direction is required (one of {', '.join(DIRECTIONS)})")
    if not isinstance(direction, str) or direction.lower() not in DIRECTIONS:
        raise PayloadError(f"direction must be one of {', '.join(DIRECTIONS)}, got {str(direction)[:40]!r}")
    speed = number(params, "speed", 0.0, 1.0, DEFAULT_SPEED)
    duration = number(params, "duration_ms", 1, max_duration_ms)
    if duration is not None and duration != int(duration):
        raise PayloadError(f"duration_ms must be a whole number of milliseconds, got {duration:g}")
    return Move(direction.lower(), speed, None if duration is None else int(duration))


def parse_color(payload: str | bytes) -> str:
    """#rrggbb, from a colour name or #rrggbb."""
    color = parse_params(payload, ("color",)).get("color")
    if not isinstance(color, str):
        raise PayloadError(f"color is required: a name ({', '.join(sorted(COLORS))}) or #rrggbb")
    if _HEX.fullmatch(color):
        return color.lower()
    if color.lower() in COLORS:
        return COLORS[color.lower()]
    raise PayloadError(f"color must be a name ({', '.join(sorted(COLORS))}) or #rrggbb, got {color[:40]!r}")


class SimDrive(Plugin):
    """Settings: battery_percent (start, 100), drain_per_s (percent per second of motion, 0.05),
    max_duration_ms (10000)."""

    name = "sim"

    def __init__(self, settings: dict[str, Any] | None = None, *, clock=time.monotonic):
        super().__init__(settings)
        self.clock = clock
        self.max_duration_ms = int(self.settings.get("max_duration_ms", MAX_DURATION_MS))
        self._battery = float(self.settings.get("battery_percent", 100.0))
        self._drain = float(self.settings.get("drain_per_s", 0.05))
        self.move: Move | None = None
        self._since = 0.0
        self.led = "#000000"
        self.stops = 0
        self.last_stop_reason: str | None = None
        self.agent: str | None = None  # the agent's last lk.agent.state
        self.log = logging.getLogger("lkdevice.robot.sim")

    def setup(self, api: PluginAPI) -> None:
        self.log = api.log
        api.rpc("move", self.on_move)
        api.rpc("stop", self.on_stop)
        api.rpc("set_led", self.on_set_led)
        api.rpc("get_battery", self.on_get_battery)
        api.rpc("get_state", self.on_get_state)
        api.topic(DRIVE_TOPIC, self.on_move)

    # -- handlers -----------------------------------------------------------------------------------------
    def on_move(self, cmd: Command) -> dict:
        move = parse_move(cmd.payload, self.max_duration_ms)
        self._settle()
        self.move = move
        cmd.moving(None if move.duration_ms is None else move.duration_ms / 1000)
        until = f"for {move.duration_ms} ms" if move.duration_ms is not None else "until stopped"
        self.log.info("drive: move %s at speed %.2f %s (from %s)", move.direction, move.speed, until, cmd.caller)
        return {"moving": True, "direction": move.direction, "speed": move.speed, "duration_ms": move.duration_ms}

    def on_stop(self, cmd: Command) -> dict:
        cmd.params(())
        cmd.stopped()
        self.stop(f"asked by {cmd.caller}")
        return {"moving": False}

    def on_set_led(self, cmd: Command) -> dict:
        self.led = parse_color(cmd.payload)
        self.log.info("drive: led %s (from %s)", self.led, cmd.caller)
        return {"color": self.led}

    def on_get_battery(self, cmd: Command) -> dict:
        cmd.params(())
        percent = self.battery_percent()
        # a 2S lithium pack: 6.4 V empty, 8.4 V full
        return {"percent": round(percent, 1), "voltage": round(6.4 + 2.0 * percent / 100, 2), "charging": False}

    def on_get_state(self, cmd: Command) -> dict:
        cmd.params(())
        m = self.move
        return {"moving": m is not None, "direction": m and m.direction, "speed": m and m.speed,
                "led": self.led, "battery_percent": round(self.battery_percent(), 1), "stops": self.stops,
                "last_stop_reason": self.last_stop_reason, "agent_state": self.agent}

    def agent_state(self, identity: str, state: str) -> None:
        self.agent = state

    # -- the motors ----------------------------------------------------------------------------------------
    def battery_percent(self) -> float:
        moving_for = self.clock() - self._since if self.move is not None else 0.0
        return max(0.0, self._battery - self._drain * moving_for)

    def _settle(self) -> None:
        """Account the battery for the motion so far."""
        now = self.clock()
        if self.move is not None:
            self._battery = max(0.0, self._battery - self._drain * (now - self._since))
        self._since = now

    def stop(self, reason: str) -> None:
        self._settle()
        was = self.move
        self.move = None
        self.stops += 1
        self.last_stop_reason = reason
        self.log.info("drive: stop (%s)%s", reason, "" if was is not None else ", was not moving")

    def close(self) -> None:
        if self.move is not None:
            self.stop("closing")
