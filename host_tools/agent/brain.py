"""The offline agent's "LLM": rules from what was heard to what to say and which robot RPC to call.

Sans-I/O: `Brain.answer(heard)` returns a `Reply` (a sentence, or an RPC for the
worker to make); `Brain.after_call(call, result, error)` turns the robot's answer
into the sentence to say. The worker does the calling and the speaking.

Everything it says is written in words ("seven forty two", not "7:42"): the
speech synthesizer says words best, and a test can recognize the reply with a
grammar made of the reply's own words.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Callable

COLORS = ("red", "green", "blue", "white", "yellow", "orange", "purple", "pink")
DIRECTIONS = ("forward", "backward", "left", "right")
# how long one spoken "move" drives: within the robot app's default command watchdog (0.5 s), which
# stops a move nobody renews; a voice command is said once
MOVE_MS = 500
# LiveKit's RPC error codes the brain tells apart
_UNSUPPORTED_METHOD = 1400
_NO_RESPONSE = (1401, 1501, 1502, 1503)  # recipient not found, connection or response timeout, gone

# What the agent understands, as the speech recognizer's grammar: one phrase per line.
PHRASES: tuple[str, ...] = (
    "hello",
    "what time is it",
    "what can you do",
    "move forward", "move backward", "go forward", "go back", "move back",
    "turn left", "turn right",
    "stop",
    *(f"set the light to {c}" for c in COLORS),
    "turn on the light", "turn off the light",
    "turn on the kitchen light", "turn off the kitchen light",
    "what is your battery", "how is your battery",
)

CAPABILITIES = ("I can tell you the time, and drive the robot. Say move forward, turn left, stop, "
                "set the light to red, or ask what is your battery.")


@dataclass(frozen=True)
class RobotCall:
    """An RPC on the robot participant: method and JSON payload, and what it is for."""

    method: str
    payload: str
    intent: str  # "move", "stop", "light", "battery"
    detail: str = ""  # the direction or colour, for the sentence afterwards


@dataclass(frozen=True)
class Reply:
    say: str = ""
    call: RobotCall | None = None


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """0..100 in words; other numbers as digits."""
    if n < 0 or n > 100:
        return str(n)
    if n == 100:
        return "one hundred"
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])


def time_words(t: time.struct_time) -> str:
    hour = t.tm_hour % 12 or 12
    if t.tm_min == 0:
        return f"The time is {number_words(hour)} o'clock."
    minute = number_words(t.tm_min) if t.tm_min >= 10 else f"oh {number_words(t.tm_min)}"
    return f"The time is {number_words(hour)} {minute}."


def normalize(heard: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]+", " ", heard.lower()).split())


class Brain:
    def __init__(self, clock: Callable[[], time.struct_time] = time.localtime):
        self.clock = clock

    def answer(self, heard: str) -> Reply:
        text = normalize(heard)
        words = set(text.split())
        if not text:
            return Reply()
        if text in ("hello", "hi", "hey"):
            return Reply("Hello. Ask me what I can do.")
        if "time" in words and "what" in words:
            return Reply(time_words(self.clock()))
        if "what can you do" in text or text == "help":
            return Reply(CAPABILITIES)
        if "battery" in words:
            return Reply(call=RobotCall("get_battery", "{}", "battery"))
        if "light" in words:
            if "kitchen" in words:
                return Reply("I cannot reach the kitchen light. I can only set my own light.")
            color = next((c for c in COLORS if c in words), None)
            if color is None and "on" in words:
                color = "white"
            if color is None and "off" in words:
                color = "off"
            if color is not None:
                return Reply(call=RobotCall("set_led", json.dumps({"color": color}), "light", color))
        if text == "stop" or (words & {"stop", "halt"} and len(words) <= 3):
            return Reply(call=RobotCall("stop", "{}", "stop"))
        direction = self._direction(text, words)
        if direction is not None:
            return Reply(call=RobotCall("move", json.dumps({"direction": direction, "duration_ms": MOVE_MS}),
                                        "move", direction))
        return Reply(f"I heard: {text}.")

    @staticmethod
    def _direction(text: str, words: set[str]) -> str | None:
        if not words & {"move", "go", "turn", "drive"}:
            return None
        if "forward" in words or "ahead" in words:
            return "forward"
        if words & {"backward", "backwards", "back"}:
            return "backward"
        if "left" in words:
            return "left"
        if "right" in words:
            return "right"
        return None

    def after_call(self, call: RobotCall, result: str | None, error: tuple[int, str] | None) -> str:
        """The sentence for the robot's answer (`result`, the RPC's JSON) or its error (code, message)."""
        if error is not None:
            code, message = error
            if code == _UNSUPPORTED_METHOD:
                return "This device cannot do that. There is no robot here."
            if code in _NO_RESPONSE:
                return "The robot did not answer."
            return f"The robot said: {message}."
        if call.intent == "move":
            return f"Moving {call.detail}." if call.detail in ("forward", "backward") else f"Turning {call.detail}."
        if call.intent == "stop":
            return "Stopped."
        if call.intent == "light":
            return "The light is off." if call.detail == "off" else f"The light is {call.detail}."
        if call.intent == "battery":
            try:
                percent = int(float(json.loads(result or "{}")["percent"]))
            except (ValueError, KeyError, TypeError):
                return "The robot did not say its battery level."
            return f"My battery is at {number_words(percent)} percent."
        return "Done."
