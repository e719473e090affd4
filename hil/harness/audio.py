"""What is in a recording: where speech starts, how much of it is voiced, whether a tone is there. Pure numpy."""

from __future__ import annotations

import numpy as np


def _frames(pcm: np.ndarray, rate: int) -> np.ndarray:
    n = rate // 50  # 20 ms
    return pcm[: len(pcm) // n * n].reshape(-1, n).astype(np.float64)


def rms_per_frame(pcm: np.ndarray, rate: int) -> np.ndarray:
    f = _frames(pcm, rate)
    return np.sqrt((f ** 2).mean(axis=1)) if len(f) else np.zeros(0)


def voiced_seconds(pcm: np.ndarray, rate: int, threshold: float = 200.0) -> float:
    return float((rms_per_frame(pcm, rate) > threshold).sum()) / 50


def first_voiced(pcm: np.ndarray, rate: int, threshold: float = 500.0) -> float | None:
    """Seconds into `pcm` of the first 20 ms frame louder than `threshold`."""
    loud = np.nonzero(rms_per_frame(pcm, rate) > threshold)[0]
    return float(loud[0]) / 50 if len(loud) else None


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.int16)


def sine(freq: float, seconds: float, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def tone_levels(pcm: np.ndarray, rate: int, freq: float, frame_s: float = 0.02) -> np.ndarray:
    """Per frame, the RMS of what lies within 60 Hz of `freq` (Hann-windowed spectrum): a tone's level
    that other sounds (a second tone, noise, another voice) barely move."""
    n = int(rate * frame_s)
    f = pcm[: len(pcm) // n * n].reshape(-1, n).astype(np.float64) if n and len(pcm) >= n else np.zeros((0, n))
    if not len(f):
        return np.zeros(0)
    win = np.hanning(n)
    spec = np.abs(np.fft.rfft(f * win, axis=1)) ** 2
    bins = np.abs(np.fft.rfftfreq(n, 1 / rate) - freq) <= 60
    # Parseval with the window's power: the band's share of the frame's mean square
    return np.sqrt(spec[:, bins].sum(axis=1) * 2 / (n * (win ** 2).sum()))


# A tone that steps through CODES pitches, one per 20 ms: what a listener hears says which frame of the
# sender it is, so repeated content (a jitter buffer's concealment) and skipped content show, where a
# steady tone's concealment passes for the tone itself.
CODES, CODE_BASE_HZ, CODE_STEP_HZ, CODE_S = 20, 400.0, 200.0, 0.02


def code_tone(seconds: float, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    n = int(rate * CODE_S)
    freqs = np.repeat(CODE_BASE_HZ + CODE_STEP_HZ * np.arange(CODES), n)
    # phase-continuous; one period ends on a whole number of cycles, so periods tile without a click
    period = np.sin(np.cumsum(2 * np.pi * freqs / rate) - 2 * np.pi * freqs[0] / rate)
    reps = int(np.ceil(seconds * rate / len(period)))
    return (amplitude * 32767 * np.tile(period, reps)[:int(seconds * rate)]).astype(np.int16)


def code_of(pcm: np.ndarray, rate: int, min_rms: float = 1000.0) -> int | None:
    """Which of code_tone's pitches a short frame (10-20 ms) carries; None if quiet or off every pitch."""
    x = pcm.astype(np.float64)
    if len(x) < 32 or np.sqrt(np.mean(x * x)) < min_rms:
        return None
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=4 * len(x)))
    peak = float(np.argmax(spec)) * rate / (4 * len(x))
    k = int(round((peak - CODE_BASE_HZ) / CODE_STEP_HZ))
    return k if 0 <= k < CODES and abs(peak - CODE_BASE_HZ - k * CODE_STEP_HZ) <= CODE_STEP_HZ / 3 else None
