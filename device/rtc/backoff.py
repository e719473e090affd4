"""Capped exponential backoff with full jitter.

Attempt n waits a delay drawn uniformly from [0, cap], cap = min(maximum,
initial * factor**n): retries from many devices spread out instead of
arriving together after a server restart. The generator is injected so tests
and the lifecycle machine control the draw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol


class Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


@dataclass
class Backoff:
    initial: float = 0.3
    maximum: float = 10.0
    factor: float = 2.0
    attempts: int = 0
    rng: Uniform = field(default_factory=random.Random, repr=False)

    def cap(self) -> float:
        """The longest delay the next attempt may wait."""
        # the exponent is bounded so hours of attempts cannot overflow a float
        return min(self.maximum, self.initial * (self.factor ** min(self.attempts, 64)))

    def next_delay(self) -> float:
        cap = self.cap()
        self.attempts += 1
        return self.rng.uniform(0.0, cap)

    def reset(self) -> None:
        self.attempts = 0
