# Simulated ESP32 `machine` for the MicroPython unix port (on MICROPYPATH
# before the flash directory). Configured by environment variables set by
# host_tools/simulator.py:
#   LKD_HIL_MIC    raw 16-bit LE mono PCM played into I2S RX at real time (then silence)
#   LKD_HIL_SPK    raw 16-bit LE mono PCM written from I2S TX at real time
#   LKD_HIL_PINS   JSON {"pin": level} control file for input pins (re-read on change)
#   LKD_HIL_STATS  JSON stats file (heap samples, I2S counters), rewritten every 2 s

import gc
import io
import os
import time

_getenv = os.getenv
_STREAM_POLL = 3
_STREAM_CLOSE = 4
_STREAM_GET_FILENO = 10
_POLLIN = 1
_POLLOUT = 4
_SCRATCH = 128

_t0 = time.ticks_ms()


def _now():
    return time.ticks_diff(time.ticks_ms(), _t0)


class _Stats:
    # Fixed-size records so the measuring does not grow the heap it measures.
    def __init__(self):
        import array
        self.path = _getenv("LKD_HIL_STATS")
        self.live = array.array("i", bytes(4 * 2 * 240))  # (t_ms, live bytes) every 5 s: 20 min
        self.n = 0
        self.peak = 0  # highest gc.mem_alloc() seen (includes garbage not yet collected)
        self.min_free = 1 << 30
        self.counters = {}
        self.last = -10000
        self.last_live = -10000
        self.heap_total = gc.mem_alloc() + gc.mem_free()

    def tick(self):
        a = gc.mem_alloc()
        if a > self.peak:
            self.peak = a
        f = gc.mem_free()
        if f < self.min_free:
            self.min_free = f
        now = _now()
        if now - self.last_live < 5000:
            return
        self.last_live = now
        # one more automatic-style collection, to read the live heap
        gc.collect()
        if self.n < 240:
            self.live[2 * self.n] = now
            self.live[2 * self.n + 1] = gc.mem_alloc()
            self.n += 1
        if self.path:
            self.write()

    def write(self):
        # streamed: building the whole document first would be a transient heap
        # peak of the simulation's own, growing with the samples
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write('{"heap_total": %d, "peak_alloc": %d, "min_free": %d' % (self.heap_total, self.peak, self.min_free))
            for k in self.counters:
                f.write(', "%s": %d' % (k, self.counters[k]))
            f.write(', "live": [')
            for i in range(self.n):
                f.write('%s[%d, %d]' % (", " if i else "", self.live[2 * i], self.live[2 * i + 1]))
            f.write("]}")
        os.rename(tmp, self.path)


stats = _Stats()


def _count(name, n=1):
    c = stats.counters
    c[name] = c.get(name, 0) + n


# --- Pin ---------------------------------------------------------------------

class _PinControl:
    def __init__(self):
        self.path = _getenv("LKD_HIL_PINS")
        self.levels = {}
        self.mtime = None
        self.checked = -1000

    def level(self, pin):
        if self.path:
            now = _now()
            if now - self.checked >= 50:
                self.checked = now
                try:
                    st = os.stat(self.path)
                    m = (st[1], st[6], st[8])  # inode too: mtime has whole seconds only
                    if m != self.mtime:
                        import json
                        with open(self.path) as f:
                            self.levels = json.load(f)
                        self.mtime = m
                except (OSError, ValueError):
                    pass
        return self.levels.get(str(pin))


_pins = _PinControl()


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None, **kw):
        self.id = id
        self.mode = mode
        self.pull = pull
        self.out = 0 if value is None else int(bool(value))

    def init(self, mode=-1, pull=-1, value=None, **kw):
        if mode != -1:
            self.mode = mode
        if pull != -1:
            self.pull = pull
        if value is not None:
            self.out = int(bool(value))

    def value(self, v=None):
        if v is not None:
            self.out = int(bool(v))
            return None
        if self.mode == Pin.OUT:
            return self.out
        lvl = _pins.level(self.id)
        if lvl is None:
            return 1 if self.pull == Pin.PULL_UP else 0  # nobody presses it
        return int(bool(lvl))

    __call__ = value

    def on(self):
        self.out = 1

    def off(self):
        self.out = 0

    def irq(self, handler=None, trigger=3):
        return None

    def __repr__(self):
        return "Pin(%s)" % self.id


# --- I2S at real-time pace ------------------------------------------------------

