"""Join time: lkdevice vs the official `livekit` SDK against a local livekit-server.

Join time runs from the start of connect() until our first audio is acknowledged:

- ours:     lkdevice.connect() -> room.publish_audio() returned with a track sid
            -> first 10 ms frame written and `first_frame_sent` set (aiortc's
            sender pulled the first frame to encode it).
- official: rtc.AudioSource + LocalAudioTrack created -> Room.connect()
            -> local_participant.publish_track() returned the publication with a
            sid -> first capture_frame() of 10 ms done.

Runs alternate ours/official (which one goes first alternates too), each in a
fresh room, after `--warmup` unrecorded runs of each (imports, native library
start-up, first-use costs). Prints one JSON object on stdout.

    host_tools/isolated.sh python bench/join_time.py [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

import numpy as np

import _common as common

log = logging.getLogger("bench.join_time")

RATE = 48000
FRAME = RATE // 100  # 10 ms


async def join_ours(url: str, room_name: str, timeout: float, single_pc: bool | None = None) -> dict:
    import lkdevice

    tok = common.token("dev-ours", room_name)
    room = None
    try:
        t0 = time.monotonic()
        room = await asyncio.wait_for(lkdevice.connect(url, tok), timeout)
        t_connected = time.monotonic()
        mic = await asyncio.wait_for(room.publish_audio(None), timeout)
        if not mic.sid:
            raise RuntimeError("publish_audio returned without a track sid")
        t_published = time.monotonic()
        await mic.track.write(np.zeros(FRAME, np.int16), RATE)
        await asyncio.wait_for(mic.track.first_frame_sent.wait(), timeout)
        t_done = time.monotonic()
        return {
            "total": t_done - t0,
            "connect": t_connected - t0,
            "publish": t_published - t_connected,
            "first_frame": t_done - t_published,
            "sid": mic.sid,
        }
    finally:
        if room is not None:
            await asyncio.wait_for(room.disconnect(), 10)


async def join_official(url: str, room_name: str, timeout: float, single_pc: bool | None = None) -> dict:
    from livekit import rtc

    tok = common.token("dev-official", room_name)
    room = rtc.Room()
    options = rtc.RoomOptions(single_peer_connection=single_pc)
    try:
        t0 = time.monotonic()
        source = rtc.AudioSource(RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        await asyncio.wait_for(room.connect(url, tok, options), timeout)
        t_connected = time.monotonic()
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        pub = await asyncio.wait_for(room.local_participant.publish_track(track, opts), timeout)
        if not pub.sid:
            raise RuntimeError("publish_track returned a publication without a sid")
        t_published = time.monotonic()
        frame = rtc.AudioFrame(np.zeros(FRAME, np.int16).tobytes(), RATE, 1, FRAME)
        await asyncio.wait_for(source.capture_frame(frame), timeout)
        t_done = time.monotonic()
        result = {
            "total": t_done - t0,
            "connect": t_connected - t0,
            "publish": t_published - t_connected,
            "first_frame": t_done - t_published,
            "sid": pub.sid,
        }
        await source.aclose()
        return result
    finally:
        await asyncio.wait_for(room.disconnect(), 10)


CLIENTS = {"ours": join_ours, "official": join_official}


async def run(args, url: str) -> dict:
    samples: dict[str, list[dict]] = {"ours": [], "official": []}
    errors: list[dict] = []
    for w in range(args.warmup):
        for name, fn in CLIENTS.items():
            try:
                r = await fn(url, common.fresh_room(f"join-warm-{name}"), args.timeout, args.official_single_pc)
                log.info("warm-up %-8s %.1f ms", name, r["total"] * 1000)
            except Exception as exc:
                log.exception("warm-up %s failed", name)
                errors.append({"client": name, "run": f"warmup{w}", "error": repr(exc)})
        await asyncio.sleep(args.pause)
    for i in range(args.runs):
        order = ["ours", "official"] if i % 2 == 0 else ["official", "ours"]
        for name in order:
            try:
                r = await CLIENTS[name](url, common.fresh_room(f"join-{name}-{i}"), args.timeout,
                                       args.official_single_pc)
            except Exception as exc:
                log.exception("run %d %s failed", i, name)
                errors.append({"client": name, "run": i, "error": repr(exc)})
                continue
            samples[name].append(r)
            log.info("run %d %-8s total %.1f ms (connect %.1f, publish %.1f, first frame %.1f)", i, name,
                     r["total"] * 1000, r["connect"] * 1000, r["publish"] * 1000, r["first_frame"] * 1000)
            await asyncio.sleep(args.pause)

    out: dict = {"benchmark": "join_time", "runs": args.runs, "warmup": args.warmup,
                 "official_single_peer_connection": args.official_single_pc}
    for name in CLIENTS:
        rs = samples[name]
        entry = common.summary_ms([r["total"] for r in rs])
        entry["phases"] = {ph: common.summary_ms([r[ph] for r in rs]) for ph in ("connect", "publish", "first_frame")}
        entry["samples_ms"] = [round(r["total"] * 1000, 2) for r in rs]
        out[name] = entry
    out["ratio_ours_over_official_median"] = common.ratio(out["ours"]["median_ms"], out["official"]["median_ms"])
    out["errors"] = errors
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="measured runs per client (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded runs per client first (default 1)")
    p.add_argument("--timeout", type=float, default=15.0, help="per-step timeout in seconds")
    p.add_argument("--official-single-pc", action="store_true", default=None,
                   help="official SDK with RoomOptions(single_peer_connection=True), like our /rtc/v1 "
                        "(default: the SDK's own default, two peer connections)")
    p.add_argument("--pause", type=float, default=0.2, help="seconds between runs")
    p.add_argument("--deadline", type=float, default=110.0, help="hard limit for the whole run in seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    common.require_isolation()
    common.setup_logging(args.verbose)

    return common.run_live("join_time", run, args)


if __name__ == "__main__":
    sys.exit(main())
