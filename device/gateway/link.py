"""Per-device link policy of the gateway, without sockets: what to accept from a
device and what to queue for it.

`UplinkGuard` judges each binary frame (order, rate, repeated errors);
`Outbox` holds what goes to the device, control first, audio bounded so a slow
device loses its own stale audio and nothing else.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

from .. import device_protocol as dp

FRAMES_PER_SECOND = 1000 // dp.FRAME_MS
BURST_FRAMES = 25          # beyond real time, per the protocol
STRIKES = 3                # non-fatal frame errors within STRIKE_WINDOW make a broken device
STRIKE_WINDOW = 1.0
CONTROL_PER_SECOND = 50
CONTROL_BURST = 100


class FrameRejected(dp.ProtocolError):
    """A frame dropped with an error for the device; `fatal` closes the link."""

    def __init__(self, code: str, message: str, *, seq: int | None = None, fatal: bool = False,
                 report: bool = True):
        super().__init__(code, message)
        self.seq = seq
        self.fatal = fatal
        self.report = report  # False: drop silently (rate errors are reported once a second)


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float]):
        self.rate = rate
        self.capacity = burst
        self.tokens = burst
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class UplinkGuard:
    def __init__(self, codec: int, clock: Callable[[], float] = time.monotonic):
        self.codec = codec
        self._clock = clock
        self.last_seq: int | None = None
        self.frames = 0
        self.lost = 0
        self.rejected = 0
        self._frames = TokenBucket(FRAMES_PER_SECOND, BURST_FRAMES + 1, clock)
        self._control = TokenBucket(CONTROL_PER_SECOND, CONTROL_BURST, clock)
        self._strikes: deque[float] = deque(maxlen=STRIKES)
        self._rate_reported = -1e9

    def resync(self) -> None:
        """A new link: the device may restart its sequence anywhere."""
        self.last_seq = None

    def _strike(self, exc: FrameRejected) -> FrameRejected:
        self.rejected += 1
        now = self._clock()
        self._strikes.append(now)
        if len(self._strikes) == STRIKES and now - self._strikes[0] <= STRIKE_WINDOW:
            return FrameRejected(exc.code, f"{exc.message}; {STRIKES} bad frames within {STRIKE_WINDOW:.0f} s",
                                 seq=exc.seq, fatal=True)
        return exc

    def check_audio(self, frame: bytes) -> int:
        """The seq of an acceptable frame; raises FrameRejected otherwise."""
        if len(frame) > dp.MAX_BINARY_FRAME:
            raise FrameRejected(dp.E_TOO_LARGE, f"binary frame of {len(frame)} bytes exceeds "
                                f"{dp.MAX_BINARY_FRAME}", fatal=True)
        try:
            seq = dp.check_frame(frame, self.codec)
        except dp.ProtocolError as exc:
            raise self._strike(FrameRejected(exc.code, exc.message)) from None
        if self.last_seq is not None:
            ahead = dp.seq_distance(seq, self.last_seq)
            if ahead <= 0:
                raise self._strike(FrameRejected(
                    dp.E_OUT_OF_ORDER, f"frame {seq} arrived after frame {self.last_seq}", seq=seq))
        if not self._frames.take():
            now = self._clock()
            report = now - self._rate_reported >= 1.0
            if report:
                self._rate_reported = now
            self.rejected += 1
            raise FrameRejected(dp.E_RATE, "audio frames faster than real time; dropping", seq=seq, report=report)
        if self.last_seq is not None:
            self.lost += dp.seq_distance(seq, self.last_seq) - 1
        self.last_seq = seq
        self.frames += 1
        return seq

    def check_control(self) -> None:
        if not self._control.take():
            raise FrameRejected(dp.E_RATE, f"more than {CONTROL_PER_SECOND} control messages a second",
                                fatal=True)


class Outbox:
    """Frames waiting for one device's socket."""

    def __init__(self, control_limit: int = 256, audio_limit: int = 10):
        self.control: deque[str] = deque()
        self.audio: deque[bytes] = deque()
        self.control_limit = control_limit
        self.audio_limit = audio_limit
        self.audio_dropped = 0
        self.control_dropped = 0

    def put_control(self, text: str) -> bool:
        """False when the device has stopped reading: the caller drops the link."""
        if len(self.control) >= self.control_limit:
            self.control_dropped += 1
            return False
        self.control.append(text)
        return True

    def put_audio(self, frame: bytes) -> None:
        if len(self.audio) >= self.audio_limit:
            self.audio.popleft()  # the oldest is the least useful to a live listener
            self.audio_dropped += 1
        self.audio.append(frame)

    def pop(self) -> str | bytes | None:
        if self.control:
            return self.control.popleft()
        if self.audio:
            return self.audio.popleft()
        return None

    def clear_audio(self) -> None:
        self.audio.clear()

    def __len__(self) -> int:
        return len(self.control) + len(self.audio)
