# Status LED (plain pin or neopixel) and the push-to-talk button.

from machine import Pin

# state -> RGB for a neopixel, and on/blink/off for a plain LED
_COLORS = {
    "offline": ((0, 0, 0), 0),
    "connecting": ((24, 16, 0), 2),
    "idle": ((0, 8, 0), 1),
    "listening": ((0, 32, 0), 1),
    "thinking": ((0, 0, 32), 2),
    "speaking": ((24, 0, 24), 1),
    "error": ((32, 0, 0), 2),
    "stopped": ((32, 0, 0), 1),  # steady red: not rejoining until a new token or a reset
}


class Led:
    def __init__(self, cfg):
        self.np = None
        self.pin = None
        self.state = None
        self.phase = False
        if cfg is None:
            return
        if cfg["type"] == "neopixel":
            import neopixel
            self.np = neopixel.NeoPixel(Pin(cfg["pin"], Pin.OUT), cfg["count"])
        else:
            self.pin = Pin(cfg["pin"], Pin.OUT)
            self.low = cfg["active_low"]
        self.show("offline")

    def show(self, state):
        if state == self.state or state not in _COLORS:
            return
        self.state = state
        self._paint(True)

    def _paint(self, on):
        rgb, mode = _COLORS[self.state]
        if mode == 2 and not on:
            rgb = (0, 0, 0)
        if self.np is not None:
            for i in range(self.np.n):
                self.np[i] = rgb
            self.np.write()
        elif self.pin is not None:
            lit = mode == 1 or (mode == 2 and on)
            self.pin.value(lit != self.low)

    def tick(self):
        """Called about every 250 ms: blink states toggle."""
        if self.state is not None and _COLORS[self.state][1] == 2:
            self.phase = not self.phase
            self._paint(self.phase)


class Button:
    def __init__(self, cfg):
        self.low = cfg["active_low"]
        self.pin = Pin(cfg["pin"], Pin.IN, Pin.PULL_UP if self.low else None)

    def pressed(self):
        return self.pin.value() != self.low
