"""`lkdevice gateway` as a child process the harness owns: started, watched, restarted on the same address.

For a real board the gateway must listen on an address the board reaches (the
lab's LAN address, `--gateway-listen 0.0.0.0:8765`); the board is provisioned
with the URL it uses to get there (`--gateway-url`), which may differ (a host
name, a NAT).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections import deque
from typing import Callable

from . import target as t
from .procinfo import open_handles, rss_bytes


class GatewayProcess:
    def __init__(self, livekit_url: str, listen: str, *, grace: float = 1.0, log_lines: int = 300,
                 program: str = "lkdevice.cli", extra_args: tuple[str, ...] = (),
                 on_line: Callable[[str], None] | None = None):
        self.livekit_url = livekit_url
        self.listen = listen
        self.grace = grace
        self.program = program  # a module run with -m that takes `gateway ...` (the real one, or a variant)
        self.extra_args = extra_args
        self.on_line = on_line  # sees every line of its output (e.g. its stats lines)
        self.proc: subprocess.Popen | None = None
        self.log: deque[str] = deque(maxlen=log_lines)  # the newest lines: for errors and the report

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.program, "gateway", "--livekit-url", self.livekit_url,
             "--listen", self.listen, "--grace", f"{self.grace:g}", *self.extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        ready = threading.Event()
        proc = self.proc

        def drain():
            for line in proc.stdout:
                self.log.append(line.rstrip("\n"))
                if self.on_line is not None:
                    self.on_line(line)
                if "gateway listening on" in line:
                    ready.set()
            ready.set()
        threading.Thread(target=drain, daemon=True).start()
        if not await asyncio.to_thread(ready.wait, 20) or proc.poll() is not None:
            raise t.TargetError(f"the gateway did not start on {self.listen}: " + " | ".join(list(self.log)[-3:]))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self, at: float) -> t.Sample:
        pid = self.proc.pid if self.proc is not None else 0
        return t.Sample(at, rss=rss_bytes(pid), handles=open_handles(pid))

    def kill(self) -> None:
        """SIGKILL, like a crash (the log stays, for the errors stop() reports)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.log.append(f"[hil] gateway killed (SIGKILL), exit {self.proc.returncode}")
            self.proc = None

    async def stop(self) -> list[str]:
        """Terminate it; the errors it showed (an early exit, tracebacks, ERROR lines)."""
        if self.proc is None:
            return []
        errors = []
        if self.proc.poll() is not None:
            errors.append(f"the gateway exited with {self.proc.returncode}")
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        self.proc = None
        return errors + [line for line in self.log if "Traceback" in line or " ERROR " in line][:10]
