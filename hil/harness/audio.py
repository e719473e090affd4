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
