# Sample-level helpers: viper where the port has a native emitter, plain
# Python otherwise (same results, slower).
try:
    from lkd._viper import mask, s32_to_s16, s16_to_s32, scale
except (ImportError, SyntaxError, ValueError, NotImplementedError):
    def mask(buf, n):
        k = buf[4:8]
        for i in range(n):
            buf[8 + i] ^= k[i & 3]

    def s32_to_s16(src, dst, n):
        for i in range(n):
            dst[2 * i] = src[4 * i + 2]
            dst[2 * i + 1] = src[4 * i + 3]

    def s16_to_s32(src, dst, n):
        for i in range(n):
            dst[4 * i] = 0
            dst[4 * i + 1] = 0
            dst[4 * i + 2] = src[2 * i]
            dst[4 * i + 3] = src[2 * i + 1]

    def scale(buf, n, gain):
        for i in range(n):
            v = buf[2 * i] | (buf[2 * i + 1] << 8)
            if v & 0x8000:
                v -= 0x10000
            v = ((v * gain) >> 8) & 0xFFFF
            buf[2 * i] = v & 0xFF
            buf[2 * i + 1] = v >> 8
