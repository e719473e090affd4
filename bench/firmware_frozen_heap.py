"""The firmware's heap with its modules frozen into the image, and without.

Builds the MicroPython unix port from a source folder (a git clone of
micropython, with lib/micropython-lib; lib/mbedtls for ssl, else built
without), once per build below, each with mpy-cross from the same source so
the frozen and the flash .mpy match the binary. Then runs a full session per
build and heap size, as bench/firmware_heap.py does: the simulated ESP32 ->
`lkdevice gateway` -> livekit-server -> official-SDK echo peer -> back, a
440 Hz tone into the microphone, its echo out of the speaker.

| build | frozen into the binary | on the flash / MICROPYPATH |
|---|---|---|
| `standard` | the port's own set (asyncio, ssl, mip) | firmware and hil/sim as .mpy (`lkdevice sim` today) |
| `sim-frozen` | + hil/sim (machine, network, neopixel) | firmware as .mpy |
| `frozen` | firmware/manifest.py | hil/sim as .mpy |
| `frozen+sim` | firmware/manifest.py + hil/sim | main.py only |

On a board `machine` and `network` are C, outside the heap, so `sim-frozen`
and `frozen+sim` are the figures for a board (not frozen, frozen); the other
two carry the simulation's ~18 KB of code on the heap as well.

Per session: the live heap after warm-up (gc.mem_alloc() after a collection,
every 5 s, from hil's stats file), the peak and lowest free (which reach the
heap size in every run: garbage builds up until the automatic collection),
and whether it worked: ran to the end without a MemoryError or traceback, and
audio made the round trip (frames at the echo peer, the echo's level at the
speaker). Per build also `imports`: the heap each firmware module takes when
imported in boot's order (no network; a gc.collect() before each reading).

    host_tools/isolated.sh python bench/firmware_frozen_heap.py /work/mpsrc
    host_tools/isolated.sh python bench/firmware_frozen_heap.py /work/mpsrc --m32 --run sim-frozen=96K,88K --run frozen+sim=64K,48K

--m32 builds the port 32-bit (gcc-multilib): objects, pointers and GC blocks the
size an ESP32's are (the pip port is 64-bit: every object word twice as big), so
`sim-frozen` and `frozen+sim` with --m32 are the nearest figures to a real board.
    host_tools/isolated.sh python bench/firmware_frozen_heap.py /work/mpsrc --run frozen+sim=64K,56K --seconds 30

Exits 0 when every build was built and every session measured (also when a
heap size was too small: that is a finding, reported as worked=false), 1 when
something failed, 2 on a bad source folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import _common as common
import firmware_heap
from _gateway import GatewayProcess

log = logging.getLogger("bench.firmware_frozen_heap")

BUILDS = {
    # name: (firmware frozen, hil/sim frozen)
    "standard": (False, False),
    "sim-frozen": (False, True),
    "frozen": (True, False),
    "frozen+sim": (True, True),
}
DEFAULT_RUNS = ["standard=128K,96K", "sim-frozen=96K,80K", "frozen=80K,64K", "frozen+sim=64K,48K"]
# the echo of a 0.3 full-scale tone comes back at an RMS of several thousand; silence is 0
MIN_ECHO_RMS = 500.0
MIN_ECHO_FRAMES = 100  # 1 s of the device's audio at the echo peer


class SourceError(RuntimeError):
    pass


def check_source(src: Path) -> dict:
    if not (src / "ports" / "unix" / "Makefile").is_file() or not (src / "mpy-cross").is_dir():
        raise SourceError(f"{src} is not a MicroPython source folder (no ports/unix/Makefile)")
    if not (src / "lib" / "micropython-lib" / "README.md").is_file():
        raise SourceError(f"{src}/lib/micropython-lib is empty: a frozen build needs it "
                          f"(git -C {src} submodule update --init lib/micropython-lib)")
    ssl = (src / "lib" / "mbedtls" / "include" / "mbedtls").is_dir()
    rev = subprocess.run(["git", "-C", str(src), "describe", "--always", "--dirty", "--tags"],
                         capture_output=True, text=True).stdout.strip() or None
    return {"path": str(src), "revision": rev, "ssl": ssl}


def make_flags(source: dict, m32: bool = False) -> list[str]:
    # the firmware needs neither ffi nor btree (their submodules are not needed either);
    # -march so that the viper modules freeze as native code, as a board's build does.
    # m32: a 32-bit build, whose objects are the size an ESP32's are (4-byte words, not 8)
    flags = ["MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0", f"MPY_CROSS_FLAGS=-march={'x86' if m32 else 'x64'}"]
    if m32:  # MicroPython dropped MICROPY_FORCE_32BIT; gcc-multilib's -m32 does it
        flags += ["CFLAGS_EXTRA=-m32", "LDFLAGS_EXTRA=-m32"]
    if not source["ssl"]:
        flags.append("MICROPY_PY_SSL=0")
    return flags


def write_manifest(path: Path, firmware: bool, hil: bool, paths: dict) -> None:
    lines = ["# written by bench/firmware_frozen_heap.py"]
    if firmware:
        lines.append(f"include({str(paths['firmware'] / 'manifest.py')!r})")
    else:
        lines.append('include("$(PORT_DIR)/variants/standard/manifest.py")')
    if hil:
        # stand-ins for what is C on a board: frozen, their code is off the heap as a board's is
        for mod in sorted(paths["hil"].glob("*.py")):
            lines.append(f"module({mod.name!r}, base_path={str(paths['hil'])!r}, opt=1)")
    path.write_text("\n".join(lines) + "\n")


def build(src: Path, name: str, source: dict, paths: dict, jobs: int, m32: bool = False) -> dict:
    firmware, hil = BUILDS[name]
    unix = src / "ports" / "unix"
    bdir = f"build-lkd{'32' if m32 else ''}-{name.replace('+', '-')}"
    (unix / bdir).mkdir(exist_ok=True)
    manifest = unix / bdir / "lkd-manifest.py"
    write_manifest(manifest, firmware, hil, paths)
    cmd = ["make", "-C", str(unix), f"-j{jobs}", f"BUILD={bdir}", *make_flags(source, m32),
           f"FROZEN_MANIFEST={manifest}"]
    log.info("building %s: %s", name, " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"build {name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    exe = unix / bdir / "micropython"
    from lkdevice.host_tools.simulator import native_arch
    if native_arch(str(exe)) != ("x86" if m32 else "x64"):
        raise RuntimeError(f"build {name}: {exe} is not a {'32' if m32 else '64'}-bit x86 binary")
    impl = subprocess.run([str(exe), "-c", "import sys; print(sys.implementation._mpy, sys.version)"],
                          capture_output=True, text=True).stdout.split(None, 1)
    return {"name": name, "firmware_frozen": firmware, "sim_frozen": hil, "word_bits": 32 if m32 else 64,
            "make": " ".join(cmd),
            "manifest": manifest.read_text().splitlines()[1:], "micropython": str(exe),
            "mpy_abi": int(impl[0]) if impl else None, "version": impl[1].strip() if len(impl) > 1 else None}


# Boot's imports, in its order; the heap each adds (code, constants, globals; qstrs with the module
# that interns them first). lkd.net, lkd.board and lkd.config are dropped again after boot.
PROFILE = r"""
import gc, sys
def used():
    gc.collect()
    return gc.mem_alloc()
