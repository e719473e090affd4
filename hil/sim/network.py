# Simulated ESP32 `network`: a STA interface that joins after a short delay.
# LKD_HIL_WIFI_SSID, when set, is the only SSID that exists; LKD_HIL_DNS, the
# DNS server the DHCP lease names (default 10.77.0.1). The access point
# can be dropped and restored at run time: {"ap": false} in the LKD_HIL_PINS
# control file (machine.py). As with MicroPython's ESP32 driver, a requested
# connection reassociates by itself once the AP is back (until disconnect());
# while it is down, new TCP connections fail (socket.py).

import os
import time
from machine import _pins

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
_JOIN_MS = 300
_ifaces = {}


def WLAN(iface=STA_IF):
    # one object per interface, as on the ESP32: WLAN(STA_IF) again is the same link
    w = _ifaces.get(iface)
    if w is None:
        w = _ifaces[iface] = _WLAN(iface)
    return w


class _WLAN:
    def __init__(self, iface):
        self.iface = iface
        self._active = False
        self._since = None  # when the current association started
        self._status = STAT_IDLE
        self._ssid = None
        self.ap = True  # the access point was up when last looked at

    def active(self, v=None):
        if v is None:
            return self._active
        self._active = bool(v)

    def connect(self, ssid=None, key=None, **kw):
        if not self._active:
            raise OSError("Wifi Not Started")
        only = os.getenv("LKD_HIL_WIFI_SSID")
        if only and ssid != only:
            self._status = STAT_NO_AP_FOUND
            self._since = None
            return
        self._ssid = ssid
        self._since = time.ticks_ms()
        self._status = STAT_CONNECTING

    def disconnect(self):
        self._since = None
        self._status = STAT_IDLE

    def isconnected(self):
        up = _pins.level("ap") is not False
        if up != self.ap:
            self.ap = up
            if self._since is not None:
                if up:
                    self._since = time.ticks_ms()  # the driver reassociates
                else:
                    self._status = STAT_NO_AP_FOUND
        if not up or self._since is None:
            return False
        if time.ticks_diff(time.ticks_ms(), self._since) >= _JOIN_MS:
            self._status = STAT_GOT_IP
            return True
        return False

    def status(self, param=None):
        if param == "rssi":
            return -52 if self.isconnected() else 0
        self.isconnected()
        return self._status

    def ifconfig(self, cfg=None):
        return ("10.77.0.42", "255.255.255.0", "10.77.0.1", os.getenv("LKD_HIL_DNS") or "10.77.0.1")

    def ipconfig(self, key=None):
        return "10.77.0.42"

    def config(self, *args, **kw):
        if args and args[0] == "mac":
            return b"\x24\x6f\x28\x4c\x4b\x44"
        if args and args[0] == "ssid":
            return self._ssid
        return None

    def scan(self):
        return []
