"""`sim-esp32`: the firmware on the MicroPython unix port (SimulatedDevice), through a gateway process.

The gateway runs as `lkdevice gateway` in its own process, so its memory and
open handles are measured apart from the harness. Its grace period is short
(1 s by default): a rejoin (the access point away for longer) is then a real
leave and join for the firmware, the gateway and the room. A scenario that
needs the gateway's own default (15 s: a short drop is a resume) asks for it
with `ask(link_grace_s=15)` before it boots. The flash carries a
small app.py (the firmware's public app API, no test branch in the firmware)
that echoes data and calls back an RPC, for data and RPC device -> room.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
from collections import deque

import numpy as np

from lkdevice.host_tools.livekit_server import free_port
from lkdevice.host_tools.simulator import DEFAULT_HEAP, RATE, SimulatedDevice, SimulatorError, repo_paths

from . import target as t
from .gateway_proc import GatewayProcess
from .procinfo import firmware_hash, git_commit, open_handles

# the firmware's app API (firmware/README.md, "User code"): what a real board would carry for the harness too
HIL_APP = '''
def setup(device):
    def on_data(payload, sender, topic):
        if topic == "hil.echo":
            device.send_data("echo:" + payload, topic="hil.echo.reply")
    device.on("data", on_data)

    async def call_back(caller, payload):
        return "back:" + await device.perform_rpc(caller, "hil.pong", payload, 5000)
    device.register_rpc("hil.call", call_back)
'''

# the firmware's stats line (every 10 s) and the gateway's downlink stats line (--stats-every)
FW_STATS = re.compile(r"\[lkd\] stats .*?played=(\d+) late=(\d+) lost=(\d+) underruns=(\d+) target_ms=(\d+)")
GW_STATS = re.compile(r"downlink stats (\{.*\})")
GATEWAY_STATS_S = 2.0

# which program serves as the gateway: the real one, or one of the harness's variants (hil/README.md)
GATEWAYS = {"real": "lkdevice.cli", "leaky": "lkdevice.hil.leaky_gateway", "traced": "lkdevice.hil.gateway_trace"}

ERROR_LINE = re.compile(r"Traceback|MemoryError|watchdog reset|\[lkd\] stopped|\[lkd\] config error|app error")


class SimEsp32(t.Target):
    name = "sim-esp32"
    capabilities = frozenset({t.JOIN, t.MIC, t.SPEAKER, t.DATA_IN, t.RPC_IN, t.DATA_OUT, t.RPC_OUT,
                              t.AGENT_STATE, t.LED, t.HEAP, t.RSS, t.HANDLES, t.REJOIN, t.LINK_DROP, t.GATEWAY})
    identity_name = "esp32"
    rss_of = "the gateway"
    app_source = HIL_APP  # what the flash's app.py holds

    def __init__(self, *, heap: str = DEFAULT_HEAP, codec: str = "pcm16", board: str = "sim", grace: float = 1.0,
                 sample_every: float = 5.0, gateway: str = "real"):
        super().__init__()
        if gateway not in GATEWAYS:
            raise ValueError(f"unknown gateway {gateway!r}; gateways: {', '.join(GATEWAYS)}")
        self.gateway_kind = gateway
        self.heap = heap
        self.codec = codec
        self.board = board
        self.grace = grace  # the default; ask(link_grace_s=...) changes it for one boot
        self._grace = grace
        self._gateway_port = 0
        self.sample_every = sample_every
        self.dev: SimulatedDevice | None = None
        self.gateway: GatewayProcess | None = None
        self._booted_at = 0.0
        self._spk_origin: float | None = None
        self._gw_samples: deque[t.Sample] = deque(maxlen=10_000)
        self._gw_playout: deque[t.Playout] = deque(maxlen=10_000)
        self._sampler: asyncio.Task | None = None
        self._pump: threading.Thread | None = None
        self._stop_pump = threading.Event()

    # --- power

    def ask(self, **settings: float) -> dict[str, float | None]:
        got: dict[str, float | None] = {k: None for k in settings}
        if t.LINK_GRACE in settings:
            self._grace = got[t.LINK_GRACE] = float(settings[t.LINK_GRACE])
        return got

    async def start(self, url: str, room: str, token: str) -> None:
        self.console = t.Console()
        self._gw_samples.clear()
        self._gw_playout.clear()
        self._origins: dict[str, float] = {}
        self._stats, self._leds, self._speaker = {}, [], np.zeros(0, np.int16)
        self._gateway_port = free_port()
        await self._start_gateway(url)
        port = self._gateway_port
        try:
            self.dev = SimulatedDevice(f"ws://127.0.0.1:{port}/v1/device", token, board=self.board, codec=self.codec,
                                       play=self._mic if self._mic is not None else np.zeros(0, np.int16),
                                       heap=self.heap, app_source=self.app_source)
            await asyncio.to_thread(self.dev.start)
        except SimulatorError as e:
            raise t.TargetError(str(e)) from None
        self._booted_at = time.monotonic()
        self._spk_origin = None
        self._stop_pump.clear()
        self._pump = threading.Thread(target=self._pump_console, daemon=True)
        self._pump.start()
        self._sampler = asyncio.ensure_future(self._sample_gateway())

    async def _start_gateway(self, url: str) -> None:
        self.gateway = GatewayProcess(url, f"127.0.0.1:{self._gateway_port}", grace=self._grace,
                                      program=GATEWAYS[self.gateway_kind], on_line=self._gateway_stats,
                                      extra_args=("--stats-every", str(GATEWAY_STATS_S)))
        await self.gateway.start()

    @property
    def gateway_log(self) -> list[str]:
        return list(self.gateway.log) if self.gateway is not None else []

    def _gateway_stats(self, line: str) -> None:
        m = GW_STATS.search(line)
        if m is None:
            return
        try:
            # lost: packets missing at their turn (late ones too); not `concealed`, which also
            # counts the first frames of every pause in the sender's audio (an underrun looks like a loss)
            st = json.loads(m.group(1))
            self._gw_playout.append(t.Playout(time.monotonic(), "gateway", float(st["target_delay_ms"]),
                                              int(st["decoded"]), int(st["jitter_lost"])))
        except (ValueError, KeyError, TypeError):
            pass  # a line cut short: one sample fewer

    def _pump_console(self, i: int = 0) -> None:
        # SimulatedDevice keeps its own lines; copy them into the Console as they come (their times with them)
        while not self._stop_pump.is_set():
            lines = self.dev.lines()
            for line in lines[i:]:
                self.console.feed(line)
            i = len(lines)
            if not self.dev.running and i == len(self.dev.lines()):
                break
            self._stop_pump.wait(0.05)
        if self._stop_pump.is_set():
            return  # stopped by us: stop() or reset() takes it from here
        for line in self.dev.lines()[i:]:
            self.console.feed(line)
        self.console.close()

    async def _sample_gateway(self) -> None:
        while self.gateway is not None and self.gateway.running:
            fw = self.dev.proc if self.dev is not None else None  # a leaked socket per link drop shows here
            sample = self.gateway.sample(time.monotonic())
            sample.fw_handles = open_handles(fw.pid) if fw is not None else None
            self._gw_samples.append(sample)
            await asyncio.sleep(self.sample_every)

    async def stop(self) -> list[str]:
        errors: list[str] = []
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if self.dev is not None:
            await asyncio.to_thread(self.dev.stop)
            self._stop_pump.set()
            if self._pump is not None:
                self._pump.join(2)
            for line in self.dev.lines()[self.console.mark():]:
                self.console.feed(line)
            self.console.close()
            errors += self.errors()
            self._stats = self.dev.stats()
            self._leds = self.dev.led_colors()
            self._speaker = self.dev.speaker_pcm()
            self._origins = self.dev.io_origins() or getattr(self, "_origins", {})
            self.dev.cleanup()
        if self.gateway is not None:
            errors += await self.gateway.stop()
            self.gateway = None
        self._grace = self.grace
        return errors

    def gateway_url(self) -> str:
        if not self._gateway_port:
            raise t.TargetError("the gateway runs only while the target is started")
        return f"ws://127.0.0.1:{self._gateway_port}/v1/device"

    async def restart_gateway(self) -> None:
        """SIGKILL (a crash: no goodbye to the device or the room), then the same command on the same port."""
        if self.gateway is None:
            raise t.TargetError("the gateway runs only while the target is started")
        if self._sampler is not None:
            self._sampler.cancel()
        await asyncio.to_thread(self.gateway.kill)
        await self.gateway.start()
        self._sampler = asyncio.ensure_future(self._sample_gateway())

    async def drop_link(self, seconds: float) -> None:
        """The simulated access point gone for `seconds`, then back: the firmware sees its Wi-Fi lost and
        drops its socket (the gateway holds the session for its grace), and joins the AP again by itself."""
        if self.dev is None or not self.dev.running:
            raise t.TargetError("the device is not running")
        self.dev.set_fault("ap", False)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.dev.set_fault("ap", None)

    async def reset(self) -> None:
        assert self.dev is not None
        self._stop_pump.set()
        if self._pump is not None:
            self._pump.join(2)
        await asyncio.to_thread(self.dev.reboot)
        self._booted_at = time.monotonic()
        self._spk_origin = None
        self.console.reopen()
        self._stop_pump.clear()
        self._pump = threading.Thread(target=self._pump_console, args=(len(self.dev.lines()),), daemon=True)
        self._pump.start()

    async def rejoin(self, timeout: float) -> None:
        """The access point away for longer than the gateway's grace, then back: the room sees the
        device leave, the firmware says hello again (a new session), and the room sees it join."""
        assert self.dev is not None
        mark = self.console.mark()
        self.dev.set_fault("ap", False)
        try:
            await self.expect(r"\[lkd\] link lost", min(timeout, 10), since=mark)
            await asyncio.sleep(self._grace + 1.0)
        finally:
            self.dev.set_fault("ap", None)
        await self.expect(r"\[lkd\] welcome ", timeout, since=mark)

    def errors(self) -> list[str]:
        return [l for l in self.console.lines() if ERROR_LINE.search(l)][:20]

    # --- audio, LED

    def _io_origin(self, which: str) -> float | None:
        """When the sim's I2S line `which` ("rx", "tx") started, on the harness clock (hil/sim: .t0)."""
        if self.dev is not None and self.dev.running:
            got = self.dev.io_origins()
            if got:
                self._origins = got
        at = getattr(self, "_origins", {}).get(which)
        return None if at is None else at - (time.time() - time.monotonic())

    def mic_origin(self) -> float | None:
        return self._io_origin("rx") or self._booted_at or None

    def recording(self) -> t.Recording:
        running = self.dev is not None and self.dev.running
        pcm = self.dev.speaker_pcm() if running else getattr(self, "_speaker", np.zeros(0, np.int16))
        origin = self._io_origin("tx")
        if origin is None and running and len(pcm) and self._spk_origin is None:
            # the sim writes the speaker on the wall-clock timeline: its length says when sample 0 was
            self._spk_origin = time.monotonic() - len(pcm) / RATE
        return t.Recording(pcm, RATE, origin or self._spk_origin or self._booted_at)

    def playout(self) -> list[t.Playout]:
        fw = []
        for ts, line in self.console.timed_lines():
            m = FW_STATS.search(line)
            if m:
                played, late, lost, _, target_ms = map(int, m.groups())
                fw.append(t.Playout(ts, "firmware", float(target_ms), played, lost + late))
        return sorted(list(self._gw_playout) + fw, key=lambda p: p.t)

    def led_colors(self) -> list[tuple[float, tuple[int, int, int]]]:
        leds = self.dev.led_colors() if self.dev is not None and self.dev.running else getattr(self, "_leds", [])
        return [(self._booted_at + ms / 1000, rgb) for ms, rgb in leds]

    # --- identity, samples

    def identity(self) -> t.Identity:
        paths = repo_paths()
        mp = subprocess.run(["micropython", "-c", "import sys; print(sys.version)"], capture_output=True,
                            text=True, timeout=10).stdout.strip()
        return t.Identity(self.name, firmware_hash=firmware_hash(), micropython=mp or None,
                          board=f"boards/{self.board}.json", git_commit=git_commit(paths["firmware"].parent),
                          extra={"heap": self.heap, "codec": self.codec, "gateway_grace_s": str(self.grace),
                                 "gateway": self.gateway_kind})

    def samples(self) -> list[t.Sample]:
        stats = self.dev.stats() if self.dev is not None and self.dev.running else getattr(self, "_stats", {})
        heap = [t.Sample(self._booted_at + ms / 1000, heap=b) for ms, b in stats.get("live", [])]
        return sorted(heap + list(self._gw_samples), key=lambda s: s.t)

    def data_probe(self, sender: str) -> tuple[str, bytes, str]:
        return "hil.note", b"hello from the room", rf"\[lkd\] data from={re.escape(sender)} topic=hil.note " \
                                                    r"text=hello from the room$"

    def rpc_probe(self) -> tuple[str, str, str]:
        return "lkdevice.info", "", r'"heap_free": ?\d+'

    def agent_state_line(self, agent: str, state: str) -> str:
        return rf"\[lkd\] agent_state agent={re.escape(agent)} state={state}$"
