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
}


class ConfigError(ValueError):
    pass


def load(path="config.json"):
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
    if c["codec"] not in ("pcm16", "ulaw", "adpcm"):
        raise ConfigError("%s: codec must be pcm16, ulaw or adpcm" % path)
    return c