out = []
base = used()
last = base
for name in ("asyncio", "machine", "device_protocol", "lkd.board", "lkd.config", "lkd.ws", "lkd.pcm",
             "lkd.codec", "lkd.device", "lkd.boot", "lkd.ui", "lkd.jitter", "lkd.audio", "network", "lkd.net"):
    __import__(name)
    now = used()
    out.append('"%s": %d' % (name, now - last))
    last = now
print("{" + ", ".join(out) + ', "total": %d}' % (last - base))
"""


def profile_imports(b: dict, paths: dict, mpy_cross: str) -> dict:
    """The heap each module takes once imported, laid out as the session's flash is."""
    from lkdevice.host_tools.simulator import SimulatedDevice
    dev = SimulatedDevice("ws://127.0.0.1:9/", "t", micropython=b["micropython"], mpy_cross=mpy_cross,
                          frozen_firmware=b["firmware_frozen"], frozen_hil=b["sim_frozen"])
    try:
        dev._make_flash()
        env = dict(os.environ, MICROPYPATH=":.frozen" if b["sim_frozen"] else "../hil::.frozen")
        r = subprocess.run([b["micropython"], "-X", "heapsize=512K", "-c", PROFILE], cwd=dev.flash, env=env,
                           capture_output=True, text=True, timeout=30)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": (r.stdout + r.stderr)[-500:]}
    finally:
        dev.cleanup()


def worked(s: dict) -> bool:
    return (s.get("ran_to_the_end") is True and s.get("exit_code") == 0
            and (s.get("echo_frames_from_device_10ms") or 0) >= MIN_ECHO_FRAMES
            and (s.get("speaker_rms_after_warmup") or 0) >= MIN_ECHO_RMS)


