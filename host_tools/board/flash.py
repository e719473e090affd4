"""`lkdevice flash`: MicroPython onto a board, with esptool's Python API.

The decisions (which image a board needs, where it goes, whether a file is
that image, which serial port is the board) are plain functions of their
inputs; `flash()` is the thin part that talks to the chip through esptool
(`detect_chip`, `run_stub`, `attach_flash`, `write_flash`, `reset_chip`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TextIO

DOWNLOAD_PAGE = "https://micropython.org/download/{board}/"
ESP_IMAGE_MAGIC = 0xE9
ROM_BAUD = 115200  # every ESP32 ROM bootloader starts at this rate; the stub then switches


class FlashError(Exception):
    """A user-facing refusal or failure: one line, no traceback."""


@dataclass(frozen=True)
class Chip:
    name: str            # as board files spell it
    esptool_name: str    # esptool's CHIP_NAME
    image_chip_id: int   # the chip id in an ESP image's extended header
    offset: int          # where MicroPython's merged image goes (its board.json deploy_options)
    mp_board: str        # MicroPython's generic board for this chip
    spiram_variant: str | None  # the download page's variant for boards with PSRAM


# Offsets from MicroPython's ports/esp32/boards/ESP32_GENERIC*/board.json; image
# chip ids from ESP-IDF's esp_chip_id_t. The S3 build auto-detects quad PSRAM;
# the 8 MB PSRAM parts our S3 board files name (N16R8, S3R8) are octal: SPIRAM_OCT.
CHIPS: dict[str, Chip] = {c.name: c for c in (
    Chip("esp32", "ESP32", 0, 0x1000, "ESP32_GENERIC", "SPIRAM"),
    Chip("esp32s2", "ESP32-S2", 2, 0x1000, "ESP32_GENERIC_S2", None),
    Chip("esp32s3", "ESP32-S3", 9, 0x0, "ESP32_GENERIC_S3", "SPIRAM_OCT"),
    Chip("esp32c3", "ESP32-C3", 5, 0x0, "ESP32_GENERIC_C3", None),
    Chip("esp32c6", "ESP32-C6", 13, 0x0, "ESP32_GENERIC_C6", None),
)}
CHIP_BY_IMAGE_ID = {c.image_chip_id: c for c in CHIPS.values()}

# USB serial bridges found on ESP32 boards, and Espressif's own USB.
USB_IDS: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "CP210x",
    (0x10C4, 0xEA70): "CP2105",
    (0x1A86, 0x7523): "CH340",
    (0x1A86, 0x55D3): "CH343",
    (0x1A86, 0x55D4): "CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT230X",
    (0x303A, 0x1001): "Espressif USB-JTAG/serial",
    (0x303A, 0x0002): "Espressif USB (ROM download mode)",
}


# -- board files -------------------------------------------------------------------

def boards_dir() -> Path:
    import lkdevice
    return Path(lkdevice.__file__).resolve().parent.parent / "boards"


def load_board(name: str, directory: Path | None = None) -> dict:
    directory = directory or boards_dir()
    path = directory / f"{name}.json"
    if not path.is_file():
        names = sorted(p.stem for p in directory.glob("*.json"))
        raise FlashError(f"no board {name!r} in {directory}; boards: {', '.join(names)}")
    try:
        board = json.loads(path.read_text())
    except ValueError as exc:
        raise FlashError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(board, dict) or "chip" not in board:
        raise FlashError(f"{path}: no 'chip' field")
    return board


def chip_of(board: dict) -> Chip:
    chip = board.get("chip")
    if chip == "sim":
        raise FlashError(f"board {board.get('name')!r} is the simulated board: run it with `lkdevice sim esp32`, "
                         "there is nothing to flash")
    if chip not in CHIPS:
        raise FlashError(f"board {board.get('name')!r}: chip {chip!r} is not one lkdevice can flash "
                         f"({', '.join(CHIPS)})")
    return CHIPS[chip]


@dataclass(frozen=True)
class ImageChoice:
    mp_board: str
    variant: str | None
    url: str

    @property
    def file_pattern(self) -> str:
        middle = f"-{self.variant}" if self.variant else ""
        return f"{self.mp_board}{middle}-<date>-v<version>.bin"


def image_for(board: dict) -> ImageChoice:
    chip = chip_of(board)
    variant = chip.spiram_variant if board.get("psram") else None
    return ImageChoice(chip.mp_board, variant, DOWNLOAD_PAGE.format(board=chip.mp_board))


def download_hint(board: dict) -> str:
    """The one line that says which image to get, from where, and what to run then."""
    choice = image_for(board)
    name = board.get("name", "?")
    variant = f" (variant {choice.variant}, for the board's PSRAM)" if choice.variant else ""
    pdm = ""
    if (board.get("mic") or {}).get("type") == "pdm":
        pdm = " (its PDM microphone needs a build with I2S.PDM_RX, which stock builds lack: see boards/README.md)"
    return (f"download MicroPython for {choice.mp_board}{variant}, a file like {choice.file_pattern}, "
            f"from {choice.url}, then: lkdevice flash --board {name} --image FILE.bin{pdm}")


# -- image files -------------------------------------------------------------------

def check_image(data: bytes, chip: Chip, what: str = "the image") -> None:
    """Refuse what is not an ESP image for `chip` (it goes at the bootloader's offset)."""
    if len(data) < 24:
        raise FlashError(f"{what} is {len(data)} bytes: too short to be a MicroPython image")
    if data[0] != ESP_IMAGE_MAGIC:
        hint = ""
        if data[:4] == b"UF2\n":
            hint = " (it is a UF2 file: download the .bin)"
        elif data[:4] == b"\x7fELF":
            hint = " (it is an ELF file: download the .bin)"
        elif chip.offset and len(data) > chip.offset and data[chip.offset] == ESP_IMAGE_MAGIC:
            hint = f" (it looks like a dump of the whole flash from 0x0; the .bin from the download page starts " \
                   f"with the bootloader, written at {chip.offset:#x})"
        raise FlashError(f"{what} is not an ESP firmware image: its first byte is {data[0]:#04x}, "
                         f"not {ESP_IMAGE_MAGIC:#04x}{hint}")
    image_id = int.from_bytes(data[12:14], "little")
    if image_id != chip.image_chip_id:
        other = CHIP_BY_IMAGE_ID.get(image_id)
        built_for = other.esptool_name if other else f"chip id {image_id}"
        raise FlashError(f"{what} is built for {built_for}, but the board file says {chip.esptool_name}: "
                         f"download the {chip.mp_board} image")


def read_image(path: str | Path, chip: Chip) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FlashError(f"cannot read {path}: {exc.strerror or exc}") from None
    check_image(data, chip, str(path))
    return data


# -- serial ports ------------------------------------------------------------------

@dataclass(frozen=True)
class PortInfo:
    device: str
    vid: int | None
    pid: int | None
    description: str = ""


def list_ports() -> list[PortInfo]:
    try:
        from serial.tools import list_ports as lp
    except ImportError:
        raise FlashError("pyserial is not installed: pip install 'lkdevice[board]'") from None
    return [PortInfo(p.device, p.vid, p.pid, p.description or "") for p in lp.comports()]


def board_ports(ports: Iterable[PortInfo]) -> list[tuple[PortInfo, str]]:
    return [(p, USB_IDS[(p.vid, p.pid)]) for p in ports if (p.vid, p.pid) in USB_IDS]


def pick_port(ports: Iterable[PortInfo]) -> str:
    """The one USB serial port that looks like an ESP32 board, or a FlashError that says what to do."""
    found = board_ports(ports)
    if not found:
        raise FlashError("no board found: is it plugged in, with a data cable (not a charge-only one)? "
                         "On Linux, is your user in the dialout group? Or name the port with --port")
    if len(found) > 1:
        listed = ", ".join(f"{p.device} ({kind})" for p, kind in found)
        raise FlashError(f"several boards found: {listed}; choose one with --port")
    return found[0][0].device


# -- esptool -----------------------------------------------------------------------

class ProgressBar:
    """One line that redraws itself: `Writing [#####.....]  52%` (of what esptool sends, compressed)."""

    def __init__(self, out: TextIO = sys.stderr, width: int = 30):
        self.out = out
        self.width = width
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        if pct == self.last:
            return
        self.last = pct
        filled = self.width * pct // 100
        bar = "#" * filled + "." * (self.width - filled)
        end = "\n" if done >= total else ""
        self.out.write(f"\rWriting [{bar}] {pct:3d}%{end}")
        self.out.flush()


class _Sink:
    """Where esptool's logger goes during one `flash()`: esptool has one process-wide logger."""
    progress: Callable[[int, int], None] = staticmethod(lambda done, total: None)
    say: Callable[[str], None] | None = None
    installed = False


def _install_logger(progress: Callable[[int, int], None], say: Callable[[str], None] | None) -> None:
    """esptool reports through its logger: its progress hook drives our bar, its chatter is dropped
    unless verbose, its warnings are passed on."""
    _Sink.progress, _Sink.say = staticmethod(progress), say
    if _Sink.installed:
        return
    from esptool.logger import TemplateLogger, log

    class _Logger(TemplateLogger):
        def print(self, *args, **kwargs):
            if _Sink.say is not None:
                text = " ".join(str(a) for a in args).strip()
                if text:
                    _Sink.say(f"esptool: {text}")

        def note(self, message):
            self.print(message)

        def warning(self, message):
            if _Sink.say is not None:  # a PTY or a bridge without RTS/DTR is worth a word only when asked
                _Sink.say(f"esptool warning: {message}")

        def error(self, message):
            sys.stderr.write(f"esptool: {message}\n")

        def stage(self, finish=False):
            pass

        def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
            _Sink.progress(cur_iter, total_iters)

        def set_verbosity(self, verbosity):
            pass

    log.set_logger(_Logger())
    _Sink.installed = True


@dataclass
class FlashResult:
    port: str
    chip: str
    offset: int
    size: int


def flash(board: dict, image: bytes, port: str, *, baud: int = 460800, erase: bool = False,
          progress: Callable[[int, int], None] | None = None, say: Callable[[str], None] | None = None,
          connect_attempts: int = 7) -> FlashResult:
    """Write `image` (already checked with `check_image`) at the chip's offset, after checking the chip."""
    try:
        from esptool.cmds import attach_flash, detect_chip, reset_chip, run_stub, write_flash
        from esptool.util import FatalError
        from serial import SerialException
    except ImportError:
        raise FlashError("esptool is not installed: pip install 'lkdevice[board]'") from None
    chip = chip_of(board)
    _install_logger(progress or (lambda done, total: None), say)
    try:
        try:
            rom = detect_chip(port, ROM_BAUD, connect_mode="default-reset", connect_attempts=connect_attempts)
        except FatalError as exc:
            raise FlashError(_connect_failure(port, exc)) from None
        with rom:  # closes the port, which the stub loader below shares
            if rom.CHIP_NAME != chip.esptool_name:
                raise FlashError(f"the board on {port} is an {rom.CHIP_NAME}, but board {board.get('name')!r} is "
                                 f"an {chip.esptool_name}: nothing was written. Pick the board file for this "
                                 "board (lkdevice flash --board ...), or plug in the right board")
            esp = run_stub(rom)
            if baud != ROM_BAUD:
                esp.change_baud(baud)
            attach_flash(esp)
            write_flash(esp, [(chip.offset, image)], erase_all=erase)
            reset_chip(esp, "hard-reset")
            return FlashResult(port, esp.CHIP_NAME, chip.offset, len(image))
    except FatalError as exc:
        slower = f"; if it failed partway, try --baud {ROM_BAUD}" if baud != ROM_BAUD else ""
        raise FlashError(f"flashing failed on {port}: {_first_line(exc)}{slower}") from None
    except (SerialException, OSError) as exc:  # unplugged mid-way: EIO, or pyserial's word for it
        raise FlashError(f"the serial port {port} failed: {exc}; is the board still plugged in?") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def port_trouble(port: str, text: str) -> str:
    """Why a serial port would not open, in words (pyserial's message, read)."""
    if "No such file" in text or "Errno 2" in text:
        return f"no such port {port}: is the board plugged in (with a data cable), and is --port right?"
    if "Permission denied" in text or "Errno 13" in text:
        return f"permission denied on {port}: on Linux add your user to the dialout group (then log in again)"
    if "busy" in text.lower() or "Errno 16" in text or "lock" in text.lower():
        return f"{port} is busy: close the program using it (a serial monitor, another lkdevice)"
    return f"cannot open {port}: {text.strip().splitlines()[0] if text.strip() else 'unknown error'}"


def _connect_failure(port: str, exc: BaseException) -> str:
    text = str(exc)
    if "Could not open" in text:
        return port_trouble(port, text)
    return (f"no ESP32 bootloader answered on {port} ({_first_line(exc)}): hold the board's BOOT button, "
            "press and release RESET (EN), release BOOT, then run this again")


def run(args) -> int:
    """`lkdevice flash`: returns the exit code, prints one line on a mistake."""
    try:
        board = load_board(args.board)
        chip = chip_of(board)
        if not args.image:
            print(download_hint(board))
            return 1  # nothing was flashed: a script's next step must not run
        image = read_image(args.image, chip)
        port = args.port or pick_port(list_ports())
        say = (lambda line: print(line, file=sys.stderr)) if getattr(args, "verbose", False) else None
        print(f"flashing {Path(args.image).name} ({len(image) / 1024:.0f} KB) to the {chip.esptool_name} on "
              f"{port} at {chip.offset:#x}", file=sys.stderr)
        result = flash(board, image, port, baud=args.baud, erase=args.erase, progress=ProgressBar(), say=say)
    except FlashError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"flashed MicroPython to the {result.chip} on {result.port}; next: lkdevice install --board {args.board}")
    return 0
