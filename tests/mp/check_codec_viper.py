# Under MicroPython: the firmware's viper codecs (lkd.codec, lkd._codec_viper)
# give device_protocol's bytes (the reference) and allocate nothing per frame.
#   MICROPYPATH=device:firmware:tests/mp micropython tests/mp/check_codec_viper.py [vectors.json]
# - every codec vector of tests/vectors/device_protocol.json (ulaw_encode,
#   ulaw_decode, streams, frame_checks) run by run_device_protocol_vectors's own
#   checks against a device_protocol whose codec functions are lkd.codec's;
# - all 65536 inputs of mu-law encode and all 256 of decode against device_protocol;
# - ADPCM on noise, full-scale squares and odd lengths (clamping, every step
#   index), and decode of arbitrary frames with every valid step index;
# - 100 frames per codec of encode + decode with the heap locked.
# Prints one line per failure and a final "OK n" (n checks) or "FAIL n"; exits 1 on failure.
import gc
import sys

import micropython

import device_protocol as dp
import run_device_protocol_vectors as runner
from lkd import codec

CODEC_SECTIONS = ("ulaw_encode", "ulaw_decode", "streams", "frame_checks")
_failures = []
_count = [0]


def expect(ok, why):
    _count[0] += 1
    if not ok:
        _failures.append(why)
        print("FAIL " + why)


class _Shim:
    pass


def viper_dp():
    # device_protocol with lkd.codec's functions in place of its codec functions
    shim = _Shim()
    for k in dir(dp):
        if not k.startswith("__"):
            setattr(shim, k, getattr(dp, k))
    for k in ("FrameEncoder", "ulaw_encode_into", "ulaw_decode_into", "adpcm_decode_into",
              "decode_payload_into"):
        setattr(shim, k, getattr(codec, k))
    return shim


def check_vectors(path):
    shim = viper_dp()
    data = runner.load(path)
    for section in CODEC_SECTIONS:
        for v in data[section]:
            why = runner.check(shim, section, v)
            expect(why is None, "%s/%s: %s" % (section, v["name"], why))


def check_ulaw_exhaustive():
    chunk = 4096  # samples at a time: 8 KB of PCM, not 128 KB, on a small heap
    pcm = bytearray(2 * chunk)
    want = bytearray(chunk)
    got = bytearray(chunk)
    bad = 0
    for base in range(-32768, 32768, chunk):
        for i in range(chunk):
            u = (base + i) & 0xFFFF
            pcm[2 * i] = u & 0xFF
            pcm[2 * i + 1] = u >> 8
        dp.ulaw_encode_into(pcm, want, chunk)
        codec.ulaw_encode_into(pcm, got, chunk)
        if got != want:
            bad += 1
    expect(bad == 0, "ulaw encode: %d of 16 chunks of 4096 samples differ from device_protocol" % bad)
    src = bytes(range(256))
    want = bytearray(512)
    got = bytearray(512)
    dp.ulaw_decode_into(src, want, 256)
    codec.ulaw_decode_into(src, got, 256)
    expect(got == want, "ulaw decode of all 256 bytes differs from device_protocol")


class Lcg:
    # fixed-seed integer generator: the same inputs on every run and interpreter
    def __init__(self, seed):
        self.x = seed

    def next(self):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return self.x >> 15