async def run_sessions(args, plan: list[tuple[str, list[str]]], builds: dict, mpy_cross: str,
                       server_url: str, gw_url: str) -> list[dict]:
    out = []
    for name, heaps in plan:
        b = builds[name]
        for heap in heaps:
            try:
                s = await firmware_heap.session(heap, server_url, gw_url, args, micropython=b["micropython"],
                                                mpy_cross=mpy_cross, frozen_firmware=b["firmware_frozen"],
                                                frozen_hil=b["sim_frozen"])
            except Exception as exc:
                log.exception("%s at %s failed", name, heap)
                out.append({"build": name, "heap": heap, "error": repr(exc)})
                continue
            s = {"build": name, "worked": worked(s), **s}
            if not args.samples:
                s.pop("live_samples_s_bytes", None)
            log.info("%s at %s: worked %s, live after warm-up %s, peak %s, min free %s", name, heap, s["worked"],
                     s["live_after_warmup"], s["peak_alloc_bytes"], s["min_free_bytes"])
            out.append(s)
    return out


def parse_plan(runs: list[str]) -> list[tuple[str, list[str]]]:
    plan = []
    for r in runs:
        name, _, heaps = r.partition("=")
        if name not in BUILDS or not heaps:
            raise SystemExit(f"--run wants BUILD=HEAP[,HEAP...] with BUILD one of {', '.join(BUILDS)}; got {r!r}")
        plan.append((name, [h for h in heaps.split(",") if h]))
    return plan


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mpsrc", help="MicroPython source folder (a git clone, with lib/micropython-lib)")
    p.add_argument("--run", action="append", metavar="BUILD=HEAPS",
                   help=f"a build and its heap sizes, repeatable (default: {' '.join(DEFAULT_RUNS)})")
    p.add_argument("--seconds", type=float, default=30.0, help="session length per heap size")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before the trend is taken")
    p.add_argument("--codec", default="pcm16", choices=["pcm16", "ulaw", "adpcm"])
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--jobs", type=int, default=2, help="make -j")
    p.add_argument("--deadline", type=float, default=900.0)
    p.add_argument("--samples", action="store_true", help="also print every live-heap sample")
    p.add_argument("--m32", action="store_true",
                   help="build the port 32-bit (needs gcc-multilib): objects the size of an ESP32's")
    p.add_argument("-v", "--verbose", action="store_true", help="also echo the firmware's log lines")
    args = p.parse_args()
    plan = parse_plan(args.run or DEFAULT_RUNS)
    common.require_isolation()
    common.setup_logging(args.verbose)
    from lkdevice.host_tools.simulator import repo_paths
    paths = repo_paths()
    src = Path(args.mpsrc).resolve()
    try:
        source = check_source(src)
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result: dict = {"benchmark": "firmware_frozen_heap",
                    "path": "simulated ESP32 -> gateway -> server -> echo peer -> back", "source": source}
    ok = False
    servers: list = []
    with common.watchdog(args.deadline, servers):
        try:
            r = subprocess.run(["make", "-C", str(src / "mpy-cross"), f"-j{args.jobs}"], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"mpy-cross build failed: {r.stderr[-2000:]}")
            mpy_cross = str(src / "mpy-cross" / "build" / "mpy-cross")
            builds = {name: build(src, name, source, paths, args.jobs, args.m32) for name in dict(plan)}
            for b in builds.values():
                b["imports"] = profile_imports(b, paths, mpy_cross)
                log.info("%s: heap per import %s", b["name"], b["imports"])
            result["builds"] = list(builds.values())
            server = common.start_server()
            servers.append(server)
            gw = None
            try:
                gw = GatewayProcess(server.url).start()
                servers.append(gw)
                result["sessions"] = asyncio.run(asyncio.wait_for(
                    run_sessions(args, plan, builds, mpy_cross, server.url, gw.url), args.deadline - 60))
                ok = bool(result["sessions"]) and all("error" not in s for s in result["sessions"])
            finally:
                if gw is not None:
                    gw.stop()
                common.stop_server(server, keep_workdir=not ok)
            result["table"] = [{"build": s["build"], "heap": s["heap"], "codec": args.codec, "worked": s.get("worked"),
                                "live_after_warmup_max": (s.get("live_after_warmup") or {}).get("max"),
                                "peak_alloc": s.get("peak_alloc_bytes"), "min_free": s.get("min_free_bytes"),
                                "heap_total": s.get("heap_total"),
                                "echo_frames_10ms": s.get("echo_frames_from_device_10ms"),
                                "errors": len(s.get("errors") or [])}
                               for s in result["sessions"]]
        except Exception as exc:
            log.exception("firmware_frozen_heap failed")
            result["error"] = repr(exc)
    result["environment"] = common.environment()
    common.emit(result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
