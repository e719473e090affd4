"""`lkdevice flash` up to the serial port: the image each board needs, the checks, and esptool's real API
talking to a fake ROM bootloader on a PTY (tests/esp_rom.py), so the chip check is esptool's own detection."""

from __future__ import annotations

import argparse
import json
import os
import pty
import struct
import subprocess
import sys
import tty
from pathlib import Path

import pytest

from lkdevice.host_tools.board import flash as fl
from tests.esp_rom import FLASH_BEGIN, FLASH_DEFL_BEGIN, FLASH_DATA, FLASH_DEFL_DATA, CHANGE_BAUDRATE, MEM_END, \
    FakeRom

ROOT = Path(__file__).resolve().parents[2]
BOARDS = sorted(p.stem for p in (ROOT / "boards").glob("*.json"))
WRITES = (FLASH_BEGIN, FLASH_DATA, FLASH_DEFL_BEGIN, FLASH_DEFL_DATA)

# What a user must download for each board file, checked against micropython.org/download/<BOARD>/ and
# MicroPython's ports/esp32/boards/*/board.json (flash_offset).
EXPECTED = {
    "esp32-s3-box-3": ("ESP32_GENERIC_S3", "SPIRAM_OCT", 0x0),
    "esp32-s3-devkitc-inmp441-max98357a": ("ESP32_GENERIC_S3", None, 0x0),
    "esp32-wroom-devkit-inmp441-max98357a": ("ESP32_GENERIC", None, 0x1000),
    "m5stack-atom-echo": ("ESP32_GENERIC", None, 0x1000),
    "xiao-esp32s3-sense": ("ESP32_GENERIC_S3", "SPIRAM_OCT", 0x0),
}


def esp_image(chip_id: int, size: int = 64 * 1024, seed: int = 1) -> bytes:
    """A well-formed ESP image header and one segment, then filler standing for the rest of the merged .bin."""
    import random
    rnd = random.Random(seed)
    seg = bytes(rnd.getrandbits(8) for _ in range(256))
    checksum = 0xEF
    for b in seg:
        checksum ^= b
    header = struct.pack("<BBBBI", 0xE9, 1, 2, 0x20, 0x40080400)
    extended = struct.pack("<BBBBHBHH4sB", 0xEE, 0, 0, 0, chip_id, 0, 0, 0xFFFF, b"\0" * 4, 0)
    body = header + extended + struct.pack("<II", 0x3FFE0000, len(seg)) + seg
    body += b"\0" * ((15 - len(body) % 16) % 16) + bytes([checksum])
    return body + bytes(rnd.getrandbits(8) for _ in range(size - len(body)))


