# Wi-Fi station join with retry.

import asyncio
import network


async def join(ssid, password, feed, timeout_ms=15000):
    """Connect the STA interface; retries forever, feeding the watchdog."""
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    attempt = 0
    while True:
        if wlan.isconnected():
            return wlan
        attempt += 1
        print("[lkd] wifi connecting ssid=%s attempt=%d" % (ssid, attempt))
        try:
            wlan.connect(ssid, password)
        except OSError as e:
            print("[lkd] wifi error %s" % e)
        waited = 0
        while waited < timeout_ms and not wlan.isconnected():
            feed()
            await asyncio.sleep_ms(100)
            waited += 100
        if wlan.isconnected():
            print("[lkd] wifi up ip=%s" % wlan.ifconfig()[0])
            return wlan
        print("[lkd] wifi failed status=%s" % wlan.status())
        try:
            wlan.disconnect()
        except OSError:
            pass
        delay = min(30000, 1000 << min(attempt, 5))
        while delay > 0:
            feed()
            await asyncio.sleep_ms(500)
            delay -= 500


def rssi(wlan):
    try:
        return wlan.status("rssi")
    except Exception:
        return None
