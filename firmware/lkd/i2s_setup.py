# Opening a board's I2S: what the firmware needs at boot only (lkd.boot
# unloads it once the audio is built; lkd.shared_i2s keeps `configure`).

import sys
from machine import I2S, Pin
from lkd.device import log


class Unsupported(Exception):
    """The board cannot run here. args: (why,) or (why, True) when the
    MicroPython build lacks a feature (boot then names the build to flash)."""


def configure(cfg, rx, i2s=None):
    """A new I2S for one direction of a board's mic/speaker section, or `i2s`
    reconfigured in place (I2S.init: the same peripheral, no new object)."""
    pdm = cfg["type"] == "pdm"
    # PDM: the clock goes out on the word-select line (builds with I2S.PDM_RX)
    kw = {"sck": None if pdm else Pin(cfg["sck"]), "ws": Pin(cfg["clk"] if pdm else cfg["ws"]),
          "sd": Pin(cfg["sd"]), "mode": getattr(I2S, "PDM_RX", None) if pdm else I2S.RX if rx else I2S.TX,
          "bits": cfg["bits"], "format": I2S.MONO, "rate": cfg["rate"], "ibuf": cfg["ibuf"]}
    if kw["mode"] is None:
        raise Unsupported("I2S.PDM_RX (PDM microphone) is missing in this MicroPython", True)
    if cfg["mck"] is not None:
        kw["mck"] = Pin(cfg["mck"])
    try:
        if i2s is None:
            return I2S(cfg["i2s_id"], **kw)
        i2s.init(**kw)
        return i2s
    except TypeError:
        if "mck" not in kw:
            raise
        # stock esp32 builds: no MICROPY_PY_MACHINE_I2S_MCK, the keyword is refused
        raise Unsupported("I2S MCLK output (I2S mck=) is missing in this MicroPython", True)


def open_audio(board, ring, on_frame, pull):
    """The board's (Mic, Speaker); raises Unsupported when this build cannot drive them."""
    from lkd.audio import Mic, Speaker
    m, s = board["mic"], board["speaker"]
    if board["shared_pins"]:
        # only boards that share pins load it (a long name: not a qstr that every board would keep)
        __import__("lkd.shared_i2s")
        return sys.modules["lkd.shared_i2s"].open(m, s, ring, on_frame, pull)
    spk = Speaker(s, pull, configure(s, False))
    return Mic(m, ring, on_frame, configure(m, True)), spk


async def stop(e, board, led, wdt):
    """Say once why the board cannot run, and stop: no retries, no reboot loop,
    the LED in error until reset or re-flash."""
    import asyncio
    log("stopped board=%s: %s%s" % (board["name"], e.args[0],
                                     "; flash this: " + board["micropython"] if len(e.args) > 1 else ""))
    led.show("error")
    while True:
        await asyncio.sleep_ms(250)
        wdt.feed()
        led.tick()
