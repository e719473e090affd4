"""`lkdevice gateway` with its memory traced: where a growing RSS comes from (a diagnosis aid, not a target).

    LKDEVICE_TRACE_OUT=/tmp/gw-trace.jsonl LKDEVICE_TRACE_EVERY=10 \\
        python -m lkdevice.hil.gateway_trace gateway --livekit-url ws://... --listen 127.0.0.1:8765

Every LKDEVICE_TRACE_EVERY closed device sessions (and every LKDEVICE_TRACE_EVERY_S seconds, if set)
it appends one JSON line: RSS, what tracemalloc sees live (Python's own allocations: every object), glibc's
heap in use and free (mallinfo2: native libraries, Opus, SRTP, and what the allocator keeps after a free),
the object count, and the allocation sites grown most since the first checkpoint (the warm-up's end).
RSS growing while the traced memory stays flat is no Python leak. `SimEsp32(gateway="traced")` runs it.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import sys
import time
import tracemalloc

from .procinfo import rss_bytes

FRAMES = 8    # of each allocation's traceback: enough to see which part of the gateway asked
TOP = 15


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _malloc() -> dict[str, int]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"heap_in_use": m.uordblks, "heap_free": m.fordblks, "mmapped": m.hblkhd, "arena": m.arena}


def _site(stat) -> str:
    # the innermost frame in lkdevice (what of ours asked), else the innermost frame
    frames = list(stat.traceback)
    ours = next((f for f in reversed(frames) if "lkdevice" in f.filename or "/device/" in f.filename), None)
    f = ours or frames[-1]
    inner = frames[-1]
    where = f"{os.path.basename(f.filename)}:{f.lineno}"
    return where if f is inner else f"{where} -> {os.path.basename(inner.filename)}:{inner.lineno}"


class Tracer:
    def __init__(self, out: str, every: int, every_s: float | None):
        self.out, self.every, self.every_s = out, every, every_s
        self.sessions = 0
        self.base = None
        self.started = time.monotonic()

    def checkpoint(self, why: str) -> None:
        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        current, peak = tracemalloc.get_traced_memory()
        line = {"why": why, "t": round(time.monotonic() - self.started, 1), "sessions": self.sessions,
                "rss": rss_bytes(os.getpid()), "traced": current, "traced_peak": peak,
                "objects": len(gc.get_objects()), **_malloc()}
        if self.base is None:
            self.base = snap
        else:
            grown = [s for s in snap.compare_to(self.base, "traceback") if s.size_diff > 0][:TOP]
            line["top"] = [{"site": _site(s), "size_diff": s.size_diff, "count_diff": s.count_diff} for s in grown]
        with open(self.out, "a") as f:
            f.write(json.dumps(line) + "\n")

    def session_closed(self) -> None:
        self.sessions += 1
        if self.sessions % self.every == 0:
            self.checkpoint(f"{self.sessions} sessions")

    async def timer(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self.checkpoint(f"{time.monotonic() - self.started:.0f} s")


def install(out: str, every: int, every_s: float | None) -> Tracer:
    from lkdevice.gateway import server
    from lkdevice.gateway.session import DeviceSession

    tracemalloc.start(FRAMES)
    tracer = Tracer(out, every, every_s)
    close = DeviceSession.close

    async def traced_close(self, *a, **kw):
        first = not self.closed.is_set()
        await close(self, *a, **kw)
        if first:
            tracer.session_closed()

    DeviceSession.close = traced_close
    if every_s:
        start = server.Gateway.start

        async def start_with_timer(self):
            out = await start(self)
            self._tasks.spawn(tracer.timer(), "memory trace timer", force=True)
            return out
        server.Gateway.start = start_with_timer
    return tracer


def main(argv: list[str] | None = None) -> int:
    out = os.environ.get("LKDEVICE_TRACE_OUT", "gateway-trace.jsonl")
    every_s = float(os.environ["LKDEVICE_TRACE_EVERY_S"]) if os.environ.get("LKDEVICE_TRACE_EVERY_S") else None
    install(out, int(os.environ.get("LKDEVICE_TRACE_EVERY", "10")), every_s)
    from lkdevice.cli import main as cli
    return cli(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
