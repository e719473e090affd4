"""The report a run writes: one junit testcase per scenario per repeat, repeats side by side, PNG plots."""

from __future__ import annotations

import json
import wave
import xml.etree.ElementTree as ET

import numpy as np

from lkdevice.hil import report
from lkdevice.hil.runner import RunResult
from lkdevice.hil.scenario import FAILED, PASSED, SKIPPED, Figure, ScenarioResult, StepResult
from lkdevice.hil.target import Identity

from ..jwt_shapes import unsigned_jwt

# a token's shape, made at run time: no token sits in the repository
TOKEN = unsigned_jwt({"sub": "esp32", "room": "r"}, b"signaturesignature")


def run() -> RunResult:
    ident = Identity("sim-esp32", firmware_hash="abc123", micropython="1.29", board="boards/sim.json",
                     git_commit="deadbeef", extra={"heap": "136K"})
    r = RunResult("sim-esp32", "ci", 2, ident, started=1_800_000_000.0, elapsed_s=42.0)
    for rep, status in ((1, PASSED), (2, FAILED)):
        res = ScenarioResult("cycles", rep, status, "" if status == PASSED else
                             f"memory: the firmware heap grows 4096 B/cycle after warm-up (limit 512); token {TOKEN}",
                             elapsed_s=30.0, steps=[StepResult("cycle 1/3", elapsed_s=3.1)],
                             figures={"heap_growth_per_cycle": Figure(4096.0 if rep == 2 else 3.0, "B/cycle")},
                             series={"heap at each cycle's end": {"x": "cycle", "y": "bytes",
                                                                  "points": [[1, 100], [2, 200], [3, 300]]}},
                             recordings={"speaker": (np.zeros(1600, np.int16), 16000)})
        r.results.append(res)
    r.results += [ScenarioResult("data-rpc-out", k, SKIPPED, "the robot app has no API for sending data")
                  for k in (1, 2)]
    return r


def test_the_report_files_say_what_happened(tmp_path):
    out = report.write(run(), tmp_path / "rep", secrets=["secret"])
    d = json.loads((out / "report.json").read_text())
    assert d["identity"]["firmware_hash"] == "abc123" and d["summary"] == {"passed": 1, "failed": 1, "skipped": 2}
    assert [s["status"] for s in d["results"]] == ["passed", "failed", "skipped", "skipped"]
    assert d["results"][1]["recordings"] == ["cycles-2-speaker.wav"]
    with wave.open(str(out / "cycles-2-speaker.wav")) as w:
        assert (w.getframerate(), w.getnframes()) == (16000, 1600)

    suite = ET.parse(out / "junit.xml").getroot()
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["cycles[1]", "cycles[2]", "data-rpc-out[1]", "data-rpc-out[2]"]
    props = {p.get("name"): p.get("value") for p in cases[1].find("properties")}
    assert props["heap_growth_per_cycle"] == "4096 B/cycle"
    assert "4096 B/cycle" in cases[1].find("failure").get("message")
    assert cases[2].find("skipped").get("message").startswith("the robot app")

    md = (out / "report.md").read_text()
    assert "| cycles | pass | FAIL |" in md and "| data-rpc-out | skip | skip |" in md
    assert "cycles#2 FAIL: memory: the firmware heap grows 4096 B/cycle" in md
    png = out / "cycles-heap-at-each-cycle-s-end.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cycles-heap-at-each-cycle-s-end.png" in (out / "report.html").read_text()


def test_no_token_reaches_a_report(tmp_path):
    out = report.write(run(), tmp_path, secrets=["secret"])
    for name in ("report.json", "junit.xml", "report.md", "report.html"):
        text = (out / name).read_text()
        assert TOKEN not in text and "[token]" in text, name
