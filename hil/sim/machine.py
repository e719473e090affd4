# Simulated ESP32 `machine` for the MicroPython unix port (on MICROPYPATH
# before the flash directory). Configured by environment variables set by
# host_tools/simulator.py:
#   LKD_HIL_MIC    raw 16-bit LE mono PCM played into I2S RX at real time (then silence)
#   LKD_HIL_SPK    raw 16-bit LE mono PCM written from I2S TX at real time
#   LKD_HIL_PINS   JSON control file, re-read on change: input pin levels {"0": 0}, and
#                  faults made on purpose: {"mic": "stop"} I2S RX stops delivering,
#                  {"speaker": "stop"} I2S TX stops taking data ("error" instead: their
#                  reads/writes raise OSError(EIO); "mute": TX takes data but the speaker
#                  plays silence, as a dead amplifier would); {"ap": false} the access
#                  point is down (network.py, socket.py)
#   LKD_HIL_STATS  JSON stats file (I2S counters, heap peaks), rewritten every 5 s; the live
#                  heap samples are appended to LKD_HIL_STATS + ".live", "<ms> <bytes>" a line;
#                  when each I2S direction's timeline starts, to LKD_HIL_STATS + ".t0",
#                  "rx|tx <unix time ns>" a line (a harness puts mic and speaker on its clock)
#   LKD_HIL_NO_PDM, LKD_HIL_NO_MCK: an I2S without PDM_RX / without the mck keyword (stock MicroPython)
#   LKD_HIL_I2C, LKD_HIL_I2C_LOG: the I2C bus devices and a log of every transfer (see I2C below)

import gc
import io
from micropython import const
import os
import time

_getenv = os.getenv
# const(): no qstr and no global for these (the simulation shares the heap it measures)
_STREAM_POLL = const(3)
_STREAM_CLOSE = const(4)
_STREAM_GET_FILENO = const(10)
_POLLIN = const(1)
_POLLOUT = const(4)
_SCRATCH = const(128)

_t0 = time.ticks_ms()


def _now():
    return time.ticks_diff(time.ticks_ms(), _t0)


class _Stats:
    # The samples go to a file as they are taken: the measuring keeps nothing
    # on the heap it measures.
    def __init__(self):
        self.path = _getenv("LKD_HIL_STATS")
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
        live = gc.mem_alloc()
        if self.path:
            with open(self.path + ".live", "a") as f:
                f.write("%d %d\n" % (now, live))
            self.write()

    def write(self):
        # streamed: building the whole document first would be a transient heap
        # peak of the simulation's own, growing with the samples
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write('{"heap_total": %d, "peak_alloc": %d, "min_free": %d' % (self.heap_total, self.peak, self.min_free))
            for k in self.counters:
                f.write(', "%s": %d' % (k, self.counters[k]))
            f.write("}")
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

    def level(self, key):
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
        return self.levels.get(str(key))


_pins = _PinControl()  # pins and faults (machine, network, socket)


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
#
# Like the ESP32 port (ports/esp32/machine_i2s.c): two peripherals (ids 0, 1),
# one direction per instance; init() reconfigures an instance in place. A board
# cannot have two live instances on one id (the real I2S(id, ...) silently takes
# the peripheral from the first one) nor two peripherals on one GPIO (the GPIO
# matrix routes an output pin to one of them): both are refused here, loudly.
# I2S.PDM_RX exists unless LKD_HIL_NO_PDM is set, the `mck` keyword unless
# LKD_HIL_NO_MCK is set: stock MicroPython has neither (see boards/README.md).

# (names are few and short: each costs the measured heap a qstr)
# One direction's wall-clock timeline in 16-bit mono samples, kept across I2S
# re-inits (the room goes on while the I2S listens the other way):
# [file, t0 ms (None until first opened), samples (16 per ms: the firmware runs
# I2S at 16 kHz) read or written, at eof]
_F = const(0)
_T0 = const(1)
_POS = const(2)
_EOF = const(3)
# _LINES[2]: id -> the live I2S on that peripheral
_LINES = ([None, None, 0, True], [None, None, 0, True], {})  # RX (the microphone), TX (the speaker)
# one small scratch buffer for every instance (single-threaded): the simulation
# shares the heap it measures (a board's DMA buffers are outside it)
scratch = bytearray(_SCRATCH)
smv = memoryview(scratch)