class I2S(io.IOBase):
    RX = 0
    TX = 1
    PDM_RX = 2
    MONO = 0
    STEREO = 1

    def __init__(self, id, *, sck=None, ws=None, sd=None, mck=None, mode=0, bits=16, format=0, rate=16000,
                 ibuf=8192):
        if bits not in (16, 32):
            raise ValueError("invalid bits")
        self.id = id
        self.mode = mode
        self.bits = bits
        self.frame_bytes = (bits // 8) * (2 if format == I2S.STEREO else 1)
        self.byte_rate = rate * self.frame_bytes
        self.block = self.byte_rate // 50  # the 20 ms DMA block
        self.ibuf = ibuf
        self.t0 = time.ticks_ms()
        self.done = 0  # bytes delivered (RX) or accepted (TX)
        self.f = None
        # small: the simulation shares the heap it measures (a board's DMA buffers are outside it)
        self.scratch = bytearray(_SCRATCH)
        self.smv = memoryview(self.scratch)
        if mode == I2S.TX:
            path = _getenv("LKD_HIL_SPK")
            self.f = open(path, "wb") if path else None
        else:
            path = _getenv("LKD_HIL_MIC")
            self.f = open(path, "rb") if path else None
        self.eof = self.f is None

    def _elapsed_bytes(self):
        ms = time.ticks_diff(time.ticks_ms(), self.t0)
        return ms * self.byte_rate // 1000

    def deinit(self):
        if self.f:
            self.f.close()
            self.f = None

    def irq(self, handler):
        pass

    def ioctl(self, req, arg):
        if req == _STREAM_GET_FILENO:
            return -1
        if req == _STREAM_POLL:
            ret = 0
            if self.mode == I2S.TX:
                if arg & _POLLOUT and self._queued() < self.ibuf:
                    ret |= _POLLOUT
            elif arg & _POLLIN:
                if self._elapsed_bytes() - self.done >= self.block:
                    ret |= _POLLIN
            return ret
        if req == _STREAM_CLOSE:
            self.deinit()
            return 0
        return 0

    # RX: what the microphone heard since the last read, up to len(buf)
    def readinto(self, buf):
        due = self._elapsed_bytes() - self.done
        if due > self.ibuf:
            # the firmware fell behind: the DMA ring overwrote the oldest audio
            lost = (due - self.ibuf) // self.frame_bytes * self.frame_bytes
            self._skip(lost)
            self.done += lost
            due -= lost
            _count("mic_overrun_bytes", lost)
        n = min(len(buf), due) // self.frame_bytes * self.frame_bytes
        if n <= 0:
            return None
        self._fill(buf, n)
        self.done += n
        stats.tick()
        return n

    def _skip(self, nbytes):
        if not self.eof:
            samples = nbytes // self.frame_bytes
            self.f.seek(samples * 2, 1)

    def _fill(self, buf, n):
        # source file is 16-bit mono; widen to the I2S slot format
        mv = memoryview(buf)
        fb = self.frame_bytes
        if fb == 2:  # 16-bit mono: straight from the file
            got = 0
            if not self.eof:
                got = self.f.readinto(mv[:n]) or 0
                if got < n:
                    self.eof = True
            for i in range(got, n):
                buf[i] = 0
            return
        off = 0
        while off < n:
            samples = min((n - off) // fb, len(self.scratch) // 2)
            got = 0
            if not self.eof:
                got = self.f.readinto(self.smv[:samples * 2]) or 0
                if got < samples * 2:
                    self.eof = True
            s = self.scratch
            for i in range(got, samples * 2):
                s[i] = 0
            if fb == 2:
                mv[off:off + samples * 2] = self.smv[:samples * 2]
            else:
                j = off
                for i in range(samples):
                    buf[j] = 0
                    buf[j + 1] = 0
                    buf[j + 2] = s[2 * i]
                    buf[j + 3] = s[2 * i + 1]
                    if fb == 8:  # stereo: same sample in both slots
                        buf[j + 4] = 0
                        buf[j + 5] = 0
                        buf[j + 6] = s[2 * i]
                        buf[j + 7] = s[2 * i + 1]
                    j += fb
            off += samples * fb

    # TX: the DMA ring takes what fits; what it played is written to the file
    def _queued(self):
        played = self._elapsed_bytes()
        if self.done < played:
            # underrun: the speaker played silence meanwhile; keep the file on time
            gap = (played - self.done) // self.frame_bytes * self.frame_bytes
            if gap:
                self._write_silence(gap)
                self.done += gap
                _count("spk_underrun_bytes", gap)
        return self.done - played

    def _write_silence(self, nbytes):
        if self.f is None:
            return
        samples = nbytes // self.frame_bytes
        s = self.scratch
        for i in range(min(len(s), samples * 2)):
            s[i] = 0
        while samples > 0:
            k = min(samples, len(s) // 2)
            self.f.write(self.smv[:k * 2])
            samples -= k

    def write(self, buf):
        room = self.ibuf - self._queued()
        n = min(len(buf), room) // self.frame_bytes * self.frame_bytes
        if n <= 0:
            return None
        if self.f is not None:
            fb = self.frame_bytes
            if fb == 2:
                self.f.write(memoryview(buf)[:n])
            else:
                s = self.scratch
                samples = n // fb
                off = 0
                while off < samples:
                    k = min(samples - off, len(s) // 2)
                    for i in range(k):
                        j = (off + i) * fb
                        s[2 * i] = buf[j + 2]
                        s[2 * i + 1] = buf[j + 3]
                    self.f.write(self.smv[:k * 2])
                    off += k
        self.done += n
        _count("spk_bytes", n)
        stats.tick()
        return n


# --- watchdog, reset, ids --------------------------------------------------------

class WDT:
    """The ESP32's one task watchdog: kills the process (as a reset would end the
    firmware) when not fed in time. As on ports/esp32, WDT() again reconfigures
    that one watchdog (new timeout, fed) rather than adding a second."""

    _started = False
    timeout = 0
    fed = 0

    def __init__(self, id=0, timeout=5000):
        WDT.timeout = timeout
        WDT.fed = _now()
        if not WDT._started:
            WDT._started = True
            import _thread
            _thread.start_new_thread(WDT._watch, ())

    def feed(self):
        WDT.fed = _now()
        stats.tick()

    @staticmethod
    def _watch():
        while True:
            time.sleep_ms(100)
            late = _now() - WDT.fed
            if late > WDT.timeout:
                print("[hil] watchdog reset: not fed for %d ms" % late)
                if stats.path:
                    try:
                        stats.counters["watchdog"] = 1
                        stats.write()
                    except Exception:
                        pass
                os.system("kill -9 $PPID")  # the shell's parent: this interpreter


def reset():
    print("[hil] machine.reset()")
    raise SystemExit(3)


def soft_reset():
    reset()


def unique_id():
    return b"\x24\x6f\x28\x4c\x4b\x44"


def freq(hz=None):
    return 240000000


def idle():
    time.sleep_ms(1)


def reset_cause():
    return 1  # PWRON_RESET


PWRON_RESET = 1
WDT_RESET = 3
