# Under MicroPython: the per-frame audio path of device_protocol allocates
# nothing once warm. For each codec, 100 frames of encode + check_frame +
# decode_payload_into run with the heap locked (any allocation raises
# MemoryError), then again unlocked while gc.mem_alloc() counts bytes.
#   MICROPYPATH=device micropython tests/mp/check_device_protocol_alloc.py
# Prints one line per codec and a final "OK" or "FAIL"; exits 1 on failure.

import gc
import sys

import micropython

import device_protocol as dp

FRAMES = 100


def tone():
    # a 400 Hz triangle, integers only: no float maths in the check itself
    pcm = bytearray(dp.PCM_FRAME_BYTES)
    for i in range(dp.FRAME_SAMPLES):
        p = i % 40
        v = (p * 1600 - 16000) if p < 20 else ((40 - p) * 1600 - 16000)
        v &= 0xFFFF
        pcm[2 * i] = v & 0xFF
        pcm[2 * i + 1] = v >> 8
    return pcm


def frames(enc, codec, pcm, out, n):
    for _ in range(n):
        f = enc.encode(pcm)
        dp.check_frame(f, codec)
        dp.decode_payload_into(codec, f, out)


def check(codec, pcm):
    enc = dp.FrameEncoder(codec)
    out = bytearray(dp.PCM_FRAME_BYTES)
    frames(enc, codec, pcm, out, 3)  # warm-up
    gc.collect()
    locked = "ok"
    micropython.heap_lock()
    try:
        frames(enc, codec, pcm, out, FRAMES)
    except MemoryError:
        locked = "MemoryError"
    finally:
        micropython.heap_unlock()
    gc.collect()
    before = gc.mem_alloc()
    frames(enc, codec, pcm, out, FRAMES)
    used = gc.mem_alloc() - before
    print("%s: heap_lock %s, %d bytes allocated in %d frames" % (dp.CODEC_NAMES[codec], locked, used, FRAMES))
    return locked == "ok" and used == 0


def main():
    pcm = tone()
    ok = True
    for codec in (dp.CODEC_PCM16, dp.CODEC_ULAW, dp.CODEC_ADPCM):
        if not check(codec, pcm):
            ok = False
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


sys.exit(main())
