# config.json on flash: Wi-Fi, gateway, identity and audio options.

import json

_DEFAULTS = {
    "identity": None,
    "token": None,
    "token_url": None,
    "codec": "pcm16",
    "board": None,
    "ca": None,
    "push_to_talk": False,
    "half_duplex": False,
    "volume": 80,
    "wdt_ms": 10000,
    "device_key": None,  # sent to token_url as "Authorization: Bearer ..."
    "stopped_poll_s": 30,  # a stopped board looks at config.json this often (lkd/stop.py)
}


class ConfigError(ValueError):
    pass


def load(path="config.json", token=None):
    """config.json, checked. With `token` (the file refresh_token.json, on the
    board: boot.py), the newer of config.json's token and the one saved there."""
    try:
        with open(path) as f:
            c = json.load(f)
    except OSError:
        raise ConfigError("%s: not found on flash" % path)
    except ValueError:
        raise ConfigError("%s: not valid JSON" % path)
    if not isinstance(c, dict):
        raise ConfigError("%s: must be a JSON object" % path)
    for k in _DEFAULTS:
        if k not in c:
            c[k] = _DEFAULTS[k]
    w = c.get("wifi")
    if not isinstance(w, dict) or not isinstance(w.get("ssid"), str):
        raise ConfigError("%s: needs wifi.ssid (and wifi.password)" % path)
    url = c.get("gateway")
    if not isinstance(url, str) or not (url.startswith("ws://") or url.startswith("wss://")):
        raise ConfigError("%s: gateway must be a ws:// or wss:// URL" % path)
    if url.startswith("wss://") and not c["ca"]:
        raise ConfigError("%s: a wss:// gateway needs 'ca', the CA certificate file on flash" % path)
    if not c["token"] and not c["token_url"]:
        raise ConfigError("%s: needs 'token' or 'token_url'" % path)
    tu = c["token_url"]
    if tu is not None and not (isinstance(tu, str) and (tu.startswith("http://") or tu.startswith("https://"))):
        raise ConfigError("%s: token_url must be an http:// or https:// URL" % path)
    if tu and tu.startswith("https://") and not c["ca"]:
        raise ConfigError("%s: an https:// token_url needs 'ca', the CA certificate file on flash" % path)
    if c["codec"] not in ("pcm16", "ulaw", "adpcm"):
        raise ConfigError("%s: codec must be pcm16, ulaw or adpcm" % path)
    if token is None:
        return c  # the host's checks (lkdevice provision) stop here
    # the token: config.json's, or the newer one a previous boot saved on flash
    # (device.py keeps refreshed ones there, see keep); the file names the
    # token it descends from by a digest, so a re-provisioned board ignores it
    import binascii
    import hashlib
    tok = c["token"]
    org = binascii.hexlify(hashlib.sha256((tok or c["token_url"]).encode()).digest()[:8]).decode()
    try:
        with open(token) as f:
            saved = json.load(f)
        saved = saved["token"] if saved.get("from") == org else None
    except Exception:  # none, or unreadable: config.json's token it is
        saved = None
    nbf, exp = _claims(saved) if saved else (0, 0)
    # what the session keeps of this (device.py, one attribute: each name costs
    # a qstr): [nbf, exp] of the saved token, the digest naming its origin,
    # whether the token in use is config.json's (or token_url's), and how
    # often a stopped board looks at config.json (lkd/stop.py)
    c["_saved"] = [nbf, exp, org, True, c["stopped_poll_s"]]
    if saved and (not tok or exp > _claims(tok)[1]):
        print("[lkd] token: the newer one saved on flash")
        c["token"] = saved
        c["_saved"][3] = False
    return c


def keep(d):
    # a refreshed token (d.token, d the Device) from the gateway: on flash when none is saved
    # or the saved one has used half its life (flash wear: LiveKit's refresh
    # tokens live 10 min, so about one write in 5 minutes), to a temporary
    # file renamed over the old one: a power cut leaves the old file or the
    # new one, never half of one
    import os
    from lkd.device import log
    sv = d._saved
    sv[3] = False
    nbf, exp = sv[0], sv[1]
    new = _claims(d.token)[1]
    if new > exp and (not exp or new - exp > ((exp - nbf) if exp > nbf > 0 else 3600) // 2):
        try:
            with open("refresh_token.tmp", "w") as f:
                json.dump({"from": sv[2], "token": d.token}, f)
            os.rename("refresh_token.tmp", "refresh_token.json")
            sv[0], sv[1] = _claims(d.token)
            log("token saved on flash")
        except OSError as e:
            log("token not saved: %r" % e)


def _claims(p):
    # (nbf, exp) of a JWT, read without verifying; (0, 0) if unreadable. The
    # two numbers are found in the decoded payload rather than parsing it to a
    # dict, and it is decoded 64 characters at a time (a copy of the whole
    # ~550-byte token, at the moment of a refresh, failed at 128K with 2 KB
    # free in pieces); bytes constants, as short str ones would cost qstrs
    import binascii
    try:
        i = p.find(".") + 1
        j = p.find(".", i)
        mv = memoryview(p)  # the str's bytes, not copied
        out = [0, 0]
        tail = b""
        while 0 < i < j:
            c = bytes(mv[i:min(i + 64, j)]).replace(b"-", b"+").replace(b"_", b"/")
            i += 64
            # the last 24 decoded bytes go on: a key and its number fit in them
            w = tail + binascii.a2b_base64(c + b"=" * (-len(c) % 4))
            for n, k in enumerate((b'"nbf":', b'"exp":')):
                s = w.find(k)
                if s >= 0:
                    s += 6
                    e = s
                    while e < len(w) and w[e] in b" 0123456789":
                        e += 1
                    if e < len(w) or i >= j:  # else the number goes on in the next piece
                        out[n] = int(w[s:e])
            tail = w[-24:]
        return out[0], out[1]
    except Exception:
        return 0, 0
