# Under MicroPython: queueing an audio frame for the WebSocket writer task
# (encoding into the socket's slot, header, fresh mask key, masking in place,
# waking the writer; replacing a frame not yet taken) allocates nothing once
# warm, nor does send_audio's copy into the slot.
# 100 frames of FrameEncoder.encode + WebSocket.send_tx run with the heap
# locked (any allocation raises MemoryError), then unlocked while
# gc.mem_alloc() counts bytes.
#   MICROPYPATH=firmware:device:.frozen micropython tests/mp/check_ws_writer_alloc.py
# Prints one line per codec and a final "OK" or "FAIL"; exits 1 on failure.

import gc
import sys

import micropython

import device_protocol as dp
from lkd import codec as fcodec  # the encoder the firmware uses (viper where it exists)
from lkd.ws import WebSocket

FRAMES = 100


def frames(ws, enc, pcm, n, count):
    for _ in range(count):
        enc.encode(pcm)
        ws.send_tx(n)
        ws.send_audio(enc.frame, n)  # the slot onto itself: the copy path


def check(codec):
    n = dp.HEADER_BYTES + dp.PAYLOAD_BYTES[codec]
    ws = WebSocket(rx_limit=256, tx_max=dp.MAX_BINARY_FRAME)
    ws.closed = False  # no socket: nothing takes the slot, so every frame after the first replaces one
    enc = fcodec.FrameEncoder(codec, ws.tx_payload(n))
    pcm = bytearray(dp.PCM_FRAME_BYTES)
    for i in range(len(pcm)):
        pcm[i] = (i * 7) & 0xFF
    frames(ws, enc, pcm, n, 5)  # warm-up
    gc.collect()
    locked = "ok"
    micropython.heap_lock()
    try:
        frames(ws, enc, pcm, n, FRAMES)
    except MemoryError:
        locked = "MemoryError"
    finally:
        micropython.heap_unlock()
    gc.collect()
    before = gc.mem_alloc()
    frames(ws, enc, pcm, n, FRAMES)
    used = gc.mem_alloc() - before
    print("%s: heap_lock %s, %d bytes allocated in %d frames, %d dropped"
          % (dp.CODEC_NAMES[codec], locked, used, FRAMES, ws.dropped_audio))
    return locked == "ok" and used == 0


def main():
    ok = True
    for codec in (dp.CODEC_PCM16, dp.CODEC_ULAW, dp.CODEC_ADPCM):
        if not check(codec):
            ok = False
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


sys.exit(main())
