# Simulated ESP32 sockets: the unix port's own, except that while the access
# point is down ({"ap": false} in LKD_HIL_PINS, network.py) a new connection
# fails, as lwIP's does without a route (here at the address lookup that
# asyncio.open_connection makes first). Sockets already open are left alone
# (the firmware drops its link when Wi-Fi is lost).
import usocket
from machine import _pins


def getaddrinfo(*a):
    if _pins.level("ap") is False:
        raise OSError(113)  # EHOSTUNREACH
    return usocket.getaddrinfo(*a)


def __getattr__(name):
    return getattr(usocket, name)