def signal(kind, rnd, k):
    pcm = bytearray(dp.PCM_FRAME_BYTES)
    for i in range(dp.FRAME_SAMPLES):
        if kind == "noise":
            v = rnd.next() & 0xFFFF
        elif kind == "square":  # full scale, both rails: predictor clamping
            v = 0x7FFF if ((k * dp.FRAME_SAMPLES + i) // 7) & 1 else 0x8000
        elif kind == "quiet":  # small steps after loud ones: the index walks down
            v = (rnd.next() & 0x1F) - 16 & 0xFFFF
        else:
            v = 0
        pcm[2 * i] = v & 0xFF
        pcm[2 * i + 1] = v >> 8
    return pcm


def check_streams():
    rnd = Lcg(12345)
    for c in (dp.CODEC_PCM16, dp.CODEC_ULAW, dp.CODEC_ADPCM):
        ref = dp.FrameEncoder(c)
        vip = codec.FrameEncoder(c)
        ref.seq = vip.seq = 0xFFF0
        ref.timestamp = vip.timestamp = 0xFFFFF000  # both counters wrap in the run
        out_ref = bytearray(dp.PCM_FRAME_BYTES)
        out_vip = bytearray(dp.PCM_FRAME_BYTES)
        bad = 0
        k = 0
        for kind in ("noise", "square", "quiet", "noise", "silence", "square"):
            for _ in range(6):
                pcm = signal(kind, rnd, k)
                k += 1
                a = bytes(ref.encode(pcm))
                b = bytes(vip.encode(pcm))
                dp.decode_payload_into(c, a, out_ref)
                codec.decode_payload_into(c, a, out_vip)
                if a != b or out_ref != out_vip:
                    bad += 1
        expect(bad == 0, "%s: %d of %d frames differ from device_protocol" % (dp.CODEC_NAMES[c], bad, k))
        expect(vip.seq == ref.seq and vip.timestamp == ref.timestamp,
               "%s: encoder counters differ" % dp.CODEC_NAMES[c])


def check_adpcm_odd_and_arbitrary():
    from lkd import _codec_viper as v
    rnd = Lcg(777)
    pcm = signal("noise", rnd, 0)
    for n in (1, 2, 3, 7, 319):
        a = dp.AdpcmEncoder()
        a.predictor = -1234
        a.index = 40
        want = bytearray(4 + (n + 1) // 2)
        got = bytearray(len(want))
        a.encode_into(pcm, want, n)
        state = v.adpcm_encode(pcm, got, n, (40 << 16) | (-1234 & 0xFFFF))
        p = state & 0xFFFF
        p = p - 0x10000 if p & 0x8000 else p
        expect(got == want and p == a.predictor and state >> 16 == a.index,
               "adpcm encode of %d samples differs from AdpcmEncoder" % n)
    # the gateway may send any codes: decode random frames at every valid index
    frame = bytearray(dp.HEADER_BYTES + dp.PAYLOAD_BYTES[dp.CODEC_ADPCM])
    want = bytearray(dp.PCM_FRAME_BYTES)
    got = bytearray(dp.PCM_FRAME_BYTES)
    bad = 0
    for index in range(89):
        for i in range(len(frame)):
            frame[i] = rnd.next() & 0xFF
        frame[dp.HEADER_BYTES + 2] = index
        dp.adpcm_decode_into(frame, want, dp.FRAME_SAMPLES, dp.HEADER_BYTES)
        codec.adpcm_decode_into(frame, got, dp.FRAME_SAMPLES, dp.HEADER_BYTES)
        if got != want:
            bad += 1
    expect(bad == 0, "adpcm decode: %d of 89 random frames differ from device_protocol" % bad)


def _frames(enc, c, pcm, out, slot, n):
    for _ in range(n):
        f = enc.encode(pcm)
        codec.decode_payload_into(c, f, out)
        if c == dp.CODEC_ULAW:
            codec.ulaw_decode_into(slot, out, dp.FRAME_SAMPLES)
        elif c == dp.CODEC_ADPCM:
            codec.adpcm_decode_into(slot, out, dp.FRAME_SAMPLES)


def check_alloc():
    pcm = signal("noise", Lcg(1), 0)
    for c in (dp.CODEC_ULAW, dp.CODEC_ADPCM):
        enc = codec.FrameEncoder(c)
        out = bytearray(dp.PCM_FRAME_BYTES)
        slot = memoryview(enc.frame)[dp.HEADER_BYTES:]  # a jitter buffer slot, as device.decode_into gets
        _frames(enc, c, pcm, out, slot, 3)
        gc.collect()
        locked = "ok"
        micropython.heap_lock()
        try:
            _frames(enc, c, pcm, out, slot, 100)
        except MemoryError:
            locked = "MemoryError"
        finally:
            micropython.heap_unlock()
        expect(locked == "ok", "%s: 100 frames with the heap locked: %s" % (dp.CODEC_NAMES[c], locked))


def main(argv):
    expect(codec.IMPL == "viper", "lkd.codec fell back to %s: no viper on this port" % codec.IMPL)
    path = argv[1] if len(argv) > 1 else runner.default_path()
    check_vectors(path)
    check_ulaw_exhaustive()
    check_streams()
    check_adpcm_odd_and_arbitrary()
    check_alloc()
    if _failures:
        print("FAIL %d of %d" % (len(_failures), _count[0]))
        return 1
    print("OK %d" % _count[0])
    return 0


sys.exit(main(sys.argv))