class I2S(io.IOBase):
    RX = 0
    TX = 1
    MONO = 0
    STEREO = 1

    def __init__(self, id, **kw):
        if id not in (0, 1):
            raise ValueError("invalid I2S id")
        self.id = id
        self.line = None
        self.pin = ()
        self.init(**kw)

    def init(self, *, sck=None, ws=None, sd=None, mck=None, mode=0, bits=16, format=0, rate=16000, ibuf=8192):
        if mck is not None and _getenv("LKD_HIL_NO_MCK"):
            raise TypeError("unexpected keyword argument 'mck'")
        self.deinit()
        if mode not in (0, 1, getattr(I2S, "PDM_RX", 0)):
            raise ValueError("invalid mode")
        if bits not in (16, 32):
            raise ValueError("invalid bits")
        pins = [p.id for p in (sck, ws, sd, mck) if p]
        for o in _LINES[2].values():
            # the ESP32 port would silently take the peripheral from the first instance,
            # or the GPIO matrix give a shared pin to one of them
            if o.id == self.id or [p for p in pins if p in o.pin]:
                raise OSError("I2S(%d) on GPIO %r: I2S(%d) on GPIO %r is live" % (self.id, pins, o.id, o.pin))
        self.pin = pins  # its GPIOs
        self.mode = mode
        self.frame_bytes = (bits // 8) * (2 if format == I2S.STEREO else 1)  # app-buffer bytes per sample
        self.ibuf = ibuf // self.frame_bytes  # the DMA buffer, here in samples
        tx = mode == I2S.TX
        line = _LINES[tx]
        if line[_T0] is None:
            path = _getenv("LKD_HIL_SPK" if tx else "LKD_HIL_MIC")
            line[_F] = open(path, "wb" if tx else "rb") if path else None
            line[_EOF] = line[_F] is None
            line[_T0] = time.ticks_ms()
            if stats.path:
                with open(stats.path + ".t0", "a") as f:
                    f.write("%s %d\n" % ("tx" if tx else "rx", time.time_ns()))
        else:
            gap = time.ticks_diff(time.ticks_ms(), line[_T0]) * 16 - line[_POS]
            if gap > 0:
                # the speaker was off meanwhile (the recording stays on the wall clock),
                # or what the microphone heard while nobody listened
                if tx:
                    self._write_silence(line, gap)
                else:
                    self._skip(line, gap)
                line[_POS] += gap
        self.line = line
        _LINES[2][self.id] = self
        _count("i2s_init_count")

    def deinit(self):
        if _LINES[2].get(self.id) is self:
            del _LINES[2][self.id]
        self.line = None

    def ioctl(self, req, arg):
        if req == _STREAM_GET_FILENO:
            return -1
        if req == _STREAM_POLL:
            ret = 0
            if self.line is None:
                return 0
            f = self._fault()
            if f == "stop":
                return 0  # no DMA interrupt ever comes
            if f == "error":
                return arg  # ready: the read or write fails
            if self.mode == I2S.TX:
                if arg & _POLLOUT and self._queued() < self.ibuf:
                    ret |= _POLLOUT
            elif arg & _POLLIN:
                if time.ticks_diff(time.ticks_ms(), self.line[_T0]) * 16 - self.line[_POS] >= 320:  # a 20 ms DMA block
                    ret |= _POLLIN
            return ret
        if req == _STREAM_CLOSE:
            self.deinit()
            return 0
        return 0

    # RX: what the microphone heard since the last read, up to len(buf)
    def _fault(self):
        # a fault made on purpose by a test, for this direction
        return _pins.level("speaker" if self.mode == I2S.TX else "mic") if _pins.path else None

    def readinto(self, buf):
        f = self._fault()
        if f == "error":
            raise OSError(5)  # EIO
        if f == "stop":
            return None
        line = self.line
        due = time.ticks_diff(time.ticks_ms(), line[_T0]) * 16 - line[_POS]
        if due > self.ibuf:
            # the firmware fell behind: the DMA ring overwrote the oldest audio
            lost = due - self.ibuf
            self._skip(line, lost)
            line[_POS] += lost
            due -= lost
            _count("mic_overrun_bytes", lost * self.frame_bytes)
        n = min(len(buf) // self.frame_bytes, due)
        if n <= 0:
            return None
        self._fill(line, buf, n)
        line[_POS] += n
        stats.tick()
        return n * self.frame_bytes

    def _skip(self, line, n):
        if not line[_EOF]:
            line[_F].seek(n * 2, 1)

    def _fill(self, line, buf, block):  # block: samples
        # source file is 16-bit mono; widen to 32-bit slots (the firmware reads MONO only)
        mv = memoryview(buf)
        fb = self.frame_bytes
        n = block * fb
        f = line[_F]
        if fb == 2:  # 16-bit mono: straight from the file
            got = 0
            if not line[_EOF]:
                got = f.readinto(mv[:n]) or 0
                if got < n:
                    line[_EOF] = True
            for i in range(got, n):
                buf[i] = 0
            return
        off = 0
        while off < n:
            k = min((n - off) // fb, len(scratch) // 2)
            got = 0
            if not line[_EOF]:
                got = f.readinto(smv[:k * 2]) or 0
                if got < k * 2:
                    line[_EOF] = True
            s = scratch
            for i in range(got, k * 2):
                s[i] = 0
            j = off
            for i in range(k):
                buf[j] = 0
                buf[j + 1] = 0
                buf[j + 2] = s[2 * i]
                buf[j + 3] = s[2 * i + 1]
                j += fb
            off += k * fb

    # TX: the DMA ring takes what fits; what it played is written to the file
    def _queued(self):
        line = self.line
        played = time.ticks_diff(time.ticks_ms(), line[_T0]) * 16
        gap = played - line[_POS]
        if gap > 0:
            # underrun: the speaker played silence meanwhile; keep the file on time
            self._write_silence(line, gap)
            line[_POS] += gap
            _count("spk_underrun_bytes", gap * self.frame_bytes)
        return line[_POS] - played

    def _write_silence(self, line, n):
        if line[_F] is None:
            return
        s = scratch
        for i in range(min(len(s), n * 2)):
            s[i] = 0
        while n > 0:
            k = min(n, len(s) // 2)
            line[_F].write(smv[:k * 2])
            n -= k

    def write(self, buf):
        f = self._fault()
        if f == "error":
            raise OSError(5)  # EIO
        if f == "stop":
            return None
        mute = f == "mute"
        line = self.line
        n = min(len(buf) // self.frame_bytes, self.ibuf - self._queued())
        if n <= 0:
            return None
        f = line[_F]
        if f is not None and mute:
            self._write_silence(line, n)
        elif f is not None:
            fb = self.frame_bytes
            if fb == 2:
                f.write(memoryview(buf)[:n * 2])
            else:
                s = scratch
                off = 0
                while off < n:
                    k = min(n - off, len(s) // 2)
                    for i in range(k):
                        j = (off + i) * fb
                        s[2 * i] = buf[j + 2]
                        s[2 * i + 1] = buf[j + 3]
                    f.write(smv[:k * 2])
                    off += k
        line[_POS] += n
        _count("spk_bytes", n * self.frame_bytes)
        stats.tick()
        return n * self.frame_bytes


if not _getenv("LKD_HIL_NO_PDM"):
    I2S.PDM_RX = 2  # only builds with PDM support have it (boards/README.md)


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


def I2C(*args, **kw):
    # loaded on first use: only boards with codec chips pay its heap
    return __import__("_hil_i2c_codecs").I2C(*args, **kw)  # a long name: no qstr on every board
