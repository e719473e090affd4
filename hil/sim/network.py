# Simulated ESP32 `network`: a STA interface that joins after a short delay.
# LKD_HIL_WIFI_SSID, when set, is the only SSID that exists.

import os
import time

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
_JOIN_MS = 300


class WLAN:
    def __init__(self, iface=STA_IF):
        self.iface = iface
        self._active = False
        self._since = None
        self._status = STAT_IDLE
        self._ssid = None

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
        if self._since is not None and time.ticks_diff(time.ticks_ms(), self._since) >= _JOIN_MS:
            self._status = STAT_GOT_IP
            return True
        return False

    def status(self, param=None):
        if param == "rssi":
            return -52 if self.isconnected() else 0
        self.isconnected()
        return self._status

    def ifconfig(self, cfg=None):
        return ("10.77.0.42", "255.255.255.0", "10.77.0.1", "10.77.0.1")

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
