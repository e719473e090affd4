"""The robot's audio core without a sound card: the pulled speaker, its bounded ring, half duplex."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lkdevice.robot.audio import HalfDuplexGate, PlayoutRing, SpeakerFeed
from lkdevice.rtc.audio import AudioChunk
from lkdevice.rtc.wavfile import dominant_frequency
from tests.audio_checks import tone_frames


class ToneSource:
    """Stands in for AudioStream: a 20 ms frame of a tone per read_frame()."""

    def __init__(self, freq: float, rate: int = 48000, amplitude: float = 0.3):
        self.freq, self.rate, self.amplitude = freq, rate, amplitude
        self.reads = 0
        self.ended = False

    def read_frame(self) -> AudioChunk:
        n = self.rate // 50
        t = (self.reads * n + np.arange(n)) / self.rate
        self.reads += 1
        return AudioChunk((self.amplitude * 32767 * np.sin(2 * np.pi * self.freq * t)).astype(np.int16), self.rate)


def test_ring_keeps_order_across_wraparound_and_pads_an_underrun():
    ring = PlayoutRing(target=100, capacity=150)
    sent = np.arange(1050, dtype=np.int16)  # 15 writes of 70: wraps the 150-sample ring
    got, i = [], 0
    while i < len(sent):
        ring.write(sent[i:i + 70])
        i += 70
        got.append(ring.read(70))
    assert np.array_equal(np.concatenate(got), sent)
    assert ring.underruns == 0 and ring.dropped == 0
    short = ring.read(50)  # empty now: silence, counted
    assert not short.any() and ring.underruns == 1


def test_ring_is_bounded_and_keeps_the_newest():
    ring = PlayoutRing(target=100, capacity=150)
    ring.write(np.arange(120, dtype=np.int16))
    ring.write(np.arange(120, 240, dtype=np.int16))
    assert len(ring) == 150 and ring.dropped == 90
    assert np.array_equal(ring.read(150), np.arange(90, 240, dtype=np.int16))
    ring.write(np.arange(1000, dtype=np.int16))  # one write bigger than the ring
    assert len(ring) == 150 and np.array_equal(ring.read(150), np.arange(850, 1000, dtype=np.int16))


@pytest.mark.parametrize("rate,block", [(44100, 441), (48000, 1024), (16000, 256), (22050, 4410)])
def test_the_device_paces_the_speaker(rate, block):
    """The card pulls; frames are taken from the jitter buffer only as fast as it plays them."""
    source = ToneSource(440)
    feed = SpeakerFeed(rate, block=block)
    feed.play(source)
    played = []
    peak = 0
    for _ in range(int(5 * rate / block)):  # 5 s of the card's time
        played.append(feed.pull(block))
        peak = max(peak, len(feed.ring))
    seconds = len(played) * block / rate
    # what was pulled is what was played plus what waits in the ring: no more
    waiting = len(feed.ring) / rate
    assert abs(source.reads * 0.02 - (seconds + waiting)) <= 0.021
    assert peak <= feed.ring.capacity and waiting <= feed.ring.capacity / rate
    assert feed.ring.underruns == 0 and feed.ring.dropped == 0
    pcm = np.concatenate(played)
    assert abs(dominant_frequency(pcm, rate) - 440) < 2  # resampled, not sped up or slowed
    frames = [pcm[i:i + rate // 50] for i in range(0, len(pcm) - rate // 50, rate // 50)]
    assert tone_frames(frames, rate, 440) >= len(frames) - 2


def test_no_source_plays_silence_and_pulls_nothing():
    feed = SpeakerFeed(48000)
    assert not feed.pull(960).any()
    source = ToneSource(440)
    source.ended = True
    feed.play(source)
    assert not feed.pull(960).any() and source.reads == 0


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_half_duplex_mutes_the_mic_while_the_speaker_is_loud_and_for_the_hangover():
    clock = Clock()
    gate = HalfDuplexGate(True, hangover_s=0.3, clock=clock)
    mic = np.full(320, 5000, np.int16)
    assert gate.apply(mic) is mic
    gate.heard(np.zeros(960, np.int16))  # silence from the agent: mic stays open
    assert gate.is_open()
    gate.heard(ToneSource(440).read_frame().samples)
    assert not gate.is_open() and not gate.apply(mic).any()
    clock.t += 0.29
    assert not gate.is_open()
    clock.t += 0.02
    assert gate.is_open() and gate.apply(mic) is mic
    assert gate.frames_muted == 1


def test_half_duplex_off_never_mutes():
    gate = HalfDuplexGate(False)
    gate.heard(ToneSource(440).read_frame().samples)
    assert gate.is_open()


def test_the_speaker_feeds_the_gate():
    clock = Clock()
    gate = HalfDuplexGate(True, clock=clock)
    feed = SpeakerFeed(48000, gate=gate)
    feed.play(ToneSource(440))
    feed.pull(480)
    assert not gate.is_open()


class FakeCard:
    """Stands in for the sound card behind sounddevice: a thread per stream that calls the
    callback with a block every block's worth of its own clock, as PortAudio does."""

    def __init__(self, rate_in: int, rate_out: int, speed: float = 1.0):
        import threading
        import types

        self.threading = threading
        self.rates = {"input": rate_in, "output": rate_out}
        self.speed = speed  # a card's clock is not ours: 1.1 runs 10 % fast
        self.played: list[np.ndarray] = []
        card = self

        class Stream:
            def __init__(self, *, device, samplerate, channels, dtype, blocksize, callback, kind):
                assert dtype == "int16" and channels == 1 and blocksize > 0
                self.rate, self.block, self.callback, self.kind = samplerate, blocksize, callback, kind
                self.running = False
                self.thread = None

            def start(self):
                self.running = True
                self.thread = card.threading.Thread(target=self._run, daemon=True)
                self.thread.start()

            def _run(self):
                import time as _t
                status = types.SimpleNamespace(input_overflow=False)
                due = _t.monotonic()
                t = 0
                while self.running:
                    if self.kind == "input":
                        x = np.arange(t, t + self.block) / self.rate
                        data = (9000 * np.sin(2 * np.pi * 300 * x)).astype(np.int16).reshape(-1, 1)
                        self.callback(data, self.block, None, status)
                    else:
                        out = np.zeros((self.block, 1), np.int16)
                        self.callback(out, self.block, None, status)
                        card.played.append(out[:, 0].copy())
                    t += self.block
                    due += self.block / self.rate / card.speed
                    _t.sleep(max(0.0, due - _t.monotonic()))

            def stop(self):
                self.running = False
                self.thread.join(2)

            def close(self):
                pass

        self.module = types.SimpleNamespace(
            query_devices=lambda device, kind: {"default_samplerate": float(self.rates[kind])},
            InputStream=lambda **kw: Stream(kind="input", **kw),
            OutputStream=lambda **kw: Stream(kind="output", **kw))


