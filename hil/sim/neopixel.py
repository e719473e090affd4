# Simulated `neopixel`: keeps the colours; `last` is what the LED shows. With
# LKD_HIL_LED set, each change of the first pixel is appended there as
# "<ms> <r> <g> <b>", so a test can see the LED as a person would.

import os
import time

_t0 = time.ticks_ms()


class NeoPixel:
    ORDER = (1, 0, 2, 3)

    def __init__(self, pin, n, bpp=3, timing=1):
        self.pin = pin
        self.n = n
        self.bpp = bpp
        self.buf = [(0, 0, 0)] * n
        self.last = None
        self.writes = 0
        path = os.getenv("LKD_HIL_LED")
        self._log = open(path, "a") if path else None

    def __len__(self):
        return self.n

    def __setitem__(self, i, v):
        self.buf[i] = v

    def __getitem__(self, i):
        return self.buf[i]

    def fill(self, v):
        for i in range(self.n):
            self.buf[i] = v

    def write(self):
        rgb = self.buf[0]
        if rgb != self.last and self._log is not None:
            self._log.write("%d %d %d %d\n" % (time.ticks_diff(time.ticks_ms(), _t0), rgb[0], rgb[1], rgb[2]))
            self._log.flush()
        self.last = rgb
        self.writes += 1
