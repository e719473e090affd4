"""`esp32:<port>`: a real board on a serial port, driven with the board tools a user has.

The first start installs the firmware (`lkdevice install --board B --app
app.py`: the same small app as sim-esp32 carries, on the firmware's public app
API); every start provisions a config.json with the gateway URL and the token
the harness minted (`lkdevice provision`, the secrets in its environment, never
on a command line or in a line shown), then opens the port, soft-resets the
board and reads its console. The gateway is the harness's own `lkdevice
gateway`, behind a relay on an address the board reaches (link.py: a link the
harness can cut); or, with only a gateway URL, one the lab runs: then no
gateway restart, no link drop or rejoin, no gateway RSS.

Heap: every few seconds a participant of the harness calls the firmware's own
`lkdevice.info` RPC, which collects first and answers `heap_alloc` (the live
heap). A rejoin is the link cut for longer than the gateway's grace: the room
sees the board leave, the firmware says hello again on a new session. The microphone
and speaker need a USB sound card wired to the board (hil/README.md); without
one, scenarios that need them are skipped with that reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import numpy as np

from lkdevice.host_tools.board import BoardToolError
from lkdevice.host_tools.livekit_server import DEV_API_KEY, DEV_API_SECRET, free_port

from . import target as t
from .gateway_proc import GatewayProcess
from .link import LinkRelay
from .procinfo import firmware_hash, git_commit
from .sim_esp32 import ERROR_LINE, HIL_APP, SimEsp32

SAMPLER = "hil-heap-sampler"
BOOT_LINE = r"\[lkd\] boot "
NO_SOUND_CARD = ("no sound card given (--sound-card NAME): wire a USB sound card's output to the board's "
                 "microphone and the board's speaker to its input (hil/README.md, \"Wiring a board or a Pi in a lab\")")


class Esp32Serial(t.Target):
    identity_name = "esp32"
    rss_of = "the gateway"

    def __init__(self, port: str, *, board: str = "sim", gateway_listen: str | None = None,
                 gateway_url: str | None = None, wifi: str = "lkdevice-sim", codec: str = "pcm16",
                 grace: float = 1.0, sample_every: float = 5.0, sound_card: str | None = None,
                 repl_timeout: float = 10.0):
        super().__init__()
        from lkdevice.host_tools.board.serialport import find_port
        try:
            self.port = find_port(port)
        except BoardToolError as e:
            raise ValueError(str(e)) from None
        if sound_card:
            raise ValueError("--sound-card: audio through a sound card is not built yet; run without it "
                             "(mic and speaker scenarios are then skipped)")
        self.name = f"esp32:{self.port}"
        self.board = board
        self.codec = codec
        self.wifi = wifi
        self.grace = grace  # the default; ask(link_grace_s=...) changes it for one boot
        self._grace = grace
        self.sample_every = sample_every
        self.repl_timeout = repl_timeout
        self.own_gateway = gateway_listen is not None or gateway_url is None
        if self.own_gateway:
            host, _, p = (gateway_listen or "127.0.0.1:0").rpartition(":")
            self.listen = f"{host or '127.0.0.1'}:{int(p) or free_port()}"
            self.board_url = gateway_url or f"ws://{self.listen}/v1/device"
        else:
            self.listen, self.board_url = None, gateway_url
        caps = {t.JOIN, t.DATA_IN, t.RPC_IN, t.DATA_OUT, t.RPC_OUT, t.AGENT_STATE, t.HEAP}
        if self.own_gateway:
            caps |= {t.RSS, t.HANDLES, t.REJOIN, t.LINK_DROP, t.GATEWAY}
        self.capabilities = frozenset(caps)
        self.gateway: GatewayProcess | None = None
        self.link: LinkRelay | None = None
        self._installed = False
        self._micropython: str | None = None
        self._ser = None
        self._reader: threading.Thread | None = None
        self._samples: deque[t.Sample] = deque(maxlen=10_000)
        self._sampler: asyncio.Task | None = None
        self._far = None  # the sampler's participant in the room
        self._interrupts: deque[int] = deque(maxlen=1000)  # console marks where the harness itself stopped the firmware
        self._booted_at = 0.0

    # --- the board tools, as a user runs them

    async def _tool(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
        e = {**os.environ, **(env or {})}
        try:
            r = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "lkdevice.cli", *argv],
                                        capture_output=True, text=True, env=e, stdin=subprocess.DEVNULL,
                                        timeout=timeout)
        except subprocess.TimeoutExpired:
            raise t.TargetError(f"`lkdevice {argv[0]}` took over {timeout:.0f} s on {self.port}") from None
        if r.returncode != 0:
            last = (r.stderr.strip() or r.stdout.strip() or "(no output)").splitlines()[-1]
            raise t.TargetError(f"`lkdevice {argv[0]} --port {self.port}` failed: {last}")
        return r.stdout

    async def _install(self) -> None:
        with tempfile.TemporaryDirectory(prefix="lkd-hil-app-") as d:
            app = Path(d) / "app.py"
            app.write_text(HIL_APP)
            out = await self._tool("install", "--board", self.board, "--port", self.port, "--app", str(app),
                                   "--no-reset", "--timeout", str(self.repl_timeout))
        m = re.search(r"^board on \S+: MicroPython (\S+ \(.*\))$", out, re.M)
        self._micropython = m.group(1) if m else None
        self._installed = True

    async def _provision(self, token: str) -> None:
        await self._tool("provision", "--port", self.port, "--wifi", self.wifi, "--gateway", self.board_url,
                         "--token", "--codec", self.codec, "--no-reset", "--timeout", str(self.repl_timeout),
                         env={"LKD_TOKEN": token,
                              "LKD_WIFI_PASSWORD": os.environ.get("LKD_WIFI_PASSWORD", "")})

    # --- power

    def ask(self, **settings: float) -> dict[str, float | None]:
        got: dict[str, float | None] = {k: None for k in settings}
        if t.LINK_GRACE in settings and self.own_gateway:
            self._grace = got[t.LINK_GRACE] = float(settings[t.LINK_GRACE])
        return got

    async def start(self, url: str, room: str, token: str) -> None:
        self.console = t.Console()
        self._samples.clear()
        self._interrupts.clear()
        if self.own_gateway:
            self.gateway = GatewayProcess(url, f"127.0.0.1:{free_port()}", grace=self._grace)
            await self.gateway.start()
            try:
                self.link = await LinkRelay(self.listen, self.gateway.listen).start()
            except OSError as e:
                await self.gateway.stop()
                raise t.TargetError(f"cannot listen on {self.listen} for the board: {e.strerror}") from None
        if not self._installed:
            await self._install()
        await self._provision(token)
        self._open_console()
        await self._soft_reset()
        self._sampler = asyncio.ensure_future(self._sample(url, room))

    def _open_console(self) -> None:
        from lkdevice.host_tools.board.monitor import LineSplitter
        from lkdevice.host_tools.board.serialport import open_port
        try:
            self._ser = open_port(self.port, timeout=0.2)
        except BoardToolError as e:
            raise t.TargetError(str(e)) from None
        ser, split = self._ser, LineSplitter()

        def read():
            while True:
                try:
                    data = ser.read(4096)
                except Exception:  # the port closed (stop) or went away (unplugged)
                    break
                for line in split.feed(data):
                    self.console.feed(line)
            self.console.close()
        self._reader = threading.Thread(target=read, name=f"console {self.port}", daemon=True)
        self._reader.start()

    async def _soft_reset(self) -> None:
        from lkdevice.host_tools.board.monitor import _soft_reset
        self._interrupts.append(self.console.mark())
        await asyncio.to_thread(_soft_reset, self._ser)
        self._booted_at = time.monotonic()

    async def _sample(self, url: str, room: str) -> None:
        from lkdevice.host_tools.tokens import mint_token

        from .far_side import FarSide
        # visible: an RPC from a hidden participant reaches the device with no caller, and its answer is lost
        token = mint_token(DEV_API_KEY, DEV_API_SECRET, identity=f"{SAMPLER}-{uuid.uuid4().hex[:4]}", room=room,
                           ttl=3600)
        try:
            self._far = await FarSide(SAMPLER).connect(url, token)
            while True:
                now = time.monotonic()
                await self._take_sample()
                await asyncio.sleep(max(0.0, self.sample_every - (time.monotonic() - now)))
        finally:
            far, self._far = self._far, None
            if far is not None:
                await far.close()

    async def _take_sample(self) -> None:
        """The firmware's live heap (its lkdevice.info answer) and the gateway's RSS and handles, now."""
        now, heap, far = time.monotonic(), None, self._far
        if far is not None and far.present(self.identity_name) and not (self.link is not None and self.link.down):
            try:
                info = await far.room.local_participant.perform_rpc(
                    destination_identity=self.identity_name, method="lkdevice.info", payload="",
                    response_timeout=min(5.0, max(1.0, self.sample_every)))
                heap = json.loads(info).get("heap_alloc")
            except Exception:  # away in a rejoin, or busy: this sample has no heap
                pass
        gw = self.gateway.sample(now) if self.gateway is not None and self.gateway.running else t.Sample(now)
        if heap is not None or gw.rss is not None:
            self._samples.append(t.Sample(now, heap=heap, rss=gw.rss, handles=gw.handles))

    async def stop(self) -> list[str]:
        if self._sampler is not None:
            self._sampler.cancel()
            try:
                await self._sampler
            except (asyncio.CancelledError, Exception):
                pass
            self._sampler = None
        errors = self.errors()  # before the harness interrupts the firmware (its KeyboardInterrupt is ours)
        self._close_console()
        if self._installed:
            try:
                # the raw REPL stops the firmware and holds its watchdog off: the board stays quiet
                await asyncio.to_thread(self._halt)
            except BoardToolError as e:
                errors.append(f"the board did not stop: {e}")
        if self.link is not None:
            await self.link.stop()
            self.link = None
        if self.gateway is not None:
            errors += await self.gateway.stop()
            self.gateway = None
        self._grace = self.grace
        return errors

    def _halt(self) -> None:
        from lkdevice.host_tools.board.repl import BoardRepl, NoRepl
        try:
            with BoardRepl(self.port, connect_timeout=self.repl_timeout):
                pass
        except NoRepl:
            # a busy firmware (or a busy host) may miss the first Ctrl-C: once more, given longer
            with BoardRepl(self.port, connect_timeout=3 * self.repl_timeout):
                pass

    def _close_console(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except Exception:
                pass
            self._ser = None
        if self._reader is not None:
            self._reader.join(2)
            self._reader = None
        self.console.close()

    async def reset(self) -> None:
        if self._ser is None:
            raise t.TargetError(f"{self.name} is not started")
        self.console.reopen()
        await self._soft_reset()

    async def rejoin(self, timeout: float) -> None:
        """The link away for longer than the gateway's grace, then back: a real leave and join for firmware
        and room (the gateway stays up)."""
        mark = self.console.mark()
        await self.drop_link(self._grace + 1.0)
        await self.expect(r"\[lkd\] welcome ", timeout, since=mark)
        # one sample per cycle at the same point of it (a cycle is shorter than the sampling period)
        far = self._far
        if far is not None:
            try:
                await far.until(lambda: far.present(self.identity_name), 5, "the board back in the room")
            except TimeoutError:
                return  # the scenario's own wait says what is wrong
            await self._take_sample()

    async def drop_link(self, seconds: float) -> None:
        self._gateway()
        self.link.cut(seconds)
        await asyncio.sleep(seconds)

    def gateway_url(self) -> str:
        return self.board_url

    async def restart_gateway(self) -> None:
        gw = self._gateway()
        gw.kill()  # like a crash: no goodbye to the board or the room
        await gw.start()

    def _gateway(self) -> GatewayProcess:
        if self.gateway is None:
            raise t.TargetError(f"{self.name}: the harness runs no gateway for it")
        return self.gateway

    def errors(self) -> list[str]:
        """Error lines, but not those of a stop the harness made itself (a soft reset's Ctrl-C), up to the boot."""
        lines = self.console.lines()
        first = self.console.mark() - len(lines)
        cuts = sorted(self._interrupts)
        out, quiet = [], False
        for i, line in enumerate(lines, first):
            if cuts and i >= cuts[0]:
                quiet = True
                while cuts and i >= cuts[0]:
                    cuts.pop(0)
            if quiet and re.search(BOOT_LINE, line):
                quiet = False
            if not quiet and ERROR_LINE.search(line):
                out.append(line)
        return out[:20]

    def describe_missing(self, capability: str) -> str:
        if capability in (t.MIC, t.SPEAKER):
            return NO_SOUND_CARD
        if capability == t.LED:
            return "a real board's LED colours are seen only on the board"
        if capability in (t.REJOIN, t.LINK_DROP, t.GATEWAY, t.RSS, t.HANDLES):
            return (f"{self.name} goes through a gateway the harness does not run (--gateway-url without "
                    "--gateway-listen)")
        return super().describe_missing(capability)

    # --- audio (a sound card, not built yet)

    def mic_origin(self) -> float | None:
        return None

    def recording(self) -> t.Recording:
        return t.Recording(np.zeros(0, np.int16), 16000, self._booted_at)

    # --- identity, samples

    def identity(self) -> t.Identity:
        if self._micropython is None and self._ser is None:
            self._micropython = self._ask_version()
        board = self.board if self.board.endswith(".json") else f"boards/{self.board}.json"
        return t.Identity(self.name, firmware_hash=firmware_hash(), micropython=self._micropython,
                          board=board, git_commit=git_commit(Path(__file__).resolve().parent),
                          extra={"port": self.port, "gateway": self.board_url, "codec": self.codec,
                                 **({"gateway_grace_s": str(self.grace)} if self.own_gateway else {})})

    def _ask_version(self) -> str | None:
        # before the first start only: the raw REPL interrupts what the board runs
        from lkdevice.host_tools.board.repl import BoardRepl
        try:
            with BoardRepl(self.port, connect_timeout=self.repl_timeout) as repl:
                info = repl.info
                return f"{info.version_text} ({info.machine or info.platform})"
        except BoardToolError:
            return None

    def samples(self) -> list[t.Sample]:
        return list(self._samples)

    data_probe = SimEsp32.data_probe
    rpc_probe = SimEsp32.rpc_probe
    agent_state_line = SimEsp32.agent_state_line