class MicRecorder:
    def __init__(self):
        self.chunks: list[tuple[np.ndarray, int]] = []

    def write_nowait(self, samples, rate):
        self.chunks.append((samples, rate))

    async def write(self, samples, rate):
        self.write_nowait(samples, rate)


@pytest.mark.parametrize("speed", [1.0, 0.9, 1.1])  # a card 10 % slow or fast: extremes, to tell the pace apart
async def test_sounddevice_backend_plays_at_the_cards_pace_and_captures(monkeypatch, speed):
    import logging
    import sys
    import time

    from lkdevice.robot.audio import AudioOptions, make_audio

    card = FakeCard(16000, 44100, speed)
    monkeypatch.setitem(sys.modules, "sounddevice", card.module)
    audio = make_audio(AudioOptions(backend="sounddevice"), logging.getLogger("test"))
    source = ToneSource(440)
    mic = MicRecorder()
    audio.set_mic(mic)
    audio.play(source)
    started = time.monotonic()
    await audio.start()
    await asyncio.sleep(1.5)
    await audio.close()
    elapsed = time.monotonic() - started
    played = np.concatenate(card.played)
    card_seconds = len(played) / 44100
    # the card's clock, not ours, decides how much was taken from the jitter buffer
    assert abs(card_seconds - elapsed * speed) < 0.15
    assert abs(source.reads * 0.02 - card_seconds) <= 0.1, (source.reads, card_seconds)
    assert audio.speaker.ring.dropped == 0 and audio.speaker.ring.underruns <= 2  # the start, at most
    audible = played[np.argmax(np.abs(played) > 1000):]
    assert abs(dominant_frequency(audible, 44100) - 440) < 2
    captured = np.concatenate([c for c, _ in mic.chunks])
    assert {r for _, r in mic.chunks} == {16000} and abs(len(captured) / 16000 - elapsed * speed) < 0.2
    assert abs(dominant_frequency(captured, 16000) - 300) < 2


def test_silence_with_nothing_to_play_is_not_an_underrun():
    feed = SpeakerFeed(48000)
    for _ in range(10):
        assert not feed.pull(960).any()
    assert feed.ring.underruns == 0
