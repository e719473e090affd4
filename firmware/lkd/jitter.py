# Adaptive jitter buffer for received audio. Preallocated slots indexed by
# seq; the target depth follows the observed arrival jitter (RFC 3550 style
# estimate) within bounds. Underruns and gaps play silence, never stale audio.
# Slots may hold frames still encoded (size: the codec's payload), decoded by
# `decode(slot, out)` when played; by default they hold PCM and are copied.

from micropython import const
from device_protocol import seq_distance, PCM_FRAME_BYTES

_FRAME_MS = const(20)
# 20 ms of silence (PCM_FRAME_BYTES zero bytes), written out: a literal is a
# constant, in flash in a frozen build, where bytes(640) would take 672 bytes
# of heap (loaded from a .mpy it is on the heap either way)
_ZERO = (b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
         b"\0\0\0\0")


class JitterBuffer:
    def __init__(self, slots=12, min_ms=40, max_ms=200, size=PCM_FRAME_BYTES):
        self.slots = slots
        self.buf = bytearray(slots * size)
        mv = memoryview(self.buf)
        self.slot = [mv[i * size:(i + 1) * size] for i in range(slots)]
        self.decode = None  # decode(slot, out): slot -> 640 bytes of PCM
        self.seqs = [-1] * slots
        self.min_frames = max(1, min_ms // _FRAME_MS)
        self.max_frames = min(slots - 2, max_ms // _FRAME_MS)
        self.zero = _ZERO
        # counters a user (and the stats line) cares about
        self.played = 0
        self.late = 0
        self.lost = 0
        self.underruns = 0
        self.trimmed = 0
        self.reset()

    def reset(self):
        """Forget everything (new session, or the sender restarted its seq)."""
        for i in range(self.slots):
            self.seqs[i] = -1
        self.next = -1  # seq to play next; -1 until the first frame
        self.ni = 0  # its slot: slots follow seq order from here (65536 need not divide)
        self.newest = -1
        self.playing = False
        self.jitter16 = 0  # jitter estimate in ms, x16
        self.bump = 0  # extra frames after underruns, decays
        self.calm = 0
        self.high = 0
        self.last_seq = -1
        self.last_ms = 0
        self.target = self.min_frames

    def depth(self):
        """Frames from the next one to play up to the newest received."""
        if self.next < 0:
            return 0
        return seq_distance(self.newest, self.next) + 1

    def _retarget(self):
        t = 1 + (3 * self.jitter16 + 16 * _FRAME_MS - 1) // (16 * _FRAME_MS) + self.bump
        self.target = max(self.min_frames, min(self.max_frames, t))

    def put(self, seq, now_ms):
        """Slot (memoryview of `size` bytes) to store frame `seq` in, or None
        when the frame is late or a duplicate. Call at arrival time."""
        if self.last_seq >= 0:
            d = seq_distance(seq, self.last_seq)
            if d > 0:
                # transit variation: arrival spacing vs. send spacing
                dev = (now_ms - self.last_ms) - d * _FRAME_MS
                if dev < 0:
                    dev = -dev
                if dev > 1000:
                    dev = 1000
                self.jitter16 += dev - ((self.jitter16 + 8) >> 4)
                self.last_seq = seq
                self.last_ms = now_ms
                self._retarget()
        else:
            self.last_seq = seq
            self.last_ms = now_ms
        if self.next < 0:
            self.next = seq
            self.newest = seq
        d = seq_distance(seq, self.next)
        if d < 0:
            self.late += 1
            return None
        if d >= self.slots:
            # far ahead (a long stall or a sender restart): keep the newest
            # frames, drop what can no longer be played in time
            nxt = (seq - self.target + 1) & 0xFFFF
            self.ni = (self.ni + seq_distance(nxt, self.next)) % self.slots
            self.next = nxt
            d = self.target - 1
            for i in range(self.slots):
                s = self.seqs[i]
                if s >= 0 and seq_distance(s, self.next) < 0:
                    self.seqs[i] = -1
                    self.trimmed += 1
        i = (self.ni + d) % self.slots
        if self.seqs[i] == seq:
            return None
        self.seqs[i] = seq
        if seq_distance(seq, self.newest) > 0:
            self.newest = seq
        return self.slot[i]

    def pop_into(self, out):
        """Fill out (640 bytes) with the next 20 ms; returns True for real audio."""
        if not self.playing:
            if self.next >= 0 and self.depth() >= self.target:
                self.playing = True
            else:
                out[:] = self.zero
                return False
        if self.depth() <= 0:
            # nothing buffered: underrun. Rebuffer to a deeper target.
            self.playing = False
            self.underruns += 1
            self.calm = 0
            if self.bump < 4:
                self.bump += 1
            self._retarget()
            out[:] = self.zero
            return False
        nxt = self.next
        i = self.ni
        real = self.seqs[i] == nxt
        if real:
            if self.decode is None:
                out[:] = self.slot[i]
            else:
                self.decode(self.slot[i], out)
            self.seqs[i] = -1
            self.played += 1
        else:
            out[:] = self.zero  # a gap: conceal with silence
            self.lost += 1
        self.next = (nxt + 1) & 0xFFFF
        self.ni = (i + 1) % self.slots
        self.calm += 1
        if self.calm >= 500:  # 10 s without underrun: relax
            self.calm = 0
            if self.bump:
                self.bump -= 1
                self._retarget()
        if self.depth() > self.target + 3:
            self.high += 1
        else:
            self.high = 0
        if self.high >= 50:
            # a whole second queued beyond the target: skip a frame to cut latency
            self.high = 0
            i = self.ni
            if self.seqs[i] == self.next:
                self.seqs[i] = -1
            self.next = (self.next + 1) & 0xFFFF
            self.ni = (i + 1) % self.slots
            self.trimmed += 1
        return real


class FrameRing:
    """Microphone frames waiting to be sent: preallocated slots; when full the
    oldest frame is overwritten (a stalled link must not grow memory)."""

    def __init__(self, slots=6, size=PCM_FRAME_BYTES):
        self.buf = bytearray(slots * size)
        mv = memoryview(self.buf)
        self.slot = [mv[i * size:(i + 1) * size] for i in range(slots)]
        self.slots = slots
        self.head = 0  # oldest
        self.count = 0
        self.overflows = 0

    def writable(self):
        """Slot to fill next (commit() makes it readable)."""
        return self.slot[(self.head + self.count) % self.slots]

    def commit(self):
        if self.count == self.slots:
            self.head = (self.head + 1) % self.slots
            self.overflows += 1
        else:
            self.count += 1

    def readable(self):
        return self.slot[self.head] if self.count else None

    def release(self):
        if self.count:
            self.head = (self.head + 1) % self.slots
            self.count -= 1

    def clear(self):
        self.head = 0
        self.count = 0
