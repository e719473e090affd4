# Wi-Fi station: join at boot, and rejoin after a loss. Loaded only while
# joining (boot unloads it once the link is up; a board on a steady link
# carries none of this code). No task of its own: the boot loop calls poll()
# every 250 ms. After a loss MicroPython's ESP32 driver reassociates by itself
# (while a connect is requested); if that has not worked within the join
# timeout, disconnect, wait (backoff: 1 s doubling to 30 s) and join afresh.

import time
import network
from micropython import const

_JOINING = const(0)
_WAIT = const(1)


class Wifi:
    def __init__(self, ssid, password, lost, timeout_ms=15000):
        self.ssid = ssid
        self.password = password
        self.timeout_ms = timeout_ms
        self.wlan = wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        self.n = 0  # join attempts
        self.t = time.ticks_ms()  # when the current state ends
        if lost:
            print("[lkd] wifi lost status=%s" % wlan.status())
            self.state = _JOINING  # the driver is already reassociating
            self.t = time.ticks_add(self.t, timeout_ms)
        else:
            self.state = _WAIT  # join now

    def poll(self):
        """Advance; True once the link is up."""
        wlan = self.wlan
        if wlan.isconnected():
            print("[lkd] wifi up ip=%s" % wlan.ifconfig()[0])
            return True
        now = time.ticks_ms()
        if time.ticks_diff(now, self.t) < 0:
            return False
        if self.state == _JOINING:
            print("[lkd] wifi failed status=%s" % wlan.status())
            try:
                wlan.disconnect()
            except OSError:
                pass
            self.state = _WAIT
            self.t = time.ticks_add(now, min(30000, 1000 << min(self.n, 5)))
            return False
        self.n += 1
        print("[lkd] wifi connecting ssid=%s attempt=%d" % (self.ssid, self.n))
        try:
            wlan.connect(self.ssid, self.password)
        except OSError as e:
            print("[lkd] wifi error %s" % e)
        self.state = _JOINING
        self.t = time.ticks_add(now, self.timeout_ms)
        return False
