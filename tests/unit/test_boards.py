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
    assert b["mic"]["i2s_id"] != b["speaker"]["i2s_id"]


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
