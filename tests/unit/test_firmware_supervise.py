"""lkd.supervise.Supervisor on the MicroPython unix port: a deadline, a
stall, a death; once failed, never healthy again (the watchdog then resets the
board). The whole firmware with faults made on purpose: tests/live/test_firmware_faults.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MP = shutil.which("micropython")
pytestmark = pytest.mark.skipif(MP is None, reason="needs the micropython unix port")


SUPERVISOR = r"""
import json, time, asyncio
from lkd.supervise import Supervisor
out = {}
s = Supervisor()
a = s.add("mic", 100)
b = s.add("session", 100)
s.expect(b, 300, "token_url")
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 250:
    s.count(a, time.ticks_ms())  # progress
    assert s.poll()
    time.sleep_ms(10)
out["within_deadline"] = s.poll()
time.sleep_ms(80)
s.count(a, -1)
out["past_deadline"] = s.poll()
out["why"] = s.failed
s2 = Supervisor()
c = s2.add("speaker", 100)
s2.count(c, 5)
time.sleep_ms(60)
s2.count(c, 5)  # the same count: no progress
out["early"] = s2.poll()
time.sleep_ms(60)
out["stalled"] = s2.poll()
out["why2"] = s2.failed
s4 = Supervisor()
f = s4.add("session", 50)
s4.expect(f, -1, "told not to rejoin")
time.sleep_ms(120)
out["parked"] = s4.poll()
s4.expect(f, 0, None)
time.sleep_ms(80)
out["unparked_stalls"] = s4.poll()
s3 = Supervisor()
async def boom():
    await asyncio.sleep_ms(1)
    raise ValueError("led")
async def main():
    d = s3.add("mic", 10000, asyncio.create_task(boom()))
    out["alive"] = s3.poll()
    await asyncio.sleep_ms(20)
    out["died"] = s3.poll()
    s3.expect(d, 0, None)
    out["stays_failed"] = s3.poll()
asyncio.run(main())
out["why3"] = s3.failed
print(json.dumps(out))
"""


def test_supervisor_deadlines_stalls_and_deaths():
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'hil' / 'sim'}:{ROOT / 'firmware'}:.frozen")
    r = subprocess.run([MP, "-c", SUPERVISOR], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["within_deadline"] is True
    assert out["past_deadline"] is False
    assert out["why"] == "fault task=session reason=deadline what=token_url"
    assert out["early"] is True and out["stalled"] is False
    assert out["why2"].startswith("fault task=speaker reason=stalled ms=")
    assert out["parked"] is True and out["unparked_stalls"] is False  # -1: waits on purpose, no deadline
    assert out["alive"] is True
    assert out["died"] is False and out["why3"] == "fault task=mic reason=died error=ValueError('led',)"
    assert out["stays_failed"] is False  # once failed, the board is not fed again
    assert "[lkd] fault task=session reason=deadline what=token_url" in r.stdout
