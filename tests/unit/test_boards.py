"""Every board file validates with the firmware's own loader; bad ones say which field."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware"))
from lkd import board as boards  # noqa: E402  (the firmware module, plain Python)

BOARD_FILES = sorted((ROOT / "boards").glob("*.json"))
REQUIRED = {"esp32-s3-devkitc-inmp441-max98357a", "esp32-s3-box-3", "m5stack-atom-echo", "xiao-esp32s3-sense",
            "esp32-wroom-devkit-inmp441-max98357a", "sim"}


def test_required_boards_exist():
    assert REQUIRED <= {p.stem for p in BOARD_FILES}


@pytest.mark.parametrize("path", BOARD_FILES, ids=lambda p: p.stem)
def test_board_file_validates(path):
    b = boards.load(str(path))
    assert b["name"] == path.stem
    assert b["mic"]["rate"] == b["speaker"]["rate"] == 16000
    if b["shared_pins"]:
        # one peripheral, switched between directions (firmware/lkd/duplex.py)
        assert b["mic"]["i2s_id"] == b["speaker"]["i2s_id"]
    else:
        assert b["mic"]["i2s_id"] != b["speaker"]["i2s_id"]


def test_the_boards_that_share_pins_say_so():
    # ATOM Echo: G33 is the PDM clock and the amplifier's LRCK; BOX-3: one I2S bus for both codecs
    for name, pin in (("m5stack-atom-echo", 33), ("esp32-s3-box-3", 17)):
        b = boards.load(str(ROOT / "boards" / f"{name}.json"))
        pins = [{b[d].get(k) for k in ("sck", "ws", "clk", "sd", "mck")} for d in ("mic", "speaker")]
        assert b["shared_pins"] and pin in pins[0] and pin in pins[1]


def _sim():
    return json.loads((ROOT / "boards" / "sim.json").read_text())


@pytest.mark.parametrize("mutate, field", [
    (lambda b: b["mic"].pop("sd"), "mic: missing field 'sd'"),
    (lambda b: b.pop("chip"), "missing field 'chip'"),
    (lambda b: b.update(chip="esp8266"), "board.chip"),
    (lambda b: b["speaker"].update(rate=44100), "speaker.rate"),
    (lambda b: b["mic"].update(bits=24), "mic.bits"),
    (lambda b: b["speaker"].update(sck=99), "speaker.sck"),
    (lambda b: b["speaker"].update(i2s_id=0), "i2s_id"),
    (lambda b: b["led"].update(type="rgb"), "led.type"),
    (lambda b: b["speaker"].update(type="pdm"), "speaker.type"),
    (lambda b: b["speaker"].update(sck=4), "mic and speaker share GPIO 4; set shared_pins: true"),
    (lambda b: b.update(shared_pins=True), "give both the same i2s_id"),
    (lambda b: b["mic"].update(type="pdm", clk=4, i2s_id=1, bits=16) or b["speaker"].update(i2s_id=0),
     "PDM microphones need I2S 0"),
    (lambda b: b.update(micropython=""), "board.micropython"),
    (lambda b: b.update(codec={"chips": []}), "codec: missing field 'i2c'"),
    (lambda b: b.update(codec={"i2c": {"sda": 8, "scl": 18}, "chips": [{"chip": "wm8960", "addr": 26}]}),
     "codec.chips[0].chip"),
    (lambda b: b.update(codec={"i2c": {"sda": 8, "scl": 18}, "chips": [{"chip": "es8311", "addr": 0x18}]}),
     "'bclk' needs speaker.bits 32"),
    (lambda b: b.update(codec={"i2c": {"sda": 8, "scl": 18}, "chips": [{"chip": "es7210", "addr": 200}]}),
     "codec.chips[0].addr"),
    (lambda b: b.update(codec={"i2c": {"sda": 8, "scl": 18}, "chips": [{"addr": 0x1a, "init": [[1, 300]]}]}),
     "codec.chips[0].init"),
])
def test_bad_board_names_the_field(mutate, field):
    b = _sim()
    mutate(b)
    with pytest.raises(boards.BoardError) as e:
        boards.validate(copy.deepcopy(b))
    assert field in str(e.value)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(boards.BoardError, match="copy one of boards"):
        boards.load(str(tmp_path / "board.json"))
