# Native (viper) G.711 mu-law and IMA ADPCM: the same bytes as device_protocol's
# plain-Python functions (the reference), about 40x faster on the x64 unix port
# (bench/firmware_codec.py). Imported through lkd.codec, which falls back to
# device_protocol on ports without viper.
# Tables are device_protocol's own (bytes / array), read through ptr8/ptr16:
# viper indexes a buffer at machine speed but a tuple or list only through the
# object layer. Byte pointers throughout: an Xtensa 16-bit load must be aligned
# and a frame payload sits at an odd offset of the socket buffer.
# Four arguments at most (older viper emitters take no more).
import micropython
from device_protocol import _ULAW_SEG, _ULAW_DECODE, _STEPS


@micropython.viper
def ulaw_encode(pcm: ptr8, out: ptr8, n: int):
    seg_t = ptr8(_ULAW_SEG)
    i = 0
    j = 0
    while i < n:
        s = pcm[j] | (pcm[j + 1] << 8)
        j += 2
        if s & 0x8000:
            a = 0x10000 - s
            m = a >> 2
            if a & 3:  # the reference shifts the signed sample: it rounds down
                m += 1
            mask = 0x7F
        else:
            m = s >> 2
            mask = 0xFF
        if m > 8159:
            m = 8159
        m += 0x21
        seg = seg_t[m >> 6]
        if seg >= 8:
            out[i] = 0x7F ^ mask
        else:
            out[i] = ((seg << 4) | ((m >> (seg + 1)) & 0x0F)) ^ mask
        i += 1


@micropython.viper
def ulaw_decode(src: ptr8, out: ptr8, n: int, off: int):
    t = ptr16(_ULAW_DECODE)
    i = 0
    j = 0
    while i < n:
        v = t[src[off + i]]
        out[j] = v & 0xFF
        out[j + 1] = (v >> 8) & 0xFF
        i += 1
        j += 2


@micropython.viper
def adpcm_encode(pcm: ptr8, out: ptr8, n: int, state: int) -> int:
    # state and the result: predictor in the low 16 bits, step index << 16
    # (a small int, so returning it allocates nothing). out gets the 4-byte
    # frame header (start state) and n // 2 bytes of codes.
    steps = ptr16(_STEPS)
    valpred = state & 0xFFFF
    if valpred & 0x8000:
        valpred -= 0x10000
    index = (state >> 16) & 0xFF
    out[0] = valpred & 0xFF
    out[1] = (valpred >> 8) & 0xFF
    out[2] = index
    out[3] = 0
    i = 0
    j = 0
    o = 4
    low = 0
    while i < n:
        s = pcm[j] | (pcm[j + 1] << 8)
        j += 2
        if s & 0x8000:
            s -= 0x10000
        step = int(steps[index])
        diff = s - valpred
        sign = 0
        if diff < 0:
            sign = 8
            diff = 0 - diff
        delta = 0
        vpdiff = step >> 3
        if diff >= step:
            delta = 4
            diff -= step
            vpdiff += step
        step >>= 1
        if diff >= step:
            delta |= 2
            diff -= step
            vpdiff += step
        step >>= 1
        if diff >= step:
            delta |= 1
            vpdiff += step
        if sign:
            valpred -= vpdiff
            if valpred < -32768:
                valpred = -32768
        else:
            valpred += vpdiff
            if valpred > 32767:
                valpred = 32767
        # IMA index table: -1 for magnitudes 0..3, then 2, 4, 6, 8
        if delta < 4:
            index -= 1
            if index < 0:
                index = 0
        else:
            index += (delta - 3) << 1
            if index > 88:
                index = 88
        delta |= sign
        if i & 1:
            out[o] = low | (delta << 4)
            o += 1
        else:
            low = delta
        i += 1
    if n & 1:
        out[o] = low
    return (index << 16) | (valpred & 0xFFFF)


@micropython.viper
def adpcm_decode(src: ptr8, out: ptr8, n: int, off: int):
    # the caller has checked the step index in the header (<= 88)
    steps = ptr16(_STEPS)
    valpred = src[off] | (src[off + 1] << 8)
    if valpred & 0x8000:
        valpred -= 0x10000
    index = src[off + 2]
    p = off + 4
    i = 0
    j = 0
    while i < n:
        b = src[p + (i >> 1)]
        if i & 1:
            delta = b >> 4
        else:
            delta = b & 0x0F
        step = int(steps[index])
        vpdiff = step >> 3
        if delta & 4:
            vpdiff += step
        if delta & 2:
            vpdiff += step >> 1
        if delta & 1:
            vpdiff += step >> 2
        if delta & 8:
            valpred -= vpdiff
            if valpred < -32768:
                valpred = -32768
        else:
            valpred += vpdiff
            if valpred > 32767:
                valpred = 32767
        if delta & 7 < 4:
            index -= 1
            if index < 0:
                index = 0
        else:
            index += ((delta & 7) - 3) << 1
            if index > 88:
                index = 88
        out[j] = valpred & 0xFF
        out[j + 1] = (valpred >> 8) & 0xFF
        i += 1
        j += 2
