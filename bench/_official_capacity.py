"""The official-SDK side of gateway_capacity.py: N rooms of official participants
in one process, which gateway_capacity.py starts pinned to the gateway's core.

What a gateway built on the official `livekit` SDK would run: per device one
`rtc.Room`, an `rtc.AudioSource` at 16 kHz mono fed in 20 ms frames and an
`rtc.AudioStream` at 16 kHz mono, 20 ms frames, of the partner's track. The
load is gateway_capacity.py's (pairs in a room, a continuous 400 Hz tone and a
chirp marker once a second, paced on the monotonic clock), generated here
in-process since the SDK is the device's participant itself.

Driven over stdin/stdout, one JSON object a line:
    {"cmd": "step", "devices": N, "settle": s, "seconds": w}  ->  {"step": ..., "path": npz}
    {"cmd": "quit"}
The npz holds each device's window: arrival times and PCM of received frames,
its own send times and marker send times; gateway_capacity.py analyses it with
the same code as ours. Not a benchmark by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time

import numpy as np

import _common as common

log = logging.getLogger("bench.official_capacity")

RATE16 = 16000
FRAME = 320
FRAME_S = 0.02
QUEUE_MS = 60  # as the gateway's MIC_BUFFER_MS: what may wait for the encoder


class OfficialDevice:
    def __init__(self, index: int, identity: str, room: str, marker_frame: int):
        self.index = index
        self.identity = identity
        self.room_name = room
        self.marker_frame = marker_frame
        self.room = None
        self.source = None
        self.remote_track = None
        self.rx: list[tuple[float, bytes]] = []
        self.sends: list[float] = []
        self.marker_sends: list[tuple[float, float]] = []
        self.max_late = 0.0
        self.error: str | None = None
        self._tasks: list[asyncio.Task] = []

    async def join(self, url: str, timeout: float) -> None:
        from livekit import rtc

        self.room = rtc.Room()

        @self.room.on("track_subscribed")
        def _subscribed(track, publication, participant) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO and self.remote_track is None:
                self.remote_track = track
                self._spawn(self._receive(track))

        await asyncio.wait_for(self.room.connect(url, common.token(self.identity, self.room_name),
                                                 rtc.RoomOptions(auto_subscribe=True)), timeout)
        self.source = rtc.AudioSource(RATE16, 1, queue_size_ms=QUEUE_MS)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await asyncio.wait_for(self.room.local_participant.publish_track(track, opts), timeout)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._ended)
        self._tasks.append(task)

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = repr(task.exception())
            log.warning("%s: %s", self.identity, self.error)

    async def _receive(self, track) -> None:
        from livekit import rtc

        stream = rtc.AudioStream(track, sample_rate=RATE16, num_channels=1, frame_size_ms=20)
        async for ev in stream:
            self.rx.append((time.monotonic(), bytes(ev.frame.data)))

    def start(self, tone: np.ndarray, chirp: np.ndarray) -> None:
        self._spawn(self._stream(tone, chirp))

    async def _stream(self, tone: np.ndarray, chirp: np.ndarray) -> None:
        from livekit import rtc

        def frame(pcm: np.ndarray):
            return rtc.AudioFrame(np.ascontiguousarray(pcm, dtype=np.int16).tobytes(), RATE16, 1, FRAME)

        tone_f = frame(tone)
        chirp_f = [frame(chirp[i * FRAME:(i + 1) * FRAME]) for i in range(len(chirp) // FRAME)]
        n_marker = len(chirp_f)
        t0 = time.monotonic()
        k = 0
        first_t = 0.0
        while True:
            due = t0 + k * FRAME_S
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                self.max_late = max(self.max_late, now - due)
            pos = (k - self.marker_frame) % 50
            f = chirp_f[pos] if pos < n_marker and k >= 50 else tone_f
            t = time.monotonic()
            await self.source.capture_frame(f)
            self.sends.append(t)
            if k >= 50 and pos == 0:
                first_t = t
            elif k >= 50 and pos == n_marker - 1:
                self.marker_sends.append((first_t, t))
            k += 1

    async def inbound(self) -> dict:
        """The WebRTC receiver's counters for the partner's track (concealment, loss)."""
        if self.remote_track is None:
            return {}
        with contextlib.suppress(Exception):
            for s in await asyncio.wait_for(self.remote_track.get_stats(), 5):
                if s.HasField("inbound_rtp"):
                    ib = s.inbound_rtp
                    return {"concealed": ib.inbound.concealed_samples,
                            "samples": ib.inbound.total_samples_received,
                            "packets_lost": ib.received.packets_lost,
                            "packets": ib.received.packets_received}
        return {}

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self.room is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.room.disconnect(), 5)


def _delta(a: list[dict], b: list[dict]) -> dict:
    out = {"concealed": 0, "samples": 0, "packets_lost": 0, "packets": 0}
    for x, y in zip(a, b):
        if x and y:
            for k in out:
                out[k] += max(0, y[k] - x[k])
    return out


async def serve(args) -> None:
    import gateway_capacity as gc

    tone = (gc.TONE_AMPLITUDE * 32767 * np.sin(2 * np.pi * gc.TONE_HZ * np.arange(FRAME) / RATE16)).astype(np.int16)
    chirp = gc.marker_chirp()
    devices: list[OfficialDevice] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": True})
    step_no = 0
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                break
            target = cmd["devices"]
            tj = time.monotonic()
            new = []
            while len(devices) + len(new) < target:
                i = len(devices) + len(new)
                room = f"{args.run_id}-{i // 2}"
                new += [OfficialDevice(i, f"sdk{i}", room, (i * 7) % 50),
                        OfficialDevice(i + 1, f"sdk{i + 1}", room, ((i + 1) * 7) % 50)]
            sem = asyncio.Semaphore(args.join_concurrency)

            async def join(d: OfficialDevice) -> None:
                async with sem:
                    await d.join(args.url, args.timeout)

            results = await asyncio.gather(*(join(d) for d in new), return_exceptions=True)
            errors = [f"{d.identity}: {r!r}" for d, r in zip(new, results) if isinstance(r, BaseException)]
            for d, r in zip(new, results):
                if not isinstance(r, BaseException):
                    d.start(tone, chirp)
            devices.extend(new)
            join_s = time.monotonic() - tj
            await asyncio.sleep(cmd["settle"])
            before = [await d.inbound() for d in devices]
            for d in devices:
                d.max_late = 0.0
            w0 = time.monotonic()
            reply({"window_start": w0})
            await asyncio.sleep(cmd["seconds"])
            w1 = time.monotonic()
            reply({"window_end": w1})
            await asyncio.sleep(0.3)  # markers sent near the end arrive
            after = [await d.inbound() for d in devices]
            step_no += 1
            path = os.path.join(args.out_dir, f"step{step_no}.npz")
            arrays: dict[str, np.ndarray] = {}
            for d in devices:
                rx = [(t, f) for t, f in d.rx if w0 - 1.0 <= t <= w1 + 0.3]
                arrays[f"rx_t{d.index}"] = np.array([t for t, _ in rx], dtype=np.float64)
                arrays[f"rx_pcm{d.index}"] = np.frombuffer(b"".join(f for _, f in rx), dtype=np.int16)
                arrays[f"sends{d.index}"] = np.array([t for t in d.sends if w0 - 2.0 <= t <= w1], dtype=np.float64)
                arrays[f"markers{d.index}"] = np.array([m for m in d.marker_sends if w0 - 1.0 <= m[0] <= w1],
                                                       dtype=np.float64).reshape(-1, 2)
                arrays[f"ok{d.index}"] = np.array([d.room is not None and d.error is None and bool(d._tasks)])
                # keep what the next step still needs
                d.rx = [(t, f) for t, f in d.rx if t > w1 + 0.3]
                d.sends = [t for t in d.sends if t > w1 - 2.0]
                d.marker_sends = [m for m in d.marker_sends if m[0] > w1]
            np.savez(path, **arrays)
            reply({"step": {"devices": len(devices), "join_s": round(join_s, 2), "join_errors": len(errors),
                            "errors": errors[:5], "w0": w0, "w1": w1, "path": path,
                            "inbound": _delta(before, after),
                            "max_send_late_ms": round(1000 * max((d.max_late for d in devices), default=0), 1)}})
    finally:
        await asyncio.gather(*(d.stop() for d in devices), return_exceptions=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--join-concurrency", type=int, default=4)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    common.setup_logging(args.verbose)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
