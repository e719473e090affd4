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
    from lkd.keep import _claims  # (on the board only: the host's checks stopped above)
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
