"""Shared plumbing for the gateway benches: the gateway in its own process, and
its CPU time from /proc. Not a benchmark itself."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from lkdevice.host_tools.livekit_server import free_port

log = logging.getLogger("bench.gateway")


class GatewayProcess:
    """`lkdevice gateway` in a child process (optionally pinned with taskset)."""

    def __init__(self, livekit_url: str, *, cpus: str | None = None, host: str = "127.0.0.1",
                 extra_args: list[str] | None = None, profile_to: str | None = None,
                 pythonpath: str | None = None):
        self.livekit_url = livekit_url
        # a folder whose `lkdevice` shadows the installed one (another checkout, for before/after)
        self.pythonpath = pythonpath
        self.cpus = cpus
        # run under pyinstrument (sampling, low overhead); its text report goes here at stop()
        self.profile_to = profile_to
        self.host = host
        self.port = free_port(host)
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/device"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> "GatewayProcess":
        profiler = []
        if self.profile_to:  # a .pyisession file reloads with `pyinstrument --load`, e.g. with --show-all
            renderer = "session" if self.profile_to.endswith(".pyisession") else "text"
            profiler = ["-m", "pyinstrument", "-r", renderer, "-o", self.profile_to]
        cmd = [sys.executable, *profiler, "-m", "lkdevice.cli", "gateway", "--livekit-url", self.livekit_url,
               "--listen", f"{self.host}:{self.port}", *self.extra_args]
        if self.cpus is not None:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        ready = threading.Event()

        def pump() -> None:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.lines.append(line.rstrip())
                if len(self.lines) > 2000:
                    del self.lines[:1000]
                if "gateway: serving devices" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("gateway did not start: " + " | ".join(self.lines[-10:]))
        log.info("gateway pid %d at %s%s", self.pid, self.url, f" (cpus {self.cpus})" if self.cpus else "")
        return self

    def cpu_seconds(self) -> float:
        """utime + stime of the gateway process (all its threads), in seconds."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is state (field 3); utime, stime are fields 14, 15
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        return self.rss_of(self.pid)

    @staticmethod
    def rss_of(pid: int) -> float:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.profile_to:
            self.proc.send_signal(signal.SIGINT)  # the CLI returns; pyinstrument writes its report
        else:
            self.proc.terminate()
        try:
            self.proc.wait(30 if self.profile_to else 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class CpuMeter:
    """CPU % of one process between start() and read()."""

    def __init__(self, gw: GatewayProcess):
        self.gw = gw
        self.t0 = self.c0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = self.gw.cpu_seconds()

    def read(self) -> float:
        dt = time.monotonic() - self.t0
        return round(100.0 * (self.gw.cpu_seconds() - self.c0) / dt, 1) if dt > 0 else 0.0
