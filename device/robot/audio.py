"""The robot's microphone and speaker: sounddevice, WAV files, or none.

The speaker is pulled, not pushed: the sound card's output callback takes
samples from a small bounded ring (`PlayoutRing`), and when the ring runs low
the event loop decodes the next frames from the room's jitter buffer
(`AudioStream.read_frame`) and resamples them to the card's rate
(`SpeakerFeed`). So the agent's speech leaves at the card's pace, whatever its
clock's drift from ours, and at most a few frames wait between the jitter
buffer and the card. The WAV backend does the same on a wall-clock tick.

The microphone goes the other way: each captured block is written into the
published `MicrophoneTrack`, which resamples it to what the Opus encoder takes.
`HalfDuplexGate` mutes it while the speaker plays audible sound, for robots
without echo cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Protocol

import numpy as np

from ..rtc.audio import AudioChunk, Resampler, tone
from ..rtc.wavfile import WavWriter, wav_chunks

BACKENDS = ("sounddevice", "wav", "none")
FRAME_MS = 20
Clock = Callable[[], float]


class FrameSource(Protocol):
    """What the speaker pulls from: `AudioStream` (rtc/playout.py) is one."""

    def read_frame(self) -> AudioChunk: ...

    @property
    def ended(self) -> bool: ...


class HalfDuplexGate:
    """Closed while the speaker plays audible sound and for `hangover_s` after it."""

    def __init__(self, enabled: bool = False, *, threshold_rms: float = 300.0, hangover_s: float = 0.3,
                 clock: Clock = time.monotonic):
        self.enabled = enabled
        self.threshold_rms = threshold_rms
        self.hangover_s = hangover_s
        self._clock = clock
        self._until = float("-inf")
        self.frames_muted = 0

    def heard(self, pcm: np.ndarray) -> None:
        """The speaker is about to play `pcm`."""
        if not self.enabled or not len(pcm):
            return
        x = pcm.astype(np.float32)
        if float(np.sqrt(np.mean(x * x))) >= self.threshold_rms:
            self._until = self._clock() + self.hangover_s

    def is_open(self) -> bool:
        return not self.enabled or self._clock() >= self._until

    def apply(self, pcm: np.ndarray) -> np.ndarray:
        """The microphone's samples, or silence of the same length while closed."""
        if self.is_open():
            return pcm
        self.frames_muted += 1
        return np.zeros_like(pcm)


class PlayoutRing:
    """Mono int16 between the event loop (writer) and a device thread (reader), bounded.

    The reader never blocks: a short ring is padded with silence (an underrun).
    The writer fills up to `target`; past `capacity` the oldest samples go.
    """

    def __init__(self, target: int, capacity: int):
        if capacity < target:
            raise ValueError("capacity below target")
        self.target = target
        self.capacity = capacity
        self._buf = np.zeros(capacity, np.int16)
        self._start = 0
        self._len = 0
        self._lock = threading.Lock()
        self.underruns = 0  # reads that found too little
        self.dropped = 0  # samples overwritten when full
        self.read_samples = 0

    def __len__(self) -> int:
        return self._len

    def wanted(self) -> int:
        return max(0, self.target - self._len)

    def write(self, pcm: np.ndarray) -> None:
        pcm = np.asarray(pcm, np.int16).reshape(-1)
        with self._lock:
            if len(pcm) >= self.capacity:
                self.dropped += self._len + len(pcm) - self.capacity
                pcm = pcm[-self.capacity:]
                self._start, self._len = 0, 0
            excess = self._len + len(pcm) - self.capacity
            if excess > 0:
                self.dropped += excess
                self._start = (self._start + excess) % self.capacity
                self._len -= excess
            end = (self._start + self._len) % self.capacity
            first = min(len(pcm), self.capacity - end)
            self._buf[end:end + first] = pcm[:first]
            self._buf[:len(pcm) - first] = pcm[first:]
            self._len += len(pcm)

    def read(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.int16)
        with self._lock:
            take = min(n, self._len)
            first = min(take, self.capacity - self._start)
            out[:first] = self._buf[self._start:self._start + first]
            out[first:take] = self._buf[:take - first]
            self._start = (self._start + take) % self.capacity
            self._len -= take
            self.read_samples += n
            if take < n:
                self.underruns += 1
        return out


