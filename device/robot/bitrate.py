"""Loss-driven bitrate control from RTCP receiver reports (sans-I/O).

The loss-based half of Google Congestion Control: above 10 % loss the rate is
cut in proportion to the loss, below 2 % it grows 8 % per second, in between it
holds. Growth also waits until no report has shown loss for a while: under
steady loss livekit-server's reports alternate between the loss and 0 % (what
it recovered by NACK counts as received in the next one), and growing on every
clean one would win back each cut. Reports in (fraction lost, time), a bitrate out; the clock is the
caller's, so tests run it without sockets or sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass

HIGH_LOSS = 0.10
LOW_LOSS = 0.02
GROWTH_PER_S = 0.08
# one cut per this long: several reports about the same burst are one loss event
DECREASE_HOLD_S = 0.3
# no growth until this long after the last report with loss above LOW_LOSS
INCREASE_HOLD_S = 3.0
# an encoder is told only about changes it would notice
MIN_CHANGE = 0.05


@dataclass
class BitrateController:
    max_bps: int
    min_bps: int = 100_000
    start_bps: int | None = None

    def __post_init__(self) -> None:
        if self.min_bps <= 0 or self.max_bps < self.min_bps:
            raise ValueError(f"bitrate bounds must satisfy 0 < min <= max, not {self.min_bps}..{self.max_bps}")
        self.bitrate = float(min(self.max_bps, max(self.min_bps, self.start_bps or self.max_bps)))
        self._applied = int(self.bitrate)
        self._last_report: float | None = None
        self._last_decrease: float | None = None
        self._last_loss: float | None = None
        self.reports = 0
        self.decreases = 0

    @property
    def target(self) -> int:
        """The bitrate the encoder was last told."""
        return self._applied

    def on_report(self, fraction_lost: float, now: float) -> int | None:
        """A receiver report's loss fraction (0..1) at `now` (seconds); returns a
        bitrate to set on the encoder, or None when it should keep its own."""
        self.reports += 1
        elapsed = 0.0 if self._last_report is None else max(0.0, now - self._last_report)
        self._last_report = now
        if fraction_lost >= LOW_LOSS:
            self._last_loss = now
        if fraction_lost > HIGH_LOSS:
            if self._last_decrease is None or now - self._last_decrease >= DECREASE_HOLD_S:
                self.bitrate *= 1 - 0.5 * min(1.0, fraction_lost)
                self._last_decrease = now
                self.decreases += 1
        elif fraction_lost < LOW_LOSS and (self._last_loss is None or now - self._last_loss >= INCREASE_HOLD_S):
            self.bitrate *= (1 + GROWTH_PER_S) ** min(elapsed, 2.0)  # a long silence is no licence to jump
        self.bitrate = min(float(self.max_bps), max(float(self.min_bps), self.bitrate))
        target = int(self.bitrate)
        if abs(target - self._applied) < MIN_CHANGE * self._applied and target not in (self.min_bps, self.max_bps):
            return None
        if target == self._applied:
            return None
        self._applied = target
        return target
