"""What a listener would notice about received audio: its pitch, frame by frame."""

from __future__ import annotations

import numpy as np


def frame_frequency(samples: np.ndarray, rate: int) -> float | None:
    """Pitch of one short frame from interpolated rising zero crossings (None if silent)."""
    x = samples.astype(np.float64)
    if np.sqrt(np.mean(x * x)) < 300:  # below about -40 dBFS: no tone here
        return None
    x -= x.mean()
    rising = np.nonzero((x[:-1] < 0) & (x[1:] >= 0))[0]
    if len(rising) < 3:
        return None
    # sub-sample position of each crossing
    pos = rising + (-x[rising]) / (x[rising + 1] - x[rising])
    periods = len(pos) - 1
    return periods * rate / (pos[-1] - pos[0])


def tone_frames(frames: list[np.ndarray], rate: int, frequency: float, tolerance: float = 5.0) -> int:
    """How many frames carry `frequency` within `tolerance` Hz."""
    good = 0
    for f in frames:
        est = frame_frequency(f, rate)
        if est is not None and abs(est - frequency) <= tolerance:
            good += 1
    return good
