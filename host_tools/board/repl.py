"""A raw-REPL session with a MicroPython board, on mpremote's serial transport.

Every wait is bounded: a port with nothing behind it, or a board that stops
answering, is a `NoRepl` error within seconds, never a hang.

A board running our firmware has its watchdog armed, and a watchdog cannot be
stopped on an ESP32 (nor by a soft reset): once Ctrl-C has interrupted the
firmware, nothing feeds it and the board would reset in the middle of a copy.
So when the firmware has run since the last reset, the session first sets the
one watchdog to a long timeout (`HOLD_MS`); the tools end with a hard reset
(`reset()`), which clears it.
"""

from __future__ import annotations

import ast
import contextlib
import io
import time
from dataclasses import dataclass

from . import BoardToolError
from .serialport import NoBoard, find_port, open_port, why_not

HOLD_MS = 10 * 60 * 1000
CHUNK = 512  # bytes of a file per raw-REPL command


class NoRepl(BoardToolError):
    pass


class BoardCodeError(BoardToolError):
    pass


@dataclass(frozen=True)
class BoardInfo:
    version: tuple[int, int, int]
    mpy: int | None  # sys.implementation._mpy: .mpy version, sub-version and native arch
    platform: str  # sys.platform: esp32, linux, ...
    machine: str  # sys.implementation._machine, e.g. "Generic ESP32S3 module with ESP32S3"
    firmware_ran: bool  # our firmware has run since the last reset (its watchdog is armed)
    frozen: tuple[str, ...] = ()  # of lkd and device_protocol, those frozen into the image (firmware/manifest.py)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


# frozen: imported with only .frozen on the path, whatever is loaded from the flash put back
_INFO = ("import sys\n"
         "def _fz(n):\n"
         " o=sys.modules.pop(n,None);p=sys.path[:];sys.path[:]=['.frozen']\n"
         " try:\n  __import__(n);return True\n except ImportError:\n  return False\n"
         " finally:\n  sys.path[:]=p;sys.modules.pop(n,None)\n  if o is not None:sys.modules[n]=o\n"
         "i=sys.implementation\n"
         "print(repr((tuple(i.version[:3]),getattr(i,'_mpy',None),sys.platform,getattr(i,'_machine',''),"
         "'lkd.boot' in sys.modules,tuple(n for n in ('lkd','device_protocol') if _fz(n)))))\n"
         "del _fz")

# First, and short (the board compiles it in what heap the interrupted firmware
# left): when our firmware ran, hold its watchdog off and give its heap back (its
# tasks live on in asyncio's queue, its modules in sys.modules, the task that ran
# last in asyncio.core.cur_task, which new_event_loop() keeps); prints whether it ran.
_HOLD = ("import sys\nr='lkd.boot' in sys.modules\nif r:\n import machine,asyncio,gc\n"
         " machine.WDT(timeout=%d).feed()\n asyncio.new_event_loop()\n"
         " for n in [n for n in sys.modules if n[:4]=='lkd.' or n in ('lkd','main','app','device_protocol')]:\n"
         "  del sys.modules[n]\n asyncio.core.cur_task=None\n gc.collect()\nprint(r)" % HOLD_MS)

# sha256 of each path, or None when it does not exist; one round trip for all
_HASHES = ("import hashlib,binascii\n"
           "def _h(p):\n"
           " try:\n  f=open(p,'rb')\n except OSError:\n  return None\n"
           " h=hashlib.sha256();b=bytearray(%d);m=memoryview(b)\n"
           " while True:\n  n=f.readinto(b)\n  if not n:\n   break\n  h.update(m[:n])\n"
           " f.close()\n return binascii.hexlify(h.digest()).decode()\n"
           "print(repr([_h(p) for p in %r]))\n"
           "del _h")

_LISTDIR = ("import os\n"
            "try:\n print(repr([(e[0],e[1]) for e in os.ilistdir(%r)]))\n"
            "except OSError:\n print('None')")


