"""Exponential backoff with full jitter, bounded."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float = 0.3
    maximum: float = 10.0
    factor: float = 2.0
    attempts: int = 0

    def next_delay(self) -> float:
        cap = min(self.maximum, self.initial * (self.factor ** min(self.attempts, 64)))
        self.attempts += 1
        return random.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.attempts = 0
