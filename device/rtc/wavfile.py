"""WAV files as audio sources and sinks (16-bit PCM, any rate, mono or stereo in)."""

from __future__ import annotations

import asyncio
import wave
from typing import AsyncIterator

import numpy as np

from .audio import FRAME_MS, AudioChunk


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the sample rate; stereo is averaged."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported (got {8 * w.getsampwidth()}-bit)")
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return pcm.astype(np.int16), rate


async def wav_chunks(path: str, *, loop: bool = False, frame_ms: int = FRAME_MS) -> AsyncIterator[AudioChunk]:
    pcm, rate = read_wav(path)
    n = rate * frame_ms // 1000
    while True:
        for i in range(0, len(pcm), n):
            yield AudioChunk(pcm[i:i + n], rate)
            await asyncio.sleep(0)
        if not loop:
            return


class WavWriter:
    """Mono int16 at a fixed rate, written as it arrives."""

    def __init__(self, path: str, sample_rate: int):
        self.sample_rate = sample_rate
        self.samples = 0
        self._w = wave.open(path, "wb")
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(sample_rate)

    def write(self, samples: np.ndarray) -> None:
        self._w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
        self.samples += len(samples)

    def close(self) -> None:
        self._w.close()


def dominant_frequency(samples: np.ndarray, rate: int) -> float | None:
    """The strongest frequency in `samples` (None for silence), to 1 Hz or better."""
    x = np.asarray(samples, dtype=np.float64)
    if len(x) < rate // 10 or np.sqrt(np.mean(x * x)) < 100:
        return None
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum[1:]) + 1) * rate / len(x)
