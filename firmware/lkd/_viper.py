# Native (viper) inner loops. Imported through lkd.pcm, which falls back to
# plain Python on ports built without the native emitter.
import micropython


@micropython.viper
def mask(buf: ptr32, n: int):
    # WebSocket client masking in place. buf[4:8] holds the key and the
    # payload starts at buf[8]: both word-aligned, so XOR a word at a time.
    # The last word may run up to 3 bytes past n; callers leave that slack.
    k = buf[1]
    i = 2
    end = 2 + ((n + 3) >> 2)
    while i < end:
        buf[i] ^= k
        i += 1


@micropython.viper
def s32_to_s16(src: ptr8, dst: ptr8, n: int):
    # n 32-bit LE I2S slots (INMP441: 24 bits left-justified) -> top 16 bits.
    i = 0
    j = 0
    while i < n:
        dst[j] = src[4 * i + 2]
        dst[j + 1] = src[4 * i + 3]
        i += 1
        j += 2


@micropython.viper
def s16_to_s32(src: ptr8, dst: ptr8, n: int):
    i = 0
    while i < n:
        dst[4 * i] = 0
        dst[4 * i + 1] = 0
        dst[4 * i + 2] = src[2 * i]
        dst[4 * i + 3] = src[2 * i + 1]
        i += 1


@micropython.viper
def scale(buf: ptr16, n: int, gain: int):
    # Volume: samples * gain / 256, in place.
    i = 0
    while i < n:
        v = int(buf[i])
        if v & 0x8000:
            v -= 0x10000
        buf[i] = ((v * gain) >> 8) & 0xFFFF
        i += 1
