"""`lkdevice monitor`: the board's console, its `[lkd]` event lines coloured or as JSON.

The firmware logs one event a line: `[lkd] EVENT key=value key=value ...`
(lkd/device.py `log`). `parse_event` turns one into a dict: the event name
(the first word), each key=value pair (a value runs to the next ` key=`, so a
free-text `message=` keeps its spaces; integers become numbers), the kind
that picks its colour, and the raw line.
"""

from __future__ import annotations

import json
import re
import sys
import time

from . import BoardToolError
from .serialport import find_port, open_port

PREFIX = "[lkd] "
_PAIR = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=")
_INT = re.compile(r"-?\d+")
FREE_TEXT = {"message"}  # keys whose value is the rest of the line (lkd/device.py: error ... message=)

# event -> kind; kind -> ANSI colour
KINDS = {
    "boot": "boot", "wifi": "link",
    "connecting": "link", "link": "link", "resume": "link", "resumed": "link", "leave": "link",
    "welcome": "joined", "joined": "room", "left": "room", "attributes": "room",
    "agent_state": "agent", "mute": "agent", "volume": "agent",
    "data": "data", "rpc": "data", "rpc_result": "data",
    "stats": "stats",
    "error": "error", "send": "error", "dropped": "error", "app": "error", "stopped": "error",
}
COLOURS = {"boot": "1", "link": "33", "joined": "32", "room": "36", "agent": "35", "data": "34",
           "stats": "2", "error": "31", "console": "0"}
_ERROR_WORDS = ("error", "fatal", "refused", "failed", "stopped", "Traceback", "MemoryError")


def _value(text: str):
    text = text.strip()
    return int(text) if _INT.fullmatch(text) else text


def parse_event(line: str) -> dict | None:
    """`[lkd] welcome room=r identity=i` -> {"event": "welcome", "room": "r", ...}; None if not an event."""
    i = line.find(PREFIX)
    if i < 0:
        return None
    body = line[i + len(PREFIX):].strip()
    name = body.split(None, 1)[0] if body else ""
    ev: dict = {"event": name}
    pairs = list(_PAIR.finditer(body))
    text = [body[len(name):pairs[0].start() if pairs else len(body)].strip()]
    for n, m in enumerate(pairs):
        key = m.group(1)
        if n + 1 < len(pairs):
            value = body[m.end():pairs[n + 1].start()]  # an SSID may have spaces
        elif key in FREE_TEXT:
            value = body[m.end():]
        else:
            # the last value is one word; what follows is the line's text ("rpc_result id=X ok")
            value, _, rest = body[m.end():].strip().partition(" ")
            text.append(rest.strip())
        if key not in ("event", "kind", "raw", "t", "text"):
            ev[key] = _value(value)
    words = " ".join(t for t in text if t)
    if words:
        ev["text"] = words
    ev["kind"] = kind_of(name, body)
    ev["raw"] = line
    return ev


def kind_of(name: str, body: str) -> str:
    kind = KINDS.get(name, "console")
    if kind != "error" and (any(w in body for w in _ERROR_WORDS) or "fatal=1" in body):
        return "error"
    return kind


def render(line: str, *, as_json: bool, colour: bool, now: float | None = None) -> str:
    ev = parse_event(line)
    if as_json:
        obj = ev if ev is not None else {"raw": line}
        obj = {"t": round(time.time() if now is None else now, 3), **obj}
        return json.dumps(obj, ensure_ascii=False)
    if not colour:
        return line
    if ev is None:
        if any(w in line for w in ("Traceback", "Error", "[hil] watchdog")):
            return f"\x1b[31m{line}\x1b[0m"
        return line
    return f"\x1b[{COLOURS[ev['kind']]}m{line}\x1b[0m"


class LineSplitter:
    """Bytes from the port -> whole lines (\\r\\n or \\n), bounded: a line longer than
    `limit` is cut rather than held forever."""

    def __init__(self, limit: int = 4096):
        self.buf = b""
        self.limit = limit

    def feed(self, data: bytes) -> list[str]:
        self.buf += data
        lines = []
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                break
            lines.append(self.buf[:i].rstrip(b"\r").decode("utf-8", "replace"))
            self.buf = self.buf[i + 1:]
        if len(self.buf) > self.limit:
            lines.append(self.buf.decode("utf-8", "replace"))
            self.buf = b""
        return lines

    def pending(self) -> str:
        """The partial line (a prompt such as '>>> '), taken out."""
        s, self.buf = self.buf.decode("utf-8", "replace"), b""
        return s


def _soft_reset(ser) -> None:
    # Ctrl-C stops the program, Ctrl-B leaves a raw REPL, Ctrl-D soft-resets: main.py runs again
    ser.write(b"\r\x03\x03")
    time.sleep(0.2)
    ser.write(b"\r\x02")
    time.sleep(0.1)
    ser.write(b"\x04")


def run(args, out=None) -> int:
    out = out or sys.stdout
    port = find_port(args.port)
    colour = args.color == "always" or (args.color == "auto" and out.isatty() and not args.json)
    ser = open_port(port, timeout=0.2)
    if not args.json:
        print(f"--- monitor on {port}; Ctrl-C to quit ---", file=sys.stderr, flush=True)
    split = LineSplitter()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    idle_since = time.monotonic()
    try:
        if args.reset:
            _soft_reset(ser)
        while deadline is None or time.monotonic() < deadline:
            try:
                data = ser.read(4096)
            except Exception as e:  # pyserial: SerialException / OSError when the port goes away
                raise BoardToolError(f"the board on {port} went away (unplugged, or reset over USB?): "
                                     f"{type(e).__name__}") from None
            if data:
                idle_since = time.monotonic()
                for line in split.feed(data):
                    print(render(line, as_json=args.json, colour=colour), file=out, flush=True)
            elif split.buf and not args.json and time.monotonic() - idle_since > 0.3:
                out.write(split.pending())
                out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        try:
            ser.close()
        except Exception:
            pass
    return 0
