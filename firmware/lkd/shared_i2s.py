# One I2S peripheral for a board whose microphone and speaker share pins
# (boards/*.json "shared_pins"). MicroPython's machine.I2S has one direction
# per instance, and two peripherals cannot drive the same GPIO, so the one
# instance is reconfigured in place with I2S.init() (on the ESP32 port: the
# channel deleted and made anew on the same peripheral, DMA buffers outside
# the Python heap, no new object): the microphone while the far side is
# silent, the speaker while there is audio to play and for a short hangover
# after it, so that pauses between words do not flap the pins. Half duplex by
# construction; while the speaker has the pins the uplink gets silence at the
# speaker's pace, as from a gated microphone. Only the task that has the pins
# switches them, between two of its frames, so no stream waits on the wrong
# direction.

import asyncio
from micropython import const
from device_protocol import FRAME_SAMPLES, PCM_FRAME_BYTES
from lkd.audio import Mic, Speaker
from lkd.i2s_setup import configure
from lkd.pcm import s32_to_s16

_HANGOVER = const(15)  # frames (300 ms) of silence from the far side before the microphone gets the pins back
_QUIET = const(300)  # |sample| at or below this (about -40 dBFS) is silence


def _loud(pcm):
    # A far side keeps sending frames of silence between its words (libwebrtc
    # does): frames alone would keep the pins on the speaker for ever. Every
    # 13th sample (a stride no common pitch period divides) is enough to tell.
    for i in range(0, PCM_FRAME_BYTES, 26):
        v = pcm[i] | (pcm[i + 1] << 8)
        if _QUIET < v < 65536 - _QUIET:
            return True
    return False


class Bus:
    def __init__(self, mic_cfg, spk_cfg):
        self.mcfg = mic_cfg
        self.scfg = spk_cfg
        self.i2s = configure(mic_cfg, True)  # the agent is silent at first: listen
        self.rx = True
        self.turn = (asyncio.Event(), asyncio.Event())  # set: the speaker's / the microphone's turn
        self.turn[1].set()
        self.quiet = 0
        self.turns = 0
        self.mic = self.speaker = None

    async def wait(self, who):
        """Until `who` (Mic or Speaker) has the pins; True for the speaker: its pcm holds the first frame."""
        await self.turn[who is self.mic].wait()
        return who is self.speaker

    def tick(self, who):
        # after each frame of the task that has the pins
        spk = self.speaker
        if who is self.mic:
            # anything to play? The jitter buffer is pulled at the mic's pace, as the speaker would
            # (active: audible, here; the device gates the microphone on it)
            spk.active = spk.pull(spk.pcm) and _loud(spk.pcm)
            spk.frames += 1
            if spk.active:
                self._switch(False)
            return
        mic = self.mic
        slot = mic.ring.writable()  # the uplink keeps its pace
        if mic.bits == 32:
            s32_to_s16(mic.raw, slot, FRAME_SAMPLES)
        else:
            slot[:] = mic.raw  # zeroed when the speaker got the pins (no buffer of its own: the heap is tight)
        mic.ring.commit()
        mic.frames += 1
        mic.on_frame()
        spk.active = spk.active and _loud(spk.pcm)
        self.quiet = 0 if spk.active else self.quiet + 1
        if self.quiet >= _HANGOVER:
            self._switch(True)

    def _switch(self, rx):
        configure(self.mcfg if rx else self.scfg, rx, self.i2s)
        self.rx = rx
        self.quiet = 0
        self.turns += 1
        amp = self.speaker.amp
        if amp is not None:
            amp.value(0 if rx else 1)
        if not rx:
            raw = self.mic.raw
            for i in range(len(raw)):
                raw[i] = 0
        self.turn[not rx].clear()
        self.turn[rx].set()


def open(mic_cfg, spk_cfg, ring, on_frame, pull):
    """(Mic, Speaker) sharing one I2S."""
    bus = Bus(mic_cfg, spk_cfg)
    bus.speaker = spk = Speaker(spk_cfg, pull, bus.i2s)
    bus.mic = mic = Mic(mic_cfg, ring, on_frame, bus.i2s)
    spk.bus = mic.bus = bus
    if spk.amp is not None:
        spk.amp.value(0)  # the amplifier stays off while the microphones listen
    return mic, spk