class SpeakerFeed:
    """Fills a `PlayoutRing` at `rate` from the current `FrameSource`, one frame per pull."""

    def __init__(self, rate: int, *, buffer_ms: int = 60, block: int = 0, gate: HalfDuplexGate | None = None):
        self.rate = rate
        frame = rate * FRAME_MS // 1000
        # enough for one device block plus the frame that refills it; a card that
        # asks for big blocks needs them ready
        target = max(rate * buffer_ms // 1000, block + frame)
        self.ring = PlayoutRing(target, target + frame + block)
        self.gate = gate or HalfDuplexGate(False)
        self.source: FrameSource | None = None
        self._resampler = Resampler(rate)
        self.frames_pulled = 0

    def play(self, source: FrameSource | None) -> None:
        self.source = source

    def refill(self) -> None:
        """Pull frames until the ring holds its target (nothing while there is no source)."""
        while self.ring.wanted() > 0:
            source = self.source
            if source is None or source.ended:
                return
            chunk = source.read_frame()
            pcm = self._resampler.resample(chunk.samples, chunk.sample_rate)
            self.frames_pulled += 1
            self.gate.heard(pcm)
            self.ring.write(pcm)

    def read(self, n: int) -> np.ndarray:
        """What the device plays next (any thread): silence with nothing to play is no underrun."""
        if self.source is None and not len(self.ring):
            return np.zeros(n, np.int16)
        return self.ring.read(n)

    def pull(self, n: int) -> np.ndarray:
        """`read`, refilled first: for a device driven from the event loop."""
        self.refill()
        return self.read(n)

    def stats(self) -> dict:
        return {"rate": self.rate, "frames_pulled": self.frames_pulled, "underruns": self.ring.underruns,
                "dropped": self.ring.dropped, "buffered": len(self.ring)}


class MicSink(Protocol):
    """The published microphone (rtc.audio.MicrophoneTrack)."""

    def write_nowait(self, samples: np.ndarray, sample_rate: int) -> None: ...

    async def write(self, samples: np.ndarray, sample_rate: int) -> None: ...


@dataclass
class AudioOptions:
    backend: str = "none"  # sounddevice, wav, none
    input_device: str | int | None = None  # sounddevice: name or index; None: the default
    output_device: str | int | None = None
    input_rate: int | None = None  # None: the device's default rate
    output_rate: int | None = None
    block_ms: int = 20
    play: str | None = None  # wav: tone:FREQ or a WAV file, as the microphone
    record: str | None = None  # wav: the speaker written here
    half_duplex: bool = False


class AudioBackend:
    """A microphone and a speaker; the app hands it the published mic and the stream to play."""

    has_mic = False
    has_speaker = False

    def __init__(self, options: AudioOptions, log: logging.Logger):
        self.options = options
        self.log = log
        self.gate = HalfDuplexGate(options.half_duplex)
        self.mic: MicSink | None = None
        self.speaker: SpeakerFeed | None = None

    def set_mic(self, mic: MicSink | None) -> None:
        self.mic = mic

    def play(self, source: FrameSource | None) -> None:
        if self.speaker is not None:
            self.speaker.play(source)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def stats(self) -> dict:
        return {"speaker": self.speaker.stats() if self.speaker else None, "mic_muted_blocks": self.gate.frames_muted}


class NoAudio(AudioBackend):
    pass


def mic_source(spec: str, rate: int = 48000, *, loop: bool = True) -> AsyncIterator[AudioChunk]:
    """`tone:FREQ` or a 16-bit WAV file (looped unless `loop` is false), as chunks for the microphone."""
    if spec.startswith("tone:"):
        try:
            freq = float(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--play {spec!r}: tone:FREQ takes a frequency in Hz, e.g. tone:440") from None
        return tone(freq, sample_rate=rate)
    return wav_chunks(spec, loop=loop)


class WavAudio(AudioBackend):
    """No sound card: a file or a tone into the microphone, the speaker into a WAV file.

    Both run at real-time pace: the microphone track's bounded buffer holds the
    reader back, and the speaker is pulled on a 20 ms wall-clock tick."""

    RATE = 48000

    def __init__(self, options: AudioOptions, log: logging.Logger, clock: Clock = time.monotonic):
        super().__init__(options, log)
        self.has_mic = bool(options.play)
        self.has_speaker = bool(options.record)
        self._clock = clock
        self._tasks: list[asyncio.Task] = []
        self._writer: WavWriter | None = None
        if options.play and not options.play.startswith("tone:"):
            from ..rtc.wavfile import read_wav
            read_wav(options.play)  # a missing or unsupported file fails now, not in a task
        if self.has_speaker:
            self.speaker = SpeakerFeed(self.RATE, gate=self.gate)

    async def start(self) -> None:
        if self.has_mic:
            self._tasks.append(asyncio.ensure_future(self._mic_loop(mic_source(self.options.play))))
        if self.has_speaker:
            self._writer = WavWriter(self.options.record, self.RATE)
            self._tasks.append(asyncio.ensure_future(self._speaker_loop()))

    async def _mic_loop(self, source: AsyncIterator[AudioChunk]) -> None:
        async for chunk in source:
            while self.mic is None:
                await asyncio.sleep(FRAME_MS / 1000)
            # write() waits while the track's buffer is full: real-time pace
            await self.mic.write(self.gate.apply(chunk.samples), chunk.sample_rate)

    async def _speaker_loop(self) -> None:
        n = self.RATE * FRAME_MS // 1000
        tick = FRAME_MS / 1000
        due = self._clock()
        while True:
            self._writer.write(self.speaker.pull(n))
            due += tick
            wait = due - self._clock()
            if wait < -0.2:  # the loop stalled: skip ahead rather than burst
                due = self._clock()
            await asyncio.sleep(max(0.0, wait))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._writer is not None:
            self._writer.close()
            self.log.info("recorded %.2fs of the speaker to %s", self._writer.samples / self.RATE,
                          self.options.record)
            self._writer = None


class SoundDeviceAudio(AudioBackend):
    """Any PortAudio input and output device, at its own rate (`pip install lkdevice[pi]`)."""

    has_mic = True
    has_speaker = True

    def __init__(self, options: AudioOptions, log: logging.Logger):
        super().__init__(options, log)
        try:
            import sounddevice  # the Pi's extra; PortAudio (libportaudio2) underneath
        except (ImportError, OSError) as exc:
            raise RuntimeError(f"--audio sounddevice needs the sounddevice package and PortAudio "
                               f"(pip install 'lkdevice[pi]'; apt install libportaudio2): {exc}") from None
        self._sd = sounddevice
        self._in_rate = options.input_rate or int(sounddevice.query_devices(options.input_device, "input")
                                                  ["default_samplerate"])
        self._out_rate = options.output_rate or int(sounddevice.query_devices(options.output_device, "output")
                                                    ["default_samplerate"])
        self._out_block = self._out_rate * options.block_ms // 1000
        self.speaker = SpeakerFeed(self._out_rate, block=self._out_block, gate=self.gate)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refill_pending = threading.Event()
        self._streams: list = []
        self.input_overflows = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        sd = self._sd
        inp = sd.InputStream(device=self.options.input_device, samplerate=self._in_rate, channels=1, dtype="int16",
                             blocksize=self._in_rate * self.options.block_ms // 1000, callback=self._on_input)
        out = sd.OutputStream(device=self.options.output_device, samplerate=self._out_rate, channels=1,
                              dtype="int16", blocksize=self._out_block, callback=self._on_output)
        self._streams = [inp, out]
        self.speaker.refill()
        for s in self._streams:
            s.start()
        self.log.info("sound card: microphone %s at %d Hz, speaker %s at %d Hz", self.options.input_device or
                      "default", self._in_rate, self.options.output_device or "default", self._out_rate)

    # PortAudio's threads: copy and hand over; nothing here may block
    def _on_input(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self.input_overflows += 1
        self._loop.call_soon_threadsafe(self._mic_block, indata[:, 0].copy())

    def _mic_block(self, pcm: np.ndarray) -> None:
        if self.mic is not None:
            self.mic.write_nowait(self.gate.apply(pcm), self._in_rate)

    def _on_output(self, outdata, frames, time_info, status) -> None:
        outdata[:, 0] = self.speaker.read(frames)
        if self.speaker.ring.wanted() and not self._refill_pending.is_set():
            self._refill_pending.set()
            self._loop.call_soon_threadsafe(self._refill)

    def _refill(self) -> None:
        self._refill_pending.clear()
        self.speaker.refill()

    async def close(self) -> None:
        for s in self._streams:
            try:
                s.stop()
                s.close()
            except Exception as exc:  # a device unplugged meanwhile
                self.log.warning("closing the sound device: %s", exc)
        self._streams = []

    def stats(self) -> dict:
        return {**super().stats(), "input_overflows": self.input_overflows}


def make_audio(options: AudioOptions, log: logging.Logger) -> AudioBackend:
    if options.backend == "sounddevice":
        return SoundDeviceAudio(options, log)
    if options.backend == "wav":
        return WavAudio(options, log)
    if options.backend == "none":
        return NoAudio(options, log)
    raise ValueError(f"audio backend {options.backend!r}: one of {', '.join(BACKENDS)}")
