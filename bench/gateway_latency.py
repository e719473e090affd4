"""Added latency of the gateway path against the Pi client's path, same run.

Audio round trip device -> server -> echo peer -> server -> device for

- gateway_<codec>: a device-protocol device (host_tools.device_client.DeviceClient,
  what the ESP32 firmware speaks) through the gateway, which runs as its own
  process (`lkdevice gateway`), once per codec (pcm16, ulaw, adpcm);
- pi_client: our CPython client `lkdevice.Room` in the device role (the Pi path,
  exactly bench/audio_rtt.py's "ours");
- official: the official SDK in the device role (audio_rtt.py's "official").

The echo peer, the chirp (1 -> 4 kHz linear sweep, 100 ms, once a second), the
readiness rule and the cross-correlation detector are bench/audio_rtt.py's own,
imported from it. The gateway device sends 20 ms frames of 16 kHz PCM (the
protocol's only frame size) paced on the monotonic clock; its chirp is the same
sweep sampled at 16 kHz (the 48 kHz chirp taken every third sample, so it is
the same function of time), with each onset on a frame boundary. The delay is
the same for all paths: "the frame/chunk holding the chirp's first sample
handed to the client" -> "the received frame holding it available from the
client" (for the gateway device: DeviceClient's arrival time of the binary
frame, i.e. after the WebSocket read and the codec decode).

Reports median/p90 per path, the uplink/rest split (where the echo peer hears
the chirp), and the gateway's added latency: gateway path minus pi_client.
Each round measures every path in a fresh room with a fresh echo peer; the
order is reversed in odd rounds.

    host_tools/isolated.sh python bench/gateway_latency.py [--chirps 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time

import numpy as np

import _common as common
import audio_rtt as rtt
from _gateway import GatewayProcess

log = logging.getLogger("bench.gateway_latency")

RATE16 = 16000
FRAME = 320  # 20 ms at 16 kHz
CODECS = ("pcm16", "ulaw", "adpcm")


class GatewayDevice(rtt.Device):
    """A protocol device on the gateway; rx holds (arrival, 16 kHz int16 samples) per 20 ms frame."""

    def __init__(self, gateway_url: str, codec: str) -> None:
        super().__init__()
        self.identity = f"device-gw-{codec}"
        self.gateway_url = gateway_url
        self.codec = codec
        self.client = None

    async def start(self, url: str, room_name: str, timeout: float) -> None:
        from lkdevice.host_tools.device_client import DeviceClient

        self.client = await DeviceClient(self.gateway_url, codec=self.codec).open()
        welcome = await self.client.hello(common.token(self.identity, room_name), timeout=timeout)
        if welcome["t"] != "welcome":
            raise RuntimeError(f"gateway refused the device: {welcome}")
        self._rx_task = asyncio.ensure_future(self._receive())

    async def _receive(self) -> None:
        q = self.client.audio
        while True:
            _seq, _ts, pcm, arrival = await q.get()
            self.rx.append((arrival, pcm))

    async def stop(self) -> None:
        if self._rx_task is not None:
            self._rx_task.cancel()
            with contextlib.suppress(BaseException):
                await self._rx_task
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.send({"t": "leave", "reason": "bench done"})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), 5)


async def feed_gateway(device: GatewayDevice, echo: rtt.EchoPeer, chirp16: np.ndarray, args):
    """20 ms frames in real time: silence, and the chirp every --period once audio flows both ways."""
    period = int(round(args.period * 50))
    chirp_frames = len(chirp16) // FRAME
    silence = np.zeros(FRAME, np.int16)
    send_times: list[float] = []
    end_times: list[float] = []
    ready_deadline = time.monotonic() + args.ready_timeout
    first: int | None = None
    last: int | None = None
    t0 = time.monotonic()
    k = 0
    while last is None or k <= last:
        await common.sleep_until(t0 + k * FRAME / RATE16)
        if first is None:
            # the same readiness rule as audio_rtt (it counts 10 ms frames; ours are 20 ms)
            flowing = echo.frames >= args.settle_frames and len(device.rx) * 2 >= args.settle_frames
            if flowing or time.monotonic() > ready_deadline:
                if not flowing:
                    log.warning("gateway %s: audio not flowing both ways (echo %d frames, device %d)",
                                device.codec, echo.frames, len(device.rx))
                first = k + 5
                last = first + (args.chirps - 1) * period + chirp_frames + int(args.tail * 50)
        samples = silence
        onset = end = False
        if first is not None and k >= first:
            j, pos = divmod(k - first, period)
            if j < args.chirps and pos < chirp_frames:
                samples = chirp16[pos * FRAME:(pos + 1) * FRAME]
                onset = pos == 0
                end = pos == chirp_frames - 1
        t = time.monotonic()
        await device.client.send_pcm(samples)
        if onset:
            send_times.append(t)
        if end:
            end_times.append(t)
        k += 1
    return send_times, end_times


async def measure_gateway(codec: str, gateway_url: str, url: str, chirp48: np.ndarray, args) -> dict:
    chirp16 = np.ascontiguousarray(chirp48[::3])
    room_name = common.fresh_room(f"gwlat-{codec}")
    device = GatewayDevice(gateway_url, codec)
    echo = rtt.EchoPeer(device.identity, args.echo_queue_ms, False if args.echo_no_dtx else None)
    try:
        t0 = time.monotonic()
        await echo.start(url, room_name, args.timeout)
        await device.start(url, room_name, args.timeout)
        setup = time.monotonic() - t0
        send_times, end_times = await feed_gateway(device, echo, chirp16, args)
        await asyncio.sleep(0.05)
        results = rtt.detect(device.rx, chirp16, send_times, end_times, args.max_delay, args.threshold)
        uplink = rtt.detect(echo.rx, chirp48, send_times, end_times, args.max_delay, args.threshold)
        delays = [r["delay_ms"] for r in results]
        up = [r["delay_ms"] for r in uplink]
        run = {
            "client": f"gateway_{codec}",
            "room": room_name,
            "setup_ms": round(setup * 1000, 1),
            "delays_ms": delays,
            "tail_delays_ms": [r["tail_delay_ms"] for r in results],
            "uplink_ms": up,
            "rest_ms": [round(d - u, 2) if d is not None and u is not None else None for d, u in zip(delays, up)],
            "scores": [r["score"] for r in results],
            "detected": sum(d is not None for d in delays),
            "sent": len(send_times),
            "frames_received": len(device.rx),
            "echo_frames": echo.frames,
        }
        log.info("gateway_%-6s delays %s ms (scores %s)", codec, delays, run["scores"])
        return run
    finally:
        await device.stop()
        await echo.stop()


def summarize(runs: list[dict], name: str) -> dict:
    mine = [x for x in runs if x["client"] == name]
    delays = [d for x in mine for d in x["delays_ms"] if d is not None]
    entry = common.summary_ms([d / 1000.0 for d in delays])
    entry["delays_ms"] = delays
    for part in ("uplink_ms", "rest_ms"):
        vals = [d for x in mine for d in x[part] if d is not None]
        entry[part.replace("_ms", "")] = common.summary_ms([d / 1000.0 for d in vals])
    entry["missed"] = sum(x["sent"] - x["detected"] for x in mine)
    return entry


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 2)


async def run(args, url: str, gateway_url: str) -> dict:
    chirp48 = rtt.make_chirp(args.f0, args.f1, args.chirp_ms / 1000.0, args.amplitude)
    paths = [f"gateway_{c}" for c in args.codecs] + ["pi_client", "official"]
    order0 = [paths[0], "pi_client", "official", *paths[1:len(args.codecs)]]
    runs: list[dict] = []
    errors: list[dict] = []
    for r in range(args.rounds):
        order = order0 if r % 2 == 0 else order0[::-1]
        for name in order:
            try:
                if name.startswith("gateway_"):
                    runs.append(await measure_gateway(name[len("gateway_"):], gateway_url, url, chirp48, args))
                else:
                    kind = "ours" if name == "pi_client" else "official"
                    one = await rtt.measure(kind, url, chirp48, args)
                    one["client"] = name
                    runs.append(one)
            except Exception as exc:
                log.exception("round %d %s failed", r, name)
                errors.append({"path": name, "round": r, "error": repr(exc)})
    out: dict = {
        "benchmark": "gateway_latency",
        "path": "device -> server -> echo peer (official SDK) -> server -> device",
        "chirp": {"f0_hz": args.f0, "f1_hz": args.f1, "ms": args.chirp_ms, "period_s": args.period,
                  "count_per_run": args.chirps},
        "rounds": args.rounds,
        "echo_queue_ms": args.echo_queue_ms,
        "echo_dtx": "off" if args.echo_no_dtx else "sdk default (on)",
        "gateway": "separate process: python -m lkdevice.cli gateway (not pinned)",
    }
    for name in paths:
        out[name] = summarize(runs, name)
    pi = out["pi_client"]
    out["gateway_added_ms"] = {
        name: {
            "median": diff(out[name]["median_ms"], pi["median_ms"]),
            "p90": diff(out[name]["p90_ms"], pi["p90_ms"]),
            "uplink_median": diff(out[name]["uplink"]["median_ms"], pi["uplink"]["median_ms"]),
            "rest_median": diff(out[name]["rest"]["median_ms"], pi["rest"]["median_ms"]),
        }
        for name in paths if name.startswith("gateway_")
    }
    out["ratio_pi_over_official_median"] = common.ratio(pi["median_ms"], out["official"]["median_ms"])
    out["runs"] = runs
    out["errors"] = errors
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chirps", type=int, default=8, help="chirps per measurement (default 8)")
    p.add_argument("--rounds", type=int, default=2, help="rounds; each measures every path (default 2)")
    p.add_argument("--codecs", default="pcm16,ulaw,adpcm", help="gateway device codecs (default all three)")
    p.add_argument("--period", type=float, default=1.0)
    p.add_argument("--chirp-ms", type=float, default=100.0)
    p.add_argument("--f0", type=float, default=1000.0)
    p.add_argument("--f1", type=float, default=4000.0)
    p.add_argument("--amplitude", type=float, default=0.5)
    p.add_argument("--echo-queue-ms", type=int, default=50)
    p.add_argument("--echo-no-dtx", action="store_true")
    p.add_argument("--device-queue-ms", type=int, default=50)
    p.add_argument("--max-delay", type=float, default=0.8)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--settle-frames", type=int, default=50)
    p.add_argument("--ready-timeout", type=float, default=10.0)
    p.add_argument("--tail", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--deadline", type=float, default=330.0, help="hard limit for the whole run in seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    args.codecs = [c for c in args.codecs.split(",") if c]
    if not args.codecs or any(c not in CODECS for c in args.codecs):
        p.error(f"--codecs: choose from {','.join(CODECS)}")
    if args.max_delay + args.chirp_ms / 1000.0 >= args.period:
        p.error("--max-delay plus the chirp length must be shorter than --period")
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
            ok = not result["errors"] and all(result[f"gateway_{c}"]["n"] for c in args.codecs) \
                and result["pi_client"]["n"] > 0 and result["official"]["n"] > 0
        except Exception as exc:
            log.exception("gateway_latency failed")
            result = {"benchmark": "gateway_latency", "error": repr(exc), "server_log": str(server.log_path),
                      "gateway_log_tail": gw.lines[-20:] if gw else None}
        finally:
            if gw is not None:
                gw.stop()
            common.stop_server(server, keep_workdir=not ok)
    result["environment"] = common.environment()
    common.emit(result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
