"""The firmware's DNS client (lkd/dns.py) on the MicroPython unix port against a
responder on 127.0.0.1 (tests/dns_responder.py): answers, the TTL cache, NXDOMAIN,
and a server that never answers, while a 20 ms task keeps ticking (a lookup must
not stall the mic, speaker and session). And the WebSocket connect uses it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..dns_responder import DnsResponder

ROOT = Path(__file__).resolve().parents[2]
MP = shutil.which("micropython")
pytestmark = pytest.mark.skipif(MP is None, reason="needs the micropython unix port")

PRELUDE = r"""
import json, time, asyncio
import lkd.dns as dns
out = {"err": None}
gaps = [0, 0]  # ticks, longest gap (ms)
async def ticker():
    last = time.ticks_ms()
    while True:
        await asyncio.sleep_ms(20)
        now = time.ticks_ms()
        gaps[0] += 1
        gaps[1] = max(gaps[1], time.ticks_diff(now, last))
        last = now
async def timed(coro):
    t = asyncio.create_task(ticker())
    await asyncio.sleep_ms(0)
    t0 = time.ticks_ms()
    try:
        return await coro
    except OSError as e:
        out["err"] = str(e)
    finally:
        out["ms"] = time.ticks_diff(time.ticks_ms(), t0)
        out["ticks"], out["gap"] = gaps
        t.cancel()
"""


def run_mp(script: str, dns_port: int, timeout: float = 30) -> dict:
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'hil' / 'sim'}:{ROOT / 'firmware'}:{ROOT / 'device'}:.frozen",
               LKD_HIL_DNS="127.0.0.1")
    r = subprocess.run([MP, "-c", PRELUDE + f"dns._port = {dns_port}\n" + script], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def responder():
    made = []

    def make(*a, **kw) -> DnsResponder:
        made.append(DnsResponder(*a, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_answers_are_cached_for_their_ttl(responder):
    dns = responder({"gw.example": ("10.1.2.3", 300), "short.example": ("10.9.9.9", 1),
                     "real.example": ("10.4.5.6", 60)}, cname={"alias.example": "real.example"})
    out = run_mp("""
async def main():
    out["a"] = await timed(dns.resolve("gw.example", 8765))
    out["again"] = await dns.resolve("gw.example", 443)
    out["alias"] = await dns.resolve("alias.example", 80)
    out["literal"] = await dns.resolve("192.168.1.20", 80)
    out["short"] = await dns.resolve("short.example", 80)
    await asyncio.sleep_ms(1200)
    out["short2"] = await dns.resolve("short.example", 80)
    for i in range(8):  # more names than the cache holds
        try:
            await dns.resolve("n%d.example" % i, 80)
        except OSError:
            pass
    out["cache"] = len(dns._cache)
asyncio.run(main())
print(json.dumps(out))
""", dns.port)
    assert out["a"] == ["10.1.2.3", 8765] and out["again"] == ["10.1.2.3", 443]
    assert out["alias"] == ["10.4.5.6", 80] and out["literal"] == ["192.168.1.20", 80]
    assert out["short"] == out["short2"] == ["10.9.9.9", 80]
    # cached: asked once; the 1 s TTL expired: asked twice; literals never
    assert dns.queries.count("gw.example") == 1
    assert dns.queries.count("short.example") == 2
    assert "192.168.1.20" not in dns.queries
    assert out["cache"] <= 4


def test_nxdomain_is_a_clear_error_at_once(responder):
    dns = responder({})
    out = run_mp("""
asyncio.run(timed(dns.resolve("nope.example", 80)))
print(json.dumps(out))
""", dns.port)
    assert out["err"] == "dns: nope.example: no such host (NXDOMAIN)"
    assert out["ms"] < 1000 and dns.queries == ["nope.example"]


def test_a_server_that_never_answers_times_out_and_the_loop_keeps_running(responder):
    dns = responder(silent=True)
    out = run_mp("""
asyncio.run(timed(dns.resolve("gw.example", 80)))
print(json.dumps(out))
""", dns.port)
    assert out["err"] == "dns: gw.example: no answer from 127.0.0.1 in 4500 ms"
    assert 4400 <= out["ms"] < 7000
    assert dns.queries == ["gw.example"] * 3  # three tries
    # the 20 ms task ran all along: no stall longer than a few frames (generous on a loaded machine)
    assert out["ticks"] >= 0.6 * out["ms"] / 20 and out["gap"] < 200, out


def test_websocket_connect_looks_names_up_without_blocking(responder):
    dns = responder(silent=True)
    out = run_mp("""
from lkd.ws import WebSocket
asyncio.run(timed(WebSocket().connect("ws://gateway.example:8765/v1/device")))
print(json.dumps(out))
""", dns.port)
    # the lease's DNS server was asked (not the system resolver), and the loop kept ticking
    assert dns.queries and set(dns.queries) == {"gateway.example"}
    assert out["err"].startswith("dns: gateway.example: no answer") and out["gap"] < 200, out


def test_websocket_connect_goes_to_the_address_the_name_has(responder):
    dns = responder({"gateway.example": ("127.0.0.1", 60)})
    out = run_mp("""
from lkd.ws import WebSocket
asyncio.run(timed(WebSocket().connect("ws://gateway.example:9/v1/device")))
print(json.dumps(out))
""", dns.port)
    assert dns.queries == ["gateway.example"]
    assert out["err"] is not None and "ECONNREFUSED" in out["err"], out  # the name led to 127.0.0.1:9
