# A board that stopped rejoining (dev.stopped says why: a leave that retrying
# would not change, a refused token, a gateway URL that is a 404, a token
# server refusing the device). It waits here, its LED "stopped" (boot.py),
# until config.json changes or token_url gives a token other than the refused
# one; a reset starts afresh anyway. Not hammering a gateway or a token server
# that has said no: config.json is looked at every stopped_poll_s (30 s),
# token_url asked every tenth look (5 min). Loaded only when needed.

import asyncio
import hashlib
import json
from micropython import const

_FETCH_EVERY = const(10)
_WHY = {"PARTICIPANT_REMOVED": "removed from the room by the server (PARTICIPANT_REMOVED)",
        "DUPLICATE_IDENTITY": "another participant joined with this identity (DUPLICATE_IDENTITY)",
        "ROOM_DELETED": "the room was deleted (ROOM_DELETED)",
        "token_rejected": "the gateway refused the token (token_rejected)"}


def _config():
    with open("config.json", "rb") as f:
        return f.read()


def _digest(buf):
    # config.json's digest, read in small pieces: a stopped board is still
    # running its audio tasks on a heap near full
    h = hashlib.sha256()
    try:
        with open("config.json", "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(buf if n == len(buf) else buf[:n])
    except OSError:
        return None
    return h.digest()


def reset(dev):
    """A saved or refreshed token was refused (expired): forget it, use config.json's."""
    import os
    from lkd.device import log
    try:
        os.remove("refresh_token.json")
    except OSError:
        pass
    sv = dev._saved
    sv[0], sv[1], sv[3] = 0, 0, True
    log("token refused; trying config.json's")
    dev.token = json.loads(_config()).get("token")  # None with a token_url: fetch another


async def wait(dev):
    from lkd.device import log, _unload
    log("stopped: %s; will retry on a new token or a reset" % _WHY.get(dev.stopped, dev.stopped))
    dev.online = False
    dev._emit("stopped", dev.stopped)
    buf = bytearray(64)
    cfg = _digest(buf)
    poll = dev._saved[4]
    refused = hashlib.sha256(dev.token.encode()).digest() if dev.token else None
    looks = 0
    try:
        while True:
            await asyncio.sleep_ms(poll * 1000)
            looks += 1
            if _digest(buf) != cfg:
                try:
                    c = json.loads(_config())
                    dev.url = c["gateway"]
                    dev.token = c.get("token")  # None with a token_url: fetched on connect
                    dev._saved[3] = True
                    log("config.json changed; trying again")
                    return
                except (OSError, ValueError, KeyError):
                    pass  # half written, perhaps: look again
            if dev._token_fetch and looks % _FETCH_EVERY == 0:
                try:
                    tok = await dev._token_fetch()
                except Exception:
                    continue  # still refused, or unreachable: stay stopped
                finally:
                    _unload("token")
                if hashlib.sha256(tok.encode()).digest() != refused:
                    dev.token = tok
                    dev._saved[3] = True
                    log("token_url gave a new token; trying again")
                    return
    finally:
        dev.stopped = None
