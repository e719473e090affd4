"""The firmware's viper codecs (firmware/lkd/_codec_viper.py through lkd.codec)
against device_protocol, the reference, on the MicroPython unix port: every
codec vector, all mu-law inputs, ADPCM edge signals, and no allocation per
frame (tests/mp/check_codec_viper.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "mp" / "check_codec_viper.py"
MICROPYTHON = shutil.which("micropython")


@pytest.mark.skipif(MICROPYTHON is None, reason="the `micropython` command is not on PATH")
def test_viper_codecs_match_device_protocol_and_allocate_nothing():
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(
        str(ROOT / d) for d in ("device", "firmware", "tests/mp")))
    r = subprocess.run([MICROPYTHON, str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    # 256 decode + 138 encode + 21 frame-check + 10 stream vectors, plus the
    # exhaustive, edge-signal and heap-lock checks: a shrinking count means
    # vectors were skipped
    assert last.startswith("OK ") and int(last[3:]) >= 442, r.stdout

def test_without_viper_the_firmware_codecs_are_device_protocols():
    """Where `micropython.viper` is missing (here CPython, where importing
    `micropython` fails) lkd.codec hands out device_protocol's own functions."""
    code = ("import sys; sys.path[:0] = ['device', 'firmware']\n"
            "import device_protocol as dp\n"
            "from lkd import codec\n"
            "assert codec.IMPL == 'python', codec.IMPL\n"
            "for k in ('FrameEncoder', 'ulaw_encode_into', 'ulaw_decode_into', 'adpcm_decode_into',"
            " 'decode_payload_into'):\n"
            "    assert getattr(codec, k) is getattr(dp, k), k\n"
            "print('python')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "python", r.stdout + r.stderr
