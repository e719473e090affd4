"""Receive jitter buffer for one audio stream: encoded packets in, a playout decision per tick out.

Sans-I/O: the caller gives every packet's arrival time to `push` and its own
playout clock's time to `pop`, which answers with what to play for the next
frame: a `Frame` (decode it), `Lost` (conceal it) or `Silence` (the sender is
paused: DTX, mute, or nothing has come yet).

Timing: each packet's transit (arrival minus its RTP time) is compared with
the fastest one of the last few seconds; that difference is its delay. The
target delay is the largest delay of the last `jitter_window` seconds plus a
margin, never below `min_delay` nor above `max_delay`, so it rises with a burst
and comes back once the burst is `jitter_window` old. Playout starts once the
first packet has waited the target delay. A packet missing at its turn is
concealed; a late one is still played if its turn has not passed for good (the
delay grows by its lateness, a stretch); audio held beyond the target is cut,
so the delay shrinks back. Everything held is bounded: `capacity` packets,
oldest dropped first, and the delay estimator's windows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Frame:
    seq: int  # extended (unwrapped) sequence number
    timestamp: int  # extended RTP timestamp
    payload: bytes
    samples: int  # duration in RTP clock units


@dataclass(frozen=True)
class Lost:
    samples: int


@dataclass(frozen=True)
class Silence:
    samples: int


Playout = Union[Frame, Lost, Silence]

# a jump this large in sequence numbers is a new stream, not loss
MAX_SEQ_JUMP = 3000
# cap on each estimator window's entries, whatever the packet rate
ESTIMATOR_MAX = 1024


class _WindowExtreme:
    """Sliding-window minimum (or maximum) of values stamped with times: a monotonic deque."""

    def __init__(self, window: float, *, largest: bool, keep_last: bool = False):
        self.window = window
        self._largest = largest
        self._keep_last = keep_last  # the base stays known through a long pause
        self._q: deque[tuple[float, float]] = deque(maxlen=ESTIMATOR_MAX)

    def add(self, t: float, value: float) -> None:
        q = self._q
        if self._largest:
            while q and q[-1][1] <= value:
                q.pop()
        else:
            while q and q[-1][1] >= value:
                q.pop()
        q.append((t, value))
        self.expire(t)

    def expire(self, now: float) -> None:
        q = self._q
        while len(q) > 1 and q[0][0] < now - self.window:
            q.popleft()
        if q and q[0][0] < now - self.window and not self._keep_last:
            q.popleft()

    def value(self) -> float | None:
        return self._q[0][1] if self._q else None

    def clear(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


class JitterBuffer:
    def __init__(self, *, clock_rate: int = 48000, frame_samples: int = 960, min_delay: float = 0.02,
                 max_delay: float = 0.4, margin: float = 0.005, capacity: int = 64,
                 jitter_window: float = 1.0, base_window: float = 5.0, conceal_limit: int = 5,
                 max_gap: float = 5.0):
        self.clock_rate = clock_rate
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.margin = margin
        self.capacity = capacity
        self.conceal_limit = conceal_limit  # frames of concealment before a gap turns to silence
        self._default_frame = frame_samples
        self._max_gap = int(max_gap * clock_rate)
        self._base = _WindowExtreme(base_window, largest=False, keep_last=True)  # fastest transit
        self._peak = _WindowExtreme(jitter_window, largest=True)  # largest delay over that
        self.stats = dict.fromkeys(("pushed", "played", "lost", "concealed", "silence", "late", "duplicate",
                                    "overflow", "trimmed", "resets", "max_held"), 0)
        self.reset()
        self.stats["resets"] = 0

    # -- state ---------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream (its source changed): packets, numbering and timing."""
        self._packets: dict[int, Frame] = {}
        self._hi_seq: int | None = None  # extended
        self._hi_ts: int | None = None  # extended timestamp of the highest seq
        self._newest_end: int | None = None
        self._frame = self._default_frame
        self._base.clear()
        self._peak.clear()
        self.restart()
        self.stats["resets"] += 1

    def restart(self) -> None:
        """Start playout afresh (a new reader) from what is held."""
        self._started = False
        self._next_seq = 0
        self._next_ts = 0
        self._missing_run = 0
        self._audible = False  # last output was audio (a frame or its concealment)

    def __len__(self) -> int:
        return len(self._packets)

    def estimator_size(self) -> int:
        return len(self._base) + len(self._peak)

    @property
    def jitter(self) -> float:
        """Largest packet delay (beyond the fastest) of the last `jitter_window` seconds."""
        return self._peak.value() or 0.0

    @property
    def target_delay(self) -> float:
        if not len(self._peak):
            return self.min_delay
        return min(self.max_delay, max(self.min_delay, self.jitter + self.margin))

    def current_delay(self, now: float) -> float:
        """How long the audio played next has waited beyond the fastest packet's path."""
        base = self._base.value()
        if base is None:
            return 0.0
        return now - base - self._next_ts / self.clock_rate

    # -- input ------------------------------------------------------------------------
    def push(self, seq: int, timestamp: int, payload: bytes, arrival: float, samples: int | None = None) -> None:
        ext_seq, ext_ts = self._extend(seq, timestamp)
        if ext_seq is None:
            self.reset()
            ext_seq, ext_ts = self._extend(seq, timestamp)
        self.stats["pushed"] += 1
        transit = arrival - ext_ts / self.clock_rate
        self._base.add(arrival, transit)
        self._peak.add(arrival, transit - self._base.value())
        if self._started and ext_seq < self._next_seq:
            self.stats["late"] += 1
            return
        if ext_seq in self._packets:
            self.stats["duplicate"] += 1
            return
        n = samples or self._frame
        self._frame = n
        self._packets[ext_seq] = Frame(ext_seq, ext_ts, payload, n)
        if self._newest_end is None or ext_ts + n > self._newest_end:
            self._newest_end = ext_ts + n
        if len(self._packets) > self.capacity:
            del self._packets[min(self._packets)]
            self.stats["overflow"] += 1
        self.stats["max_held"] = max(self.stats["max_held"], len(self._packets))

    def _extend(self, seq: int, ts: int) -> tuple[int | None, int]:
        """Unwrap 16-bit seq and 32-bit ts against the highest seen; None for a new stream."""
        if self._hi_seq is None:
            self._hi_seq, self._hi_ts = seq, ts
            return seq, ts
        d_seq = ((seq - self._hi_seq) + 0x8000) % 0x10000 - 0x8000
        if abs(d_seq) > MAX_SEQ_JUMP:
            return None, 0
        d_ts = ((ts - self._hi_ts) + 0x8000_0000) % 0x1_0000_0000 - 0x8000_0000
        ext_seq, ext_ts = self._hi_seq + d_seq, self._hi_ts + d_ts
        if d_seq > 0:
            self._hi_seq, self._hi_ts = ext_seq, ext_ts
        return ext_seq, ext_ts

    # -- output -----------------------------------------------------------------------
    def pop(self, now: float) -> Playout:
        """What to play for the next frame at `now` on the playout clock."""
        self._base.expire(now)
        self._peak.expire(now)
        if not self._started and not self._start(now):
            return self._silence(self._frame)
        self._trim()
        head = self._head()
        if head is None:  # underrun: a pause or a loss, we cannot tell yet
            return self._missing(self._frame, now, None, known_lost=False)
        gap = head.timestamp - self._next_ts
        if gap > self._max_gap:
            self.restart()
            return self.pop(now)
        if gap > 0:
            # seq continues across a jump in RTP time: the sender paused (DTX); else packets are missing
            n = min(gap, self._frame)
            if head.seq == self._next_seq:
                return self._silence(n, now, gap - n)
            return self._missing(n, now, gap - n, known_lost=True)
        del self._packets[head.seq]
        self._next_seq = head.seq + 1
        self._next_ts = head.timestamp + head.samples  # a late packet moves playout back: a stretch
        self._missing_run = 0
        self._audible = True
        self.stats["played"] += 1
        return head

    def next_held(self) -> Frame | None:
        """The held packet that starts right where playout stands, without taking it: after
        a `Lost`, the packet whose in-band FEC copy holds the lost frame."""
        head = self._head() if self._started else None
        return head if head is not None and head.timestamp == self._next_ts else None

    def start_time(self) -> float | None:
        """When the packet playout would start with becomes due, while playout has not started."""
        if self._started or not self._packets:
            return None
        head = self._packets[min(self._packets)]
        return self._base.value() + head.timestamp / self.clock_rate + self.target_delay

    def _start(self, now: float) -> bool:
        if not self._packets:
            return False
        self._next_ts = self._packets[min(self._packets)].timestamp
        self._next_seq = min(self._packets)
        self._trim()  # a reader that comes late starts near the newest audio
        head = self._head()
        if head is None:
            return False
        if now < self._base.value() + head.timestamp / self.clock_rate + self.target_delay:
            return False
        self._started = True
        self._next_seq, self._next_ts = head.seq, head.timestamp
        return True

    def _head(self) -> Frame | None:
        if not self._packets:
            return None
        seq = self._next_seq
        if seq in self._packets:
            return self._packets[seq]
        later = [s for s in self._packets if s >= seq]
        return self._packets[min(later)] if later else None

    def _trim(self) -> None:
        """Cut audio held beyond the target (after a late burst, or once the target comes down)."""
        if self._newest_end is None:
            return
        target = int(self.target_delay * self.clock_rate)
        level = self._newest_end - self._next_ts
        if level <= target + 5 * self._frame // 2:
            return
        self._next_ts = self._newest_end - target - self._frame
        for seq in [s for s, p in self._packets.items() if p.timestamp < self._next_ts]:
            del self._packets[seq]
            self.stats["trimmed"] += 1
        head = self._head()
        if head is not None:
            self._next_seq, self._next_ts = head.seq, head.timestamp

    def _missing(self, n: int, now: float, skippable: int | None, *, known_lost: bool) -> Playout:
        if known_lost:
            self.stats["lost"] += 1
        if self._audible and self._missing_run < self.conceal_limit:
            self._next_ts += n
            self._missing_run += 1
            self.stats["concealed"] += 1
            return Lost(n)
        return self._silence(n, now, skippable)

    def _silence(self, n: int, now: float | None = None, skippable: int | None = None) -> Silence:
        if self._started:
            self._next_ts += n + self._excess(now, skippable)
        self._audible = False
        self.stats["silence"] += 1
        return Silence(n)

    def _excess(self, now: float | None, skippable: int | None) -> int:
        """Delay beyond the target that silence can give back (a late packet stretched playout):
        skipping silence loses nothing, so do it here rather than cut audio. At most a frame
        per frame, and never past the next packet."""
        if now is None:
            return 0
        extra = int((self.current_delay(now) - self.target_delay) * self.clock_rate) - self._frame // 2
        if extra <= 0:
            return 0
        extra = min(extra, self._frame)
        return extra if skippable is None else min(extra, skippable)
