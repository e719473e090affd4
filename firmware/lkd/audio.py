# I2S microphone and speaker, driven through asyncio streams so the DMA
# paces both loops. All buffers are allocated once here.

import asyncio
from machine import I2S, Pin
from device_protocol import PCM_FRAME_BYTES, FRAME_SAMPLES
from lkd.pcm import s32_to_s16, s16_to_s32, scale


def _pins(cfg):
    if cfg["type"] == "pdm":
        # PDM: the clock goes out on the word-select line (ports with I2S.PDM_RX)
        mode = getattr(I2S, "PDM_RX", None)
        if mode is None:
            raise OSError("this MicroPython build has no I2S.PDM_RX; a PDM microphone needs a port with PDM support")
        return mode, None, Pin(cfg["clk"])
    return None, Pin(cfg["sck"]), Pin(cfg["ws"])


class Mic:
    """Reads 20 ms frames of 16-bit PCM into a FrameRing."""

    def __init__(self, cfg, ring, on_frame):
        mode, sck, ws = _pins(cfg)
        self.bits = cfg["bits"]
        kw = {}
        if cfg.get("mck") is not None:
            kw["mck"] = Pin(cfg["mck"])
        self.i2s = I2S(cfg["i2s_id"], sck=sck, ws=ws, sd=Pin(cfg["sd"]), mode=I2S.RX if mode is None else mode,
                       bits=self.bits, format=I2S.MONO, rate=cfg["rate"], ibuf=cfg["ibuf"], **kw)
        self.raw = bytearray(FRAME_SAMPLES * self.bits // 8)
        self.rawmv = memoryview(self.raw)
        self.ring = ring
        self.on_frame = on_frame  # called after each committed frame
        self.frames = 0

    async def run(self):
        reader = asyncio.StreamReader(self.i2s)
        raw = self.rawmv
        full = len(self.raw)
        fill = 0
        while True:
            n = await reader.readinto(raw[fill:])
            if not n:
                continue
            fill += n
            if fill < full:
                continue
            fill = 0
            slot = self.ring.writable()
            if self.bits == 32:
                s32_to_s16(raw, slot, FRAME_SAMPLES)
            else:
                slot[:] = raw
            self.ring.commit()
            self.frames += 1
            self.on_frame()


class Speaker:
    """Plays 20 ms frames pulled from a source (the jitter buffer) at the I2S pace."""

    def __init__(self, cfg, pull):
        self.bits = cfg["bits"]
        kw = {}
        if cfg.get("mck") is not None:
            kw["mck"] = Pin(cfg["mck"])
        if cfg.get("amp_enable") is not None:
            self.amp = Pin(cfg["amp_enable"], Pin.OUT, value=1)
        self.i2s = I2S(cfg["i2s_id"], sck=Pin(cfg["sck"]), ws=Pin(cfg["ws"]), sd=Pin(cfg["sd"]), mode=I2S.TX,
                       bits=self.bits, format=I2S.MONO, rate=cfg["rate"], ibuf=cfg["ibuf"], **kw)
        self.pcm = bytearray(PCM_FRAME_BYTES)
        self.out = self.pcm if self.bits == 16 else bytearray(FRAME_SAMPLES * 4)
        self.outmv = memoryview(self.out)
        self.pull = pull  # pull(buf) -> True when buf holds real audio
        self.gain = 256  # x/256
        self.active = False  # real audio in the last frame

    def set_volume(self, percent):
        percent = max(0, min(100, int(percent)))
        self.gain = percent * 256 // 100
        return percent

    async def run(self):
        writer = asyncio.StreamWriter(self.i2s, {})
        pcm = self.pcm
        while True:
            self.active = self.pull(pcm)
            if self.active and self.gain != 256:
                scale(pcm, FRAME_SAMPLES, self.gain)
            if self.bits == 32:
                s16_to_s32(pcm, self.out, FRAME_SAMPLES)
            # Hand the buffer to drain() directly: it waits for room in the
            # DMA buffer first and copies nothing (MicroPython's I2S idiom).
            writer.out_buf = self.outmv
            await writer.drain()
