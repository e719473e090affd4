# Simulated `neopixel`: keeps the colours; `last` is what the LED shows.


class NeoPixel:
    ORDER = (1, 0, 2, 3)

    def __init__(self, pin, n, bpp=3, timing=1):
        self.pin = pin
        self.n = n
        self.bpp = bpp
        self.buf = [(0, 0, 0)] * n
        self.last = None
        self.writes = 0

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
        self.last = self.buf[0]
        self.writes += 1
