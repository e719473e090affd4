# Board files: one declarative JSON per board (boards/*.json, copied to the
# board as board.json). Plain Python so CPython tests can validate them too.

import json
import sys

CHIPS = ("esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6", "sim")
RATE = 16000  # the firmware does not resample: I2S runs at the protocol rate


class BoardError(ValueError):
    pass


def _req(d, where, key, kind):
    if key not in d:
        raise BoardError("%s: missing field %r" % (where, key))
    v = d[key]
    if kind == "pin":
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 48:
            raise BoardError("%s.%s: %r is not a GPIO number 0..48" % (where, key, v))
    elif kind == "int":
        if not isinstance(v, int) or isinstance(v, bool):
            raise BoardError("%s.%s: %r is not an integer" % (where, key, v))
    elif kind == "bool":
        if not isinstance(v, bool):
            raise BoardError("%s.%s: %r is not true/false" % (where, key, v))
    elif kind == "str":
        if not isinstance(v, str) or not v:
            raise BoardError("%s.%s: %r is not a non-empty string" % (where, key, v))
    return v


def _opt_pin(d, where, key):
    if d.get(key) is None:
        d[key] = None
        return None
    return _req(d, where, key, "pin")


def _i2s(d, where, mic):
    if not isinstance(d, dict):
        raise BoardError("%s: must be an object" % where)
    kind = d.get("type", "i2s")
    if kind not in ("i2s", "pdm"):
        raise BoardError("%s.type: %r is neither 'i2s' nor 'pdm'" % (where, kind))
    if kind == "pdm" and not mic:
        raise BoardError("%s.type: a speaker cannot be 'pdm'" % where)
    d["type"] = kind
    _req(d, where, "i2s_id", "int")
    if kind == "i2s":
        _req(d, where, "sck", "pin")
        _req(d, where, "ws", "pin")
    else:
        _req(d, where, "clk", "pin")
    _req(d, where, "sd", "pin")
    _opt_pin(d, where, "mck")
    bits = _req(d, where, "bits", "int")
    if bits not in (16, 32) or (kind == "pdm" and bits != 16):
        raise BoardError("%s.bits: %d unsupported (i2s: 16 or 32, pdm: 16)" % (where, bits))
    rate = _req(d, where, "rate", "int")
    if rate != RATE:
        raise BoardError("%s.rate: %d unsupported; the firmware runs I2S at %d Hz" % (where, rate, RATE))
    ibuf = d.get("ibuf", 8192)
    if not isinstance(ibuf, int) or ibuf < 1280:
        raise BoardError("%s.ibuf: %r must be an integer >= 1280" % (where, ibuf))
    d["ibuf"] = ibuf
    if not mic:
        _opt_pin(d, where, "amp_enable")
    return d


def validate(b):
    """Check a decoded board file and fill defaults; returns it or raises BoardError."""
    if not isinstance(b, dict):
        raise BoardError("board file must be a JSON object")
    _req(b, "board", "name", "str")
    chip = _req(b, "board", "chip", "str")
    if chip not in CHIPS:
        raise BoardError("board.chip: %r is not one of %s" % (chip, ", ".join(CHIPS)))
    b["psram"] = _req(b, "board", "psram", "bool")
    _i2s(_req(b, "board", "mic", None), "mic", True)
    _i2s(_req(b, "board", "speaker", None), "speaker", False)
    m, s = b["mic"], b["speaker"]
    shared = b.get("shared_pins", False)
    if not isinstance(shared, bool):
        raise BoardError("board.shared_pins: %r is not true/false" % (shared,))
    b["shared_pins"] = shared
    # every GPIO of a section (no helper: each name costs the heap a qstr, on every board)
    pm = [m[k] for k in ("sck", "ws", "clk", "sd", "mck") if m.get(k) is not None]
    both = [s[k] for k in ("sck", "ws", "clk", "sd", "mck") if s.get(k) is not None and s[k] in pm]
    if shared:
        # one peripheral switched between directions: two cannot drive one GPIO
        if m["i2s_id"] != s["i2s_id"]:
            raise BoardError("mic.i2s_id %d and speaker.i2s_id %d: a shared_pins board runs mic and speaker on one "
                             "I2S peripheral (half duplex); give both the same i2s_id" % (m["i2s_id"], s["i2s_id"]))
    elif m["i2s_id"] == s["i2s_id"]:
        raise BoardError("mic.i2s_id and speaker.i2s_id are both %d; each direction needs its own peripheral "
                         "(or set shared_pins: true for one peripheral, half duplex)" % m["i2s_id"])
    elif both:
        raise BoardError("mic and speaker share GPIO %s; set shared_pins: true (one I2S peripheral, half duplex)"
                         % ", ".join(str(p) for p in both))
    if m["type"] == "pdm" and m["i2s_id"] != 0:
        raise BoardError("mic.i2s_id: %d; PDM microphones need I2S 0 (the only one with PDM RX on the ESP32 "
                         "and ESP32-S3)" % m["i2s_id"])
    mp = b.get("micropython", "a MicroPython build that has it (see boards/README.md)")
    if not isinstance(mp, str) or not mp:
        raise BoardError("board.micropython: %r is not a non-empty string" % (mp,))
    b["micropython"] = mp
    c = b.get("codec")
    if c is not None:
        # only boards with codec chips load it (a long name: not a qstr that every board would keep)
        try:
            __import__("lkd.boardcodec")
            c = sys.modules["lkd.boardcodec"].validate(c, s)
        except ImportError:
            # this file was loaded on its own (the host's board tools, CPython): the one beside it
            ns = {"__name__": "_lkd_boardcodec", "BoardError": BoardError, "_req": _req}
            with open(__file__[:-8] + "boardcodec.py") as f:  # [:-8]: less "board.py"
                exec(f.read(), ns)
            c = ns["validate"](c, s)
    b["codec"] = c
    btn = b.get("button")
    if btn is not None:
        _req(btn, "button", "pin", "pin")
        btn["active_low"] = btn.get("active_low", True)
    b["button"] = btn
    led = b.get("led")
    if led is not None:
        kind = led.get("type")
        if kind not in ("pin", "neopixel"):
            raise BoardError("led.type: %r is neither 'pin' nor 'neopixel'" % (kind,))
        _req(led, "led", "pin", "pin")
        led["active_low"] = led.get("active_low", False)
        led["count"] = led.get("count", 1)
    b["led"] = led
    return b


def load(path="board.json"):
    try:
        with open(path) as f:
            b = json.load(f)
    except OSError:
        raise BoardError("%s: not found; copy one of boards/*.json to the board as board.json" % path)
    except ValueError:
        raise BoardError("%s: not valid JSON" % path)
    return validate(b)
