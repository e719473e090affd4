"""Firmware cost per 20 ms audio frame: codecs and WebSocket masking.

Times the work the ESP32 firmware does for every 20 ms frame (16 kHz mono,
320 samples) on the MicroPython unix port, beside CPython doing the same work:

- codecs through the device-protocol module the firmware runs
  (`device_protocol.FrameEncoder(codec).encode`, `decode_payload_into`):
  PCM16 copy, G.711 mu-law encode/decode, IMA ADPCM encode/decode;
- the same codecs as the firmware runs them (`lkd.codec`: viper versions of
  mu-law and ADPCM, firmware/lkd/_codec_viper.py), reported beside the plain
  Python as `micropython_viper_us` and `plain_over_viper`;
- WebSocket client masking of a 648-byte binary frame (a PCM16 audio frame) with
  the firmware's own function (`lkd.pcm.mask`, viper where the port has the
  native emitter), and the firmware's whole `WebSocket.send_binary` minus the
  socket write (copy, header, random key, mask).

MicroPython runs bench/mp_firmware_codec.py with MICROPYPATH=.frozen:device:firmware
(.frozen keeps the port's frozen asyncio importable), under -X heapsize (default
128K, the firmware's budget). CPython runs the same pure-Python device_protocol
functions, then audioop (lin2ulaw/ulaw2lin/lin2adpcm/adpcm2lin) and numpy
(masking as np.bitwise_xor over a uint32 view with the key tiled) as the
C-speed reference, plus websockets' own C masking. Figures: microseconds per
frame, the median of --reps repetitions of --iters frames, and the share of the
20 ms frame budget. No network; no isolation needed.

    python bench/firmware_codec.py [--reps 9] [--iters 50] [--heapsize 128K]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # noqa: E402  (deprecated in 3.11, gone in 3.13: the reference codecs)

from lkdevice import device_protocol as dp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAME_BUDGET_US = dp.FRAME_MS * 1000.0


def tone_pcm() -> bytes:
    """20 ms of 440 Hz at -10 dBFS, the same samples as the MicroPython half."""
    b = bytearray(dp.PCM_FRAME_BYTES)
    for i in range(dp.FRAME_SAMPLES):
        v = int(10362 * math.sin(2 * math.pi * 440 * i / 16000)) & 0xFFFF
        b[2 * i] = v & 0xFF
        b[2 * i + 1] = v >> 8
    return bytes(b)


def timeit(fn, reps: int, iters: int) -> float:
    """Median over `reps` of the mean microseconds per call over `iters` calls."""
    fn()
    per = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(iters):
            fn()
        per.append((time.perf_counter_ns() - t0) / 1000.0 / iters)
    return float(np.median(per))


def cpython(reps: int, iters: int) -> dict:
    pcm = tone_pcm()
    out = bytearray(dp.PCM_FRAME_BYTES)
    res: dict[str, dict] = {}
    # the firmware's own pure-Python codec module, under CPython
    for codec in (dp.CODEC_PCM16, dp.CODEC_ULAW, dp.CODEC_ADPCM):
        name = dp.CODEC_NAMES[codec]
        enc = dp.FrameEncoder(codec)
        frame = bytes(enc.encode(pcm))
        res[f"{name}_encode"] = {"us": timeit(lambda: enc.encode(pcm), reps, iters)}
        res[f"{name}_decode"] = {"us": timeit(lambda: dp.decode_payload_into(codec, frame, out), reps, iters)}
    # mask: the same in-place loop as the firmware's fallback, in pure Python
    tx = bytearray(8 + 648)
    tx[4:8] = b"\x12\x34\x56\x78"

    def py_mask():
        k = tx[4:8]
        for i in range(648):
            tx[8 + i] ^= k[i & 3]

    res["ws_mask_648"] = {"us": timeit(py_mask, reps, max(1, iters // 5)),
                          "what": "the firmware's plain-Python fallback loop (lkd.pcm.mask without viper)"}

    # C-speed reference: audioop and numpy
    ref: dict[str, dict] = {}
    u = audioop.lin2ulaw(pcm, 2)
    a, _ = audioop.lin2adpcm(pcm, 2, None)
    buf = bytearray(dp.PCM_FRAME_BYTES)
    ref["pcm16_encode"] = {"us": timeit(lambda: buf.__setitem__(slice(None), pcm), reps, iters * 20),
                           "what": "bytearray slice copy of 640 B"}
    ref["pcm16_decode"] = ref["pcm16_encode"]
    ref["ulaw_encode"] = {"us": timeit(lambda: audioop.lin2ulaw(pcm, 2), reps, iters * 20), "what": "audioop.lin2ulaw"}
    ref["ulaw_decode"] = {"us": timeit(lambda: audioop.ulaw2lin(u, 2), reps, iters * 20), "what": "audioop.ulaw2lin"}
    ref["adpcm_encode"] = {"us": timeit(lambda: audioop.lin2adpcm(pcm, 2, (0, 0)), reps, iters * 20),
                           "what": "audioop.lin2adpcm"}
    ref["adpcm_decode"] = {"us": timeit(lambda: audioop.adpcm2lin(a, 2, (0, 0)), reps, iters * 20),
                           "what": "audioop.adpcm2lin"}
    payload = np.frombuffer(bytearray(648), dtype=np.uint32)
    key = np.frombuffer(b"\x12\x34\x56\x78", dtype=np.uint32)
    tiled = np.tile(key, payload.size)
    ref["ws_mask_648"] = {"us": timeit(lambda: np.bitwise_xor(payload, tiled, out=payload), reps, iters * 20),
                          "what": "np.bitwise_xor in place over a uint32 view, key tiled"}
    try:
        from websockets.speedups import apply_mask  # type: ignore[attr-defined]

        data = bytes(648)
        ref["ws_mask_648_websockets"] = {"us": timeit(lambda: apply_mask(data, b"\x12\x34\x56\x78"), reps,
                                                      iters * 20),
                                         "what": "websockets.speedups.apply_mask (C, returns new bytes)"}
    except ImportError:
        pass
    return {"device_protocol_pure_python": res, "c_reference": ref}


def micropython(reps: int, iters: int, heapsize: str) -> dict:
    exe = shutil.which("micropython")
    if exe is None:
        return {"error": "no micropython on PATH"}
    env = dict(os.environ, MICROPYPATH=".frozen:" + os.path.join(ROOT, "device") + ":" + os.path.join(ROOT, "firmware"))
    cmd = [exe, "-X", f"heapsize={heapsize}", os.path.join(ROOT, "bench", "mp_firmware_codec.py"), str(reps), str(iters)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-2000:] or f"exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["heapsize"] = heapsize
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=9, help="repetitions; the median is reported (default 9)")
    p.add_argument("--iters", type=int, default=50, help="frames per repetition (default 50)")
    p.add_argument("--heapsize", default="128K", help="MicroPython -X heapsize (default 128K)")
    args = p.parse_args()

    mp = micropython(args.reps, args.iters, args.heapsize)
    cp = cpython(args.reps, args.iters)
    ops = ["pcm16_encode", "pcm16_decode", "ulaw_encode", "ulaw_decode", "adpcm_encode", "adpcm_decode",
           "ws_mask_648", "ws_send_binary_648"]
    table = {}
    mpr = mp.get("results", {})
    for op in ops:
        row: dict = {}
        m = mpr.get(op)
        if m and "us" in m:
            row["micropython_us"] = round(m["us"], 2)
            row["micropython_budget_pct"] = round(100 * m["us"] / FRAME_BUDGET_US, 3)
            row["micropython_alloc_bytes_per_frame"] = m.get("alloc_bytes_per_frame")
        c = cp["device_protocol_pure_python"].get(op)
        if c:
            row["cpython_same_python_us"] = round(c["us"], 2)
        r = cp["c_reference"].get(op)
        if r:
            row["cpython_c_reference_us"] = round(r["us"], 3)
            row["c_reference"] = r["what"]
        if "micropython_us" in row and row.get("cpython_c_reference_us"):
            row["micropython_over_c_reference"] = round(row["micropython_us"] / row["cpython_c_reference_us"], 1)
        v = mpr.get(op + "_viper")
        if v and "us" in v:
            row["micropython_viper_us"] = round(v["us"], 2)
            row["micropython_viper_impl"] = v.get("impl")
            row["micropython_viper_budget_pct"] = round(100 * v["us"] / FRAME_BUDGET_US, 3)
            row["micropython_viper_alloc_bytes_per_frame"] = v.get("alloc_bytes_per_frame")
            if "micropython_us" in row:
                row["plain_over_viper"] = round(row["micropython_us"] / v["us"], 1)
            if row.get("cpython_c_reference_us"):
                row["micropython_viper_over_c_reference"] = round(v["us"] / row["cpython_c_reference_us"], 1)
        if row:
            table[op] = row
    # one frame each way, as the firmware runs per codec: encode + (mask via send_binary) + decode
    per_codec = {}
    for name in dp.CODEC_NAMES:
        try:
            us = mpr[name + "_encode"]["us"] + mpr[name + "_decode"]["us"] + mpr["ws_send_binary_648"]["us"]
            per_codec[name] = {"us": round(us, 1), "budget_pct": round(100 * us / FRAME_BUDGET_US, 2)}
        except KeyError:
            pass
    # the same with the firmware's own codecs (lkd.codec, viper): what a board runs
    per_codec_fw = {}
    for name in dp.CODEC_NAMES:
        enc_r = mpr.get(name + "_encode_viper") or mpr.get(name + "_encode")
        dec_r = mpr.get(name + "_decode_viper") or mpr.get(name + "_decode")
        try:
            us = enc_r["us"] + dec_r["us"] + mpr["ws_send_binary_648"]["us"]
            per_codec_fw[name] = {"us": round(us, 1), "budget_pct": round(100 * us / FRAME_BUDGET_US, 2)}
        except (KeyError, TypeError):
            pass
    result = {
        "benchmark": "firmware_codec",
        "unit": "microseconds per 20 ms frame (16 kHz mono, 320 samples); median of repetitions",
        "frame_budget_us": FRAME_BUDGET_US,
        "table": table,
        "micropython_per_frame_both_ways": per_codec,
        "micropython_per_frame_both_ways_firmware_codecs": per_codec_fw,
        "micropython": mp,
        "cpython": cp,
        "environment": {"cpu": cpu_model(), "python": platform.python_version(), "numpy": np.__version__,
                        "reps": args.reps, "iters": args.iters},
        "note": "x86 figures; an ESP32 is slower by a factor this bench does not measure",
    }
    print(json.dumps(result, indent=2))
    return 0 if "error" not in mp else 1


if __name__ == "__main__":
    sys.exit(main())
