# MicroPython half of bench/firmware_codec.py: the firmware's per-frame work,
# timed on the MicroPython unix port. Run by firmware_codec.py as
#   MICROPYPATH=device:firmware micropython [-X heapsize=...] bench/mp_firmware_codec.py REPS ITERS
# Prints one JSON object: per operation, microseconds per 20 ms frame (the
# median over REPS repetitions of ITERS frames each) and the bytes the heap
# grew by per frame (gc disabled while timing, so an allocation shows up).
import gc
import json
import math
import sys
import time

import device_protocol as dp

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
ITERS = int(sys.argv[2]) if len(sys.argv) > 2 else 50


def tone_pcm():
    # 20 ms of a 440 Hz tone at -10 dBFS, 16 kHz int16 LE (the codecs' work
    # depends a little on the signal; silence would flatter ADPCM).
    b = bytearray(dp.PCM_FRAME_BYTES)
    for i in range(dp.FRAME_SAMPLES):
        v = int(10362 * math.sin(2 * math.pi * 440 * i / 16000)) & 0xFFFF
        b[2 * i] = v & 0xFF
        b[2 * i + 1] = v >> 8
    return b


def timeit(fn):
    """(median us per call over REPS runs of ITERS calls, heap bytes allocated per call)."""
    fn()  # warm: first-call allocations (caches, bound methods) do not count
    per = []
    alloc = 0
    for _ in range(REPS):
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()
        t0 = time.ticks_us()
        for _ in range(ITERS):
            fn()
        dt = time.ticks_diff(time.ticks_us(), t0)
        a1 = gc.mem_alloc()
        gc.enable()
        per.append(dt / ITERS)
        alloc = max(alloc, a1 - a0)
    per.sort()
    return per[len(per) // 2], alloc / ITERS


def main():
    pcm = tone_pcm()
    out = bytearray(dp.PCM_FRAME_BYTES)
    results = {}

    def loop_overhead():
        pass

    base, _ = timeit(loop_overhead)
    results["_call_overhead"] = {"us": base}

    for codec in (dp.CODEC_PCM16, dp.CODEC_ULAW, dp.CODEC_ADPCM):
        name = dp.CODEC_NAMES[codec]
        enc = dp.FrameEncoder(codec)
        frame = bytes(enc.encode(pcm))

        def encode(enc=enc):
            enc.encode(pcm)

        def decode(codec=codec, frame=frame):
            dp.decode_payload_into(codec, frame, out)

        us, alloc = timeit(encode)
        results[name + "_encode"] = {"us": us, "alloc_bytes_per_frame": alloc,
                                     "what": "device_protocol.FrameEncoder(%s).encode(640 B PCM)" % name}
        us, alloc = timeit(decode)
        results[name + "_decode"] = {"us": us, "alloc_bytes_per_frame": alloc,
                                     "what": "device_protocol.decode_payload_into(%s, %d B frame, out)"
                                             % (name, len(frame))}

    # The firmware's own codecs (lkd.codec: viper where the port has it, which
    # is what the firmware runs), on the same tone.
    try:
        from lkd import codec as fc
        for codec in (dp.CODEC_ULAW, dp.CODEC_ADPCM):
            name = dp.CODEC_NAMES[codec]
            enc = fc.FrameEncoder(codec)
            frame = bytes(enc.encode(pcm))

            def encode(enc=enc):
                enc.encode(pcm)

            def decode(codec=codec, frame=frame):
                fc.decode_payload_into(codec, frame, out)

            us, alloc = timeit(encode)
            results[name + "_encode_viper"] = {"us": us, "alloc_bytes_per_frame": alloc, "impl": fc.IMPL,
                                               "what": "lkd.codec.FrameEncoder(%s).encode(640 B PCM)" % name}
            us, alloc = timeit(decode)
            results[name + "_decode_viper"] = {"us": us, "alloc_bytes_per_frame": alloc, "impl": fc.IMPL,
                                               "what": "lkd.codec.decode_payload_into(%s, %d B frame, out)"
                                                       % (name, len(frame))}
    except ImportError as exc:
        results["ulaw_encode_viper"] = {"error": "lkd.codec not importable: %r" % (exc,)}

    # WebSocket client masking exactly as the firmware sends an audio frame.
    try:
        from lkd import pcm as lkd_pcm
        from lkd.ws import WebSocket
        try:
            import lkd._viper  # noqa: F401
            impl = "viper (lkd._viper.mask)"
        except Exception as exc:  # the firmware falls back to plain Python
            impl = "python fallback (lkd.pcm.mask): %r" % (exc,)
        ws = WebSocket()
        n = dp.MAX_BINARY_FRAME  # 648: a PCM16 frame, header included
        frame = dp.FrameEncoder(dp.CODEC_PCM16).encode(pcm)

        def mask_only():
            lkd_pcm.mask(ws.tx, n)

        class NullWriter:
            def write(self, b):
                pass

        ws.writer = NullWriter()
        ws.closed = False

        def send_binary():
            ws.send_binary(frame, n)

        us, alloc = timeit(mask_only)
        results["ws_mask_648"] = {"us": us, "alloc_bytes_per_frame": alloc, "impl": impl,
                                  "what": "lkd.pcm.mask(tx, 648): the firmware's in-place client masking"}
        us, alloc = timeit(send_binary)
        results["ws_send_binary_648"] = {"us": us, "alloc_bytes_per_frame": alloc,
                                         "what": "lkd.ws.WebSocket.send_binary(frame, 648) with a no-op "
                                                 "writer: copy, header, random key, mask"}
    except ImportError as exc:
        results["ws_mask_648"] = {"error": "firmware WebSocket module not importable: %r" % (exc,)}

    print(json.dumps({"implementation": "micropython %s" % ".".join(str(x) for x in sys.implementation.version),
                      "reps": REPS, "iters": ITERS, "results": results}))


main()