def test_every_board_file_is_covered_here():
    assert sorted(EXPECTED) == [b for b in BOARDS if b != "sim"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_download_hint_is_one_line_naming_the_image_and_where(name):
    mp_board, variant, offset = EXPECTED[name]
    board = fl.load_board(name)
    hint = fl.download_hint(board)
    assert "\n" not in hint
    assert f"https://micropython.org/download/{mp_board}/" in hint
    assert f"--board {name} --image" in hint
    assert fl.chip_of(board).offset == offset
    if variant:
        assert f"variant {variant}" in hint and f"{mp_board}-{variant}-<date>" in hint
    else:
        assert "variant" not in hint and f"{mp_board}-<date>" in hint
    assert ("I2S.PDM_RX" in hint) == (board["mic"]["type"] == "pdm")


def test_flash_without_image_prints_the_hint_and_flashes_nothing(capsys):
    args = argparse.Namespace(board="esp32-s3-box-3", image=None, port=None, baud=460800, erase=False)
    assert fl.run(args) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "ESP32_GENERIC_S3" in out


def test_the_simulated_board_and_unknown_boards_are_refused_in_words():
    with pytest.raises(fl.FlashError, match="simulated board"):
        fl.chip_of(fl.load_board("sim"))
    with pytest.raises(fl.FlashError, match="no board 'esp33'.*esp32-s3-box-3"):
        fl.load_board("esp33")


def test_an_image_for_the_boards_chip_passes():
    fl.check_image(esp_image(9), fl.CHIPS["esp32s3"])
    fl.check_image(esp_image(0), fl.CHIPS["esp32"])


def test_an_image_for_another_chip_is_refused_naming_both():
    with pytest.raises(fl.FlashError, match="built for ESP32-S3, but the board file says ESP32: download the "
                                            "ESP32_GENERIC image"):
        fl.check_image(esp_image(9), fl.CHIPS["esp32"])
    with pytest.raises(fl.FlashError, match="built for ESP32-C3"):
        fl.check_image(esp_image(5), fl.CHIPS["esp32s3"])


def test_what_is_not_an_esp_image_is_refused():
    with pytest.raises(fl.FlashError, match="not an ESP firmware image: its first byte is 0x55"):
        fl.check_image(b"U" * 4096, fl.CHIPS["esp32"])
    with pytest.raises(fl.FlashError, match="UF2 file"):
        fl.check_image(b"UF2\n" + b"\0" * 600, fl.CHIPS["esp32s3"])
    with pytest.raises(fl.FlashError, match="too short"):
        fl.check_image(b"\xe9\x01", fl.CHIPS["esp32"])
    # a dump of the whole flash of an ESP32 (bootloader at 0x1000) is not the download page's .bin
    with pytest.raises(fl.FlashError, match="dump of the whole flash"):
        fl.check_image(b"\xff" * 0x1000 + esp_image(0), fl.CHIPS["esp32"])


def test_read_image_names_a_missing_file(tmp_path):
    with pytest.raises(fl.FlashError, match="cannot read .*nope.bin: No such file"):
        fl.read_image(tmp_path / "nope.bin", fl.CHIPS["esp32"])


def port(device, vid=None, pid=None):
    return fl.PortInfo(device, vid, pid)


def test_the_one_esp32_like_usb_serial_port_is_picked():
    ports = [port("/dev/ttyS0"), port("/dev/ttyUSB0", 0x10C4, 0xEA60), port("/dev/ttyACM3", 0x2341, 0x0043)]
    assert fl.pick_port(ports) == "/dev/ttyUSB0"
    assert fl.pick_port([port("/dev/ttyACM0", 0x303A, 0x1001)]) == "/dev/ttyACM0"
    assert fl.pick_port([port("/dev/ttyUSB1", 0x1A86, 0x7523)]) == "/dev/ttyUSB1"
    assert fl.pick_port([port("/dev/ttyUSB2", 0x0403, 0x6001)]) == "/dev/ttyUSB2"


def test_no_board_or_several_boards_say_what_to_do():
    with pytest.raises(fl.FlashError, match="no board found: is it plugged in"):
        fl.pick_port([port("/dev/ttyS0"), port("/dev/ttyACM3", 0x2341, 0x0043)])
    with pytest.raises(fl.FlashError, match=r"several boards found: /dev/ttyUSB0 \(CP210x\), /dev/ttyACM0 "
                                            r"\(Espressif USB-JTAG/serial\); choose one with --port"):
        fl.pick_port([port("/dev/ttyUSB0", 0x10C4, 0xEA60), port("/dev/ttyACM0", 0x303A, 0x1001)])


def test_flash_with_no_board_plugged_in_is_one_line_and_exit_1(monkeypatch, tmp_path, capsys):
    image = tmp_path / "mp.bin"
    image.write_bytes(esp_image(9))
    monkeypatch.setattr(fl, "list_ports", lambda: [port("/dev/ttyS0")])
    args = argparse.Namespace(board="esp32-s3-devkitc-inmp441-max98357a", image=str(image), port=None,
                              baud=460800, erase=False)
    assert fl.run(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no board found: is it plugged in") and err.count("\n") == 1


@pytest.mark.parametrize("chip,name", [("esp32", "esp32-wroom-devkit-inmp441-max98357a"),
                                       ("esp32s3", "esp32-s3-devkitc-inmp441-max98357a")])
def test_esptool_writes_the_image_at_the_chips_offset_and_verifies_it(chip, name):
    board = fl.load_board(name)
    image = esp_image(fl.CHIPS[chip].image_chip_id, 96 * 1024)
    offset = EXPECTED[name][2]
    progress = []
    with FakeRom(chip) as rom:
        result = fl.flash(board, image, rom.port, baud=460800, progress=lambda d, t: progress.append((d, t)))
    assert result.chip == fl.CHIPS[chip].esptool_name and result.offset == offset
    assert bytes(rom.flash[offset:offset + len(image)]) == image  # esptool's MD5 check passed on it too
    assert set(rom.flash[:offset]) <= {0xFF} and set(rom.flash[offset + len(image):]) == {0xFF}
    assert rom.wrote(MEM_END) and rom.wrote(CHANGE_BAUDRATE)  # the stub ran, at the asked rate
    assert progress[-1] == (len(image), len(image)) and len(progress) > 3
    assert all(b[0] <= c[0] for b, c in zip(progress, progress[1:]))


@pytest.mark.parametrize("erase", [False, True])
def test_erase_and_baud_reach_esptool(erase):
    board = fl.load_board("esp32-s3-devkitc-inmp441-max98357a")
    image = esp_image(9, 32 * 1024)
    with FakeRom("esp32s3") as rom:
        rom.flash[:] = b"\0" * len(rom.flash)  # what an earlier firmware left
        fl.flash(board, image, rom.port, baud=115200, erase=erase)
    assert bytes(rom.flash[:len(image)]) == image
    assert set(rom.flash[len(image):]) == ({0xFF} if erase else {0})
    assert not rom.wrote(CHANGE_BAUDRATE)  # the ROM's own 115200 kept


def test_a_write_that_fails_partway_is_one_line_with_the_slower_baud_to_try():
    board = fl.load_board("esp32-wroom-devkit-inmp441-max98357a")
    with FakeRom("esp32", fail_writes_after=2) as rom:
        with pytest.raises(fl.FlashError) as failed:
            fl.flash(board, esp_image(0, 256 * 1024), rom.port)
    message = str(failed.value)
    assert message.startswith(f"flashing failed on {rom.port}: ") and "\n" not in message
    assert message.endswith("if it failed partway, try --baud 115200")


def test_a_board_of_another_chip_is_refused_before_anything_is_written():
    board = fl.load_board("esp32-s3-devkitc-inmp441-max98357a")
    with FakeRom("esp32") as rom:
        with pytest.raises(fl.FlashError, match="is an ESP32, but board 'esp32-s3-devkitc-inmp441-max98357a' is "
                                                "an ESP32-S3: nothing was written"):
            fl.flash(board, esp_image(9), rom.port)
    assert not any(rom.wrote(op) for op in WRITES) and not rom.wrote(MEM_END)
    assert set(rom.flash) == {0xFF}


def test_the_command_flashes_through_a_pty_with_a_progress_bar(tmp_path):
    image = tmp_path / "ESP32_GENERIC-20250415-v1.25.0.bin"
    image.write_bytes(esp_image(0, 128 * 1024))
    with FakeRom("esp32") as rom:
        r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "flash", "--board",
                            "esp32-wroom-devkit-inmp441-max98357a", "--image", str(image), "--port", rom.port],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Writing [" in r.stderr and "100%" in r.stderr and "Traceback" not in r.stderr
    assert f"flashed MicroPython to the ESP32 on {rom.port}" in r.stdout
    assert bytes(rom.flash[0x1000:0x1000 + 128 * 1024]) == image.read_bytes()


def test_a_port_where_no_bootloader_answers_is_a_clear_error_not_a_traceback(tmp_path):
    image = tmp_path / "mp.bin"
    image.write_bytes(esp_image(0))
    master, slave = pty.openpty()  # a serial port with nothing behind it
    tty.setraw(slave)
    try:
        r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "flash", "--board",
                            "esp32-wroom-devkit-inmp441-max98357a", "--image", str(image), "--port",
                            os.ttyname(slave)], capture_output=True, text=True, timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1
    assert "error: no ESP32 bootloader answered on" in r.stderr and "hold the board's BOOT button" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_port_that_does_not_exist_is_named(tmp_path):
    image = tmp_path / "mp.bin"
    image.write_bytes(esp_image(0))
    r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "flash", "--board",
                        "esp32-wroom-devkit-inmp441-max98357a", "--image", str(image), "--port",
                        str(tmp_path / "ttyUSB9")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"error: no such port {tmp_path / 'ttyUSB9'}: is the board plugged in" in r.stderr


def test_the_board_files_chips_are_all_flashable_or_the_simulator():
    for name in BOARDS:
        chip = json.loads((ROOT / "boards" / f"{name}.json").read_text())["chip"]
        assert chip in fl.CHIPS or chip == "sim", name
