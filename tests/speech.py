"""Speech for tests: espeak-ng says a sentence, as mono int16 at the rate a test asks for."""

from __future__ import annotations

import io
import subprocess
import wave

import numpy as np


def speak(text: str, sample_rate: int = 16000, *, voice: str = "en-us", wpm: int = 160) -> np.ndarray:
    """`text` spoken by espeak-ng, mono int16 at `sample_rate` (espeak-ng's own rate is 22050 Hz)."""
    wav = subprocess.run(["espeak-ng", "--stdout", "-v", voice, "-s", str(wpm), text],
                         check=True, capture_output=True, timeout=30).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return resample(pcm, rate, sample_rate)


def resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling of a whole clip through its spectrum (cut or zero-padded)."""
    if rate == to_rate:
        return samples.astype(np.int16)
    n = len(samples) * to_rate // rate
    spectrum = np.fft.rfft(samples.astype(np.float64))
    out = np.fft.irfft(spectrum, n) * (n / len(samples)) if len(samples) else np.zeros(0)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)
