"""`lkdevice provision`: the board's config.json (Wi-Fi, gateway, token), checked as the board checks it.

Secrets (the Wi-Fi password, a static token, a token server's device key) come
from the environment or a no-echo prompt; as arguments only with
--allow-cli-secrets, which warns. They are never printed, logged, or put in
an error message: a summary names them "(hidden, N characters)".
"""

from __future__ import annotations

import getpass
import json
import os
import re
import ssl
import sys
import tempfile
import time
from pathlib import Path

from . import UsageError, firmware
from .repl import BoardRepl

ENV = {"wifi_password": "LKD_WIFI_PASSWORD", "token": "LKD_TOKEN", "device_key": "LKD_DEVICE_KEY"}
CA_NAME = "ca.pem"


def _secret(args, attr: str, cli_value: str | None, prompt: str, *, allow_empty: bool = False) -> str:
    """A secret from the command line (only with --allow-cli-secrets), the environment, or a prompt."""
    env = ENV[attr]
    flag = "--" + attr.replace("_", "-")
    if cli_value:
        if not args.allow_cli_secrets:
            raise UsageError(f"{flag} on the command line stays in your shell history and shows in `ps`: "
                             f"set ${env} or let provision ask for it (or add --allow-cli-secrets)")
        print(f"warning: {flag} given as an argument: other users of this machine can see it in `ps`, "
              "and your shell history keeps it", file=sys.stderr)
        return cli_value
    value = os.environ.get(env)
    if value is not None:
        if value or allow_empty:
            return value
        raise UsageError(f"${env} is empty")
    if not sys.stdin.isatty():
        raise UsageError(f"no terminal to ask on: set ${env}")
    value = getpass.getpass(prompt)
    if not value and not allow_empty:
        raise UsageError(f"no {attr.replace('_', ' ')} given")
    return value


def check_ws_url(url: str, what: str = "--gateway") -> None:
    """What firmware/lkd/ws.py parse_url needs, said before the board fails on it."""
    m = re.fullmatch(r"(wss?)://([^/?#\s]*)([^\s]*)", url)
    if not m:
        raise UsageError(f"{what} {url!r}: must be a ws:// or wss:// URL, e.g. ws://192.168.1.20:8765/v1/device")
    hostport = m.group(2)
    if "@" in hostport:
        raise UsageError(f"{what}: no user or password in the URL; the board authenticates with its token")
    host, sep, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if not sep:
        host = hostport
    if not host.strip("[]"):
        raise UsageError(f"{what} {url!r}: no host")
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"{what} {url!r}: {port!r} is not a port number")
    if host in ("localhost", "127.0.0.1", "[::1]"):
        print(f"warning: {what} {url}: to a real board that is the board itself; it needs this computer's LAN "
              "address (a simulated board runs here, so there it is right)",
              file=sys.stderr)


def check_wifi(ssid: str, password: str) -> None:
    if not 1 <= len(ssid.encode()) <= 32:
        raise UsageError("--wifi: an SSID is 1 to 32 bytes")
    if password and not (8 <= len(password) <= 63 or re.fullmatch(r"[0-9a-fA-F]{64}", password)):
        raise UsageError("the Wi-Fi password must be 8 to 63 characters (WPA2), or empty for an open network")


def check_token(token: str) -> None:
    """A static token the board can use: a JWT that has not expired (the server checks the rest)."""
    from lkdevice.rtc.room import token_claims
    try:
        claims = token_claims(token)
    except Exception:
        raise UsageError("the token is not a LiveKit access token (a JWT: three base64url parts)") from None
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and exp < time.time():
        raise UsageError(f"the token expired at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(exp))}: "
                         "mint a new one")
    video = claims.get("video") or {}
    if not video.get("roomJoin") or not video.get("room"):
        raise UsageError("the token grants no room join (video.roomJoin and video.room): mint a device token")


def read_ca(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"--ca {path}: {e.strerror}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            ssl.PEM_cert_to_DER_cert(data.decode("ascii"))
        elif not data.startswith(b"\x30"):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"--ca {path}: not a certificate (PEM or DER)") from None
    return data


