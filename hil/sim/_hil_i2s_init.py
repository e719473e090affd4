# The body of I2S.init() of hil/sim/machine.py, in a module of its own that
# machine.py loads for each call and drops again: the simulation shares the
# heap it measures, and a board inits its I2S at boot and (shared pins)
# between utterances only. Like the ESP32 port: two peripherals, one direction
# per instance; a second live instance on one id, or two on one GPIO, is
# refused (on a chip the first would go silent, or the GPIO matrix would give
# the pin to one of them). Each direction keeps its wall-clock timeline across
# re-inits.

import os
import time
import machine as m
from micropython import const

_F = const(0)
_T0 = const(1)
_POS = const(2)
_EOF = const(3)


def init(self, *, sck=None, ws=None, sd=None, mck=None, mode=0, bits=16, format=0, rate=16000, ibuf=8192):
    if mck is not None and os.getenv("LKD_HIL_NO_MCK"):
        raise TypeError("unexpected keyword argument 'mck'")
    self.deinit()
    if mode not in (0, 1, getattr(m.I2S, "PDM_RX", 0)):
        raise ValueError("invalid mode")
    if bits not in (16, 32):
        raise ValueError("invalid bits")
    pins = [p.id for p in (sck, ws, sd, mck) if p is not None]
    for other in m._live.values():
        if other.id == self.id:
            # the ESP32 port would silently take the peripheral from the first one
            raise OSError("I2S(%d) already live" % self.id)
        for p in pins:
            if p in other.pin:
                # the GPIO matrix would give the pin to one of them
                raise OSError("GPIO %d used by live I2S(%d)" % (p, other.id))
    self.pin = pins  # its GPIOs
    self.mode = mode
    self.frame_bytes = (bits // 8) * (2 if format == 1 else 1)  # app-buffer bytes per sample
    self.ibuf = ibuf // self.frame_bytes  # the DMA buffer, here in samples
    tx = mode == 1
    line = m._LINES[tx]
    if line[_T0] is None:
        path = os.getenv("LKD_HIL_SPK" if tx else "LKD_HIL_MIC")
        line[_F] = open(path, "wb" if tx else "rb") if path else None
        line[_EOF] = line[_F] is None
        line[_T0] = time.ticks_ms()
    else:
        gap = time.ticks_diff(time.ticks_ms(), line[_T0]) * 16 - line[_POS]
        if gap > 0:
            # the speaker was off meanwhile (the recording stays on the wall clock),
            # or what the microphone heard while nobody listened
            if tx:
                self._write_silence(line, gap)
            else:
                self._skip(line, gap)
            line[_POS] += gap
    self.line = line
    m._live[self.id] = self
    m._count("i2s_init_count")
