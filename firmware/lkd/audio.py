# I2S microphone and speaker, driven through asyncio streams so the DMA
# paces both loops. All buffers are allocated once here.
#
# A board whose microphone and speaker share pins has one I2S peripheral,
# switched between them (lkd.shared_i2s, loaded only by those boards); the others
# run one peripheral per direction, both always on. lkd.i2s_setup opens them.

import asyncio
from machine import Pin
from device_protocol import PCM_FRAME_BYTES, FRAME_SAMPLES
from lkd.pcm import s32_to_s16, s16_to_s32, scale


class Mic:
    """Reads 20 ms frames of 16-bit PCM into a FrameRing."""

    def __init__(self, cfg, ring, on_frame, i2s):
        self.bits = cfg["bits"]
        self.i2s = i2s
        self.raw = bytearray(FRAME_SAMPLES * self.bits // 8)
        self.rawmv = memoryview(self.raw)
        self.ring = ring
        self.on_frame = on_frame  # called after each committed frame
        self.frames = 0
        self.bus = None  # lkd.shared_i2s.Bus on boards that share one I2S

    async def run(self):
        reader = asyncio.StreamReader(self.i2s)
        raw = self.rawmv
        full = len(self.raw)
        fill = 0
        bus = self.bus
        while True:
            if bus is not None and not bus.rx:
                fill = 0  # the speaker has the pins
                await bus.wait(self)
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
            if bus is not None:
                bus.tick(self)  # may hand the I2S to the speaker


class Speaker:
    """Plays 20 ms frames pulled from a source (the jitter buffer) at the I2S pace."""

    def __init__(self, cfg, pull, i2s):
        self.bits = cfg["bits"]
        self.amp = None
        if cfg.get("amp_enable") is not None:
            self.amp = Pin(cfg["amp_enable"], Pin.OUT, value=1)
        self.i2s = i2s
        self.pcm = bytearray(PCM_FRAME_BYTES)
        self.out = self.pcm if self.bits == 16 else bytearray(FRAME_SAMPLES * 4)
        self.outmv = memoryview(self.out)
        self.pull = pull  # pull(buf) -> True when buf holds real audio
        self.gain = 256  # x/256
        self.active = False  # real audio in the last frame
        self.frames = 0
        self.bus = None

    def set_volume(self, percent):
        percent = max(0, min(100, int(percent)))
        self.gain = percent * 256 // 100
        return percent

    async def run(self):
        writer = asyncio.StreamWriter(self.i2s, {})
        pcm = self.pcm
        bus = self.bus
        primed = False
        while True:
            if bus is not None and bus.rx:
                # the microphone has the pins until there is audio; then pcm holds its first frame
                primed = await bus.wait(self)
            if primed:
                primed = False
            else:
                self.active = self.pull(pcm)
            if self.active and self.gain != 256:
                scale(pcm, FRAME_SAMPLES, self.gain)
            if self.bits == 32:
                s16_to_s32(pcm, self.out, FRAME_SAMPLES)
            # Hand the buffer to drain() directly: it waits for room in the
            # DMA buffer first and copies nothing (MicroPython's I2S idiom).
            writer.out_buf = self.outmv
            await writer.drain()
            self.frames += 1
            if bus is not None:
                bus.tick(self)  # may hand the I2S back to the microphone