def build_config(args) -> tuple[dict, bytes | None]:
    """config.json's content from the arguments, and the CA file's bytes."""
    check_ws_url(args.gateway)
    cfg: dict = {"wifi": {"ssid": args.wifi}, "gateway": args.gateway, "codec": args.codec}
    if args.identity:
        cfg["identity"] = args.identity
    if args.token_url:
        if not re.fullmatch(r"https?://[^/\s]+\S*", args.token_url):
            raise UsageError(f"--token-url {args.token_url!r}: must be an http:// or https:// URL")
        cfg["token_url"] = args.token_url
    elif args.device_key is not None:
        raise UsageError("--device-key goes with --token-url (the token server checks it)")
    if args.volume is not None:
        if not 0 <= args.volume <= 100:
            raise UsageError("--volume: 0 to 100")
        cfg["volume"] = args.volume
    if args.push_to_talk:
        cfg["push_to_talk"] = True
    if args.half_duplex:
        cfg["half_duplex"] = True
    ca = None
    if args.ca:
        ca = read_ca(args.ca)
        cfg["ca"] = CA_NAME
    # the firmware's own rules, before asking for any secret
    _validate({**cfg, "wifi": {"ssid": args.wifi, "password": ""}, "token": cfg.get("token_url") or "t"})
    password = _secret(args, "wifi_password", args.wifi_password,
                       f"Wi-Fi password for {args.wifi} (empty for an open network): ", allow_empty=True)
    check_wifi(args.wifi, password)
    cfg["wifi"]["password"] = password
    if args.token_url:
        if args.device_key is not None or os.environ.get(ENV["device_key"]):
            cfg["device_key"] = _secret(args, "device_key", args.device_key, "device key for the token server: ")
    else:
        token = _secret(args, "token", args.token, "LiveKit access token for the board: ").strip()
        check_token(token)
        cfg["token"] = token
    _validate(cfg)
    return cfg, ca


def _validate(cfg: dict) -> None:
    configs = firmware.firmware_module("config")
    with tempfile.TemporaryDirectory(prefix="lkd-provision-") as d:
        path = os.path.join(d, "config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        try:
            configs.load(path)
        except ValueError as e:  # ConfigError; its message names only fields, never values
            raise UsageError(str(e).replace(path, "config.json")) from None


def summary(cfg: dict) -> str:
    """config.json in words, secrets hidden."""
    def hidden(v: str) -> str:
        return f"(hidden, {len(v)} characters)" if v else "(none: open network)"
    parts = [f"wifi {cfg['wifi']['ssid']!r} password {hidden(cfg['wifi']['password'])}",
             f"gateway {cfg['gateway']}"]
    if "token" in cfg:
        parts.append(f"token {hidden(cfg['token'])}")
    if "token_url" in cfg:
        parts.append(f"token_url {cfg['token_url']}" + (f" device_key {hidden(cfg['device_key'])}"
                                                        if "device_key" in cfg else ""))
    for k in ("identity", "codec", "ca", "volume", "push_to_talk", "half_duplex"):
        if k in cfg:
            parts.append(f"{k} {cfg[k]}")
    return "; ".join(parts)


def run(args) -> int:
    cfg, ca = build_config(args)
    data = json.dumps(cfg, indent=1).encode()
    with BoardRepl(args.port, connect_timeout=args.timeout) as repl:
        if ca is not None:
            repl.write_file(CA_NAME, ca)
        repl.write_file("config.json", data)
        print(f"wrote config.json on {repl.port}: {summary(cfg)}", flush=True)
        if repl.hashes(["main.py"])["main.py"] is None:
            print("the board has no firmware yet: lkdevice install --board NAME")
        if args.no_reset:
            print("not reset (--no-reset): reset the board to use the new config")
        else:
            repl.reset()
            print("board reset: it joins with the new config (lkdevice monitor shows its console)")
    return 0