class BoardRepl:
    """`with BoardRepl(port) as b:` interrupts the board's program and holds its raw REPL."""

    def __init__(self, port: str | None = None, *, connect_timeout: float = 5.0, read_timeout: float = 1.0):
        self.port = find_port(port)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.transport = None
        self.info: BoardInfo | None = None
        self._reset = False
        self._deadline = float("inf")

    # --- session

    def open(self) -> "BoardRepl":
        try:
            from mpremote.transport_serial import SerialTransport, TransportError
        except ImportError:
            raise BoardToolError("the board tools need mpremote: pip install 'lkdevice[board]'") from None
        open_port(self.port).close()  # a clear NoBoard for a missing, busy or forbidden port
        try:
            # mpremote prints what it got when the REPL does not answer: not for our users' screens
            with contextlib.redirect_stdout(io.StringIO()):
                self.transport = SerialTransport(self.port, baudrate=115200, timeout=self.read_timeout)
                self.transport.enter_raw_repl(soft_reset=False, timeout_overall=self.connect_timeout)
        except TransportError:
            self._close_transport()
            raise NoRepl(f"no MicroPython REPL answered on {self.port} within {self.connect_timeout:g} s "
                         "(is MicroPython flashed? `lkdevice flash`; is the board in its bootloader? "
                         "press its reset button)") from None
        except OSError as e:
            self._close_transport()
            raise NoBoard(why_not(self.port, e)) from None
        self._bound_reads(self.transport)
        try:
            ran = self.exec(_HOLD).decode(errors="replace").strip() == "True"
        except BoardCodeError as e:
            if "MemoryError" not in str(e):
                raise
            # the interrupted firmware left no heap even to compile a line: a soft
            # reset frees it and, from the raw REPL, does not run main.py; on an
            # ESP32 the firmware's watchdog stays armed through it, so hold it first
            self._soft_reset_raw()
            self.exec(_HOLD)
            ran = True
        self.info = self._read_info(ran)
        return self

    def _bound_reads(self, transport) -> None:
        # mpremote's waits end on a quiet line only: a board that resets and prints
        # (its firmware's log) would keep a command waiting forever. Each command
        # gets an overall deadline too.
        read_until = transport.read_until

        def bounded(min_num_bytes, ending, timeout=10, data_consumer=None, timeout_overall=None):
            left = max(0.0, self._deadline - time.monotonic())
            return read_until(min_num_bytes, ending, timeout=timeout, data_consumer=data_consumer,
                              timeout_overall=left if timeout_overall is None else min(left, timeout_overall))
        transport.read_until = bounded

    def _soft_reset_raw(self) -> None:
        from mpremote.transport_serial import TransportError
        self._deadline = time.monotonic() + self.connect_timeout
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.transport.enter_raw_repl(soft_reset=True, timeout_overall=self.connect_timeout)
        except TransportError:
            raise NoRepl(f"the board on {self.port} did not come back from a soft reset") from None

    def _read_info(self, ran: bool) -> BoardInfo:
        version, mpy, platform, machine, _, frozen = self.eval_script(_INFO)
        return BoardInfo(tuple(version), mpy, platform, machine, ran, tuple(frozen))

    def close(self) -> None:
        if self.transport is None:
            return
        if not self._reset:
            try:
                self.transport.exit_raw_repl()
            except Exception:
                pass
        self._close_transport()

    def _close_transport(self) -> None:
        t, self.transport = self.transport, None
        if t is not None:
            try:
                t.close()
            except Exception:
                pass

    def __enter__(self) -> "BoardRepl":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- commands

    def exec(self, code: str, timeout: float = 10.0) -> bytes:
        """Run `code` on the board; its printed output. Errors on the board: BoardCodeError
        (the board's last traceback line only: never the code, which may hold secrets)."""
        from mpremote.transport_serial import TransportError
        assert self.transport is not None
        self._deadline = time.monotonic() + timeout
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got on failures
                out, err = self.transport.exec_raw(code, timeout=timeout)
        except TransportError:
            raise NoRepl(f"the board on {self.port} stopped answering") from None
        except OSError as e:
            raise NoBoard(why_not(self.port, e)) from None
        if err:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise BoardCodeError(f"the board said: {last[0]}")
        return out

    def eval_script(self, code: str, timeout: float = 10.0):
        """Run `code`, which prints one repr(); its value."""
        out = self.exec(code, timeout).decode(errors="replace").strip()
        try:
            return ast.literal_eval(out.splitlines()[-1])
        except (ValueError, SyntaxError, IndexError):
            raise BoardCodeError(f"unexpected answer from the board: {out[:80]!r}") from None

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        """sha256 (hex) of each file on the board, None where there is none."""
        if not paths:
            return {}
        values = self.eval_script(_HASHES % (CHUNK, list(paths)), timeout=30.0)
        return dict(zip(paths, values))

    def listdir(self, path: str) -> list[tuple[str, bool]] | None:
        """(name, is_dir) of each entry of a directory on the board; None if there is none."""
        entries = self.eval_script(_LISTDIR % path)
        if entries is None:
            return None
        return [(name, kind == 0x4000) for name, kind in entries]

    def makedirs(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        for i in range(1, len(parts) + 1):
            self.exec("import os\ntry:\n os.mkdir(%r)\nexcept OSError:\n pass" % "/".join(parts[:i]))

    def write_file(self, path: str, data: bytes) -> None:
        """Write a file whole: to a temporary name, then renamed over the old one, so an
        interrupted copy never leaves half a module that would break the next boot."""
        tmp = path + ".tmp"
        try:
            self.exec("f=open(%r,'wb')\nw=f.write" % tmp)
            for i in range(0, len(data), CHUNK):
                self.exec("w(%r)" % data[i:i + CHUNK], timeout=20.0)
        except BoardCodeError as e:
            self.exec("import os\ntry:\n f.close()\n os.remove(%r)\nexcept Exception:\n pass" % tmp)
            if "28" in str(e) or "ENOSPC" in str(e):
                raise BoardToolError(f"the board's flash is full ({path}, {len(data)} bytes): remove files "
                                     "you added (mpremote fs rm), or erase it (lkdevice flash --erase)") from None
            raise
        self.exec("f.close()\nimport os\n"
                  "try:\n os.rename(%r,%r)\n"
                  "except OSError:\n os.remove(%r)\n os.rename(%r,%r)\n"
                  "del f,w" % (tmp, path, path, tmp, path))

    def remove(self, path: str) -> None:
        self.exec("import os\nos.remove(%r)" % path)

    def reset(self) -> None:
        """Hard reset: the board boots its main.py (and any watchdog is cleared)."""
        from mpremote.transport_serial import TransportError
        assert self.transport is not None
        self._reset = True
        self._deadline = time.monotonic() + 5.0
        try:
            self.transport.exec_raw_no_follow("import machine\nmachine.reset()")
        except (TransportError, OSError):
            pass  # the board may be gone before it acknowledged: that is the reset
