"""The local stack behind `lkdevice up` and `lkdevice demo`: livekit-server, the gateway and the agent.

livekit-server and the agent (`lkdevice agent`) run as child processes with
their own log files; the gateway runs in this process. `Stack.start` brings
them up in that order and reports each as it becomes ready; `Stack.watch`
returns when one of them dies; `Stack.stop` ends all three, agent first, and
leaves no process behind (the agent's job processes included).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

from .livekit_server import (DEV_API_KEY, DEV_API_SECRET, SERVER_VERSION, LocalServer, ServerConfig,
                             ServerUnavailable, build_server_binary, find_server_binary)

DEFAULT_ROOM = "lkdevice-demo"
DEFAULT_AGENT = "lkdevice-agent"
DEFAULT_SERVER_PORT = 7880
DEFAULT_GATEWAY = "127.0.0.1:8765"
# the agent's first start loads Silero and warms a job process: seconds, more on a busy machine
AGENT_START_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 5.0
_REGISTERED = re.compile(r"^agent (\S+) \((voice|echo)\) registered with ")

Status = Callable[[str], None]
T = TypeVar("T")


class StackError(RuntimeError):
    """Something the user is told in one line (`exit_code` 2: their mistake; 1: a part failed)."""

    exit_code = 1


class UsageError(StackError):
    exit_code = 2


class PartDied(StackError):
    def __init__(self, part: str, detail: str, log_tail: str = ""):
        super().__init__(f"{part} {detail}")
        self.part = part
        self.log_tail = log_tail


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"{what} wants HOST:PORT (e.g. 127.0.0.1:8765), got {text!r}")
    return host.strip("[]"), int(port)


def check_port_free(host: str, port: int, what: str, flag: str) -> None:
    """Fail in one line, before anything starts, when a listening port is taken."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UsageError(f"{what} cannot listen on {host}:{port}: {e.strerror or e} "
                             f"(another `lkdevice up`?); pick another with {flag}") from None


async def with_progress(label: str, what: str, work: Awaitable[T], status: Status,
                        every: float = PROGRESS_EVERY_S) -> T:
    """Await `work`, printing `label what... N s` every few seconds while it runs."""
    task = asyncio.ensure_future(work)
    started = time.monotonic()
    status(f"{label} {what}...")
    while True:
        done, _ = await asyncio.wait({task}, timeout=every)
        if done:
            return task.result()
        status(f"{label} {what}... {time.monotonic() - started:.0f} s")


def _die_with_parent() -> None:
    # in the child before exec: if `lkdevice up` itself is killed (SIGKILL), the part goes too
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(line[:300] for line in text.splitlines()[-lines:])


class AgentProcess:
    """`lkdevice agent` as a child in its own process group: one SIGTERM stops it, and the
    group is swept afterwards so no job process outlives it."""

    def __init__(self, url: str, *, agent_name: str, echo: bool, log_path: Path,
                 api_key: str = DEV_API_KEY, api_secret: str = DEV_API_SECRET, threads: bool = False,
                 extra_args: Sequence[str] = ()):
        self.url = url
        self.extra_args = list(extra_args)  # more `lkdevice agent` flags: --greeting "", --metrics FILE
        self.agent_name = agent_name
        self.echo = echo
        self.log_path = log_path
        self._api_key = api_key
        self._api_secret = api_secret
        self.threads = threads
        self.proc: subprocess.Popen | None = None
        self.worker_id: str | None = None

    @property
    def mode(self) -> str:
        return "echo" if self.echo else "voice"

    def spawn(self) -> None:
        argv = [sys.executable, "-m", "lkdevice.cli", "agent", "--url", self.url, "--agent-name", self.agent_name]
        if self.echo:
            argv.append("--echo")
        if self.threads:
            argv.append("--threads")
        argv += self.extra_args
        # the secret goes by environment, never argv (the process list shows argv)
        env = dict(os.environ, LIVEKIT_URL=self.url, LIVEKIT_API_KEY=self._api_key,
                   LIVEKIT_API_SECRET=self._api_secret, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True, preexec_fn=_die_with_parent)

    def registered(self) -> bool:
        if self.worker_id is None:
            for line in log_tail(self.log_path, 200).splitlines():
                if _REGISTERED.match(line):
                    self.worker_id = line.rsplit(" ", 1)[-1]
        return self.worker_id is not None

    async def wait_registered(self, timeout: float = AGENT_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not self.registered():
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise PartDied("agent", f"exited with {code} before registering", log_tail(self.log_path))
            if time.monotonic() > deadline:
                raise PartDied("agent", f"did not register within {timeout:.0f} s", log_tail(self.log_path))
            await asyncio.sleep(0.2)

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    async def stop(self, timeout: float = 15.0) -> None:
        await asyncio.to_thread(self.terminate, timeout)

    def terminate(self, timeout: float = 15.0) -> None:
        """stop(), blocking: for watchdogs and synchronous teardown."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        # whatever is left of its group (a job process the worker could not end) goes now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()


@dataclass
class StackConfig:
    room: str = DEFAULT_ROOM
    server_port: int = DEFAULT_SERVER_PORT
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8765
    echo: bool = False
    agent_name: str = DEFAULT_AGENT
    # the agent's jobs in threads of its worker (lighter; tests) rather than their own processes
    agent_threads: bool = False


class Stack:
    """livekit-server (dev keys, loopback), the gateway, and the agent, for one room."""

    def __init__(self, config: StackConfig, status: Status = print):
        self.config = config
        self.status = status
        self.workdir = Path(tempfile.mkdtemp(prefix="lkdevice-up-"))
        self.server: LocalServer | None = None
        self.gateway = None
        self.agent: AgentProcess | None = None
        self.failed = False

    @property
    def server_url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def gateway_url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    def token(self, identity: str, *, dispatch: bool = True, hidden: bool = False, name: str = "") -> str:
        from .tokens import mint_token

        return mint_token(DEV_API_KEY, DEV_API_SECRET, identity=identity, room=self.config.room, name=name,
                          agent_name=self.config.agent_name if dispatch else None, hidden=hidden)

    def preflight(self) -> None:
        c = self.config
        if shutil.which("espeak-ng") is None and not c.echo:
            raise UsageError("the voice agent speaks with espeak-ng: sudo apt-get install espeak-ng "
                             "(or host_tools/system_deps.sh)")
        check_port_free("127.0.0.1", c.server_port, "livekit-server", "--server-port")
        check_port_free(c.gateway_host, c.gateway_port, "the gateway", "--gateway-listen")

    async def start(self) -> "Stack":
        self.preflight()
        await self._start_server()
        await self._start_gateway()
        await self._start_agent()
        return self

    async def _start_server(self) -> None:
        binary = find_server_binary()
        if binary is None:
            try:
                binary = await with_progress(
                    "server ", f"building livekit-server {SERVER_VERSION} with go install (first time only, "
                               "a few minutes)", asyncio.to_thread(build_server_binary, False), self.status)
            except ServerUnavailable as e:
                raise StackError(str(e)) from None
        node_ip = os.environ.get("LKDEVICE_NODE_IP", "127.0.0.1")
        # in the test namespace the server advertises its veth address too: libwebrtc (the agent) skips loopback
        ips = [node_ip] + (["127.0.0.1"] if node_ip != "127.0.0.1" else [])
        self.server = LocalServer(ServerConfig(port=self.config.server_port, node_ip=node_ip, candidate_ips=ips),
                                  binary=binary, workdir=self.workdir)
        try:
            await asyncio.to_thread(self.server.start)
        except ServerUnavailable as e:
            raise PartDied("server", str(e).split("\n", 1)[0], self.server.log_tail(15)) from None
        self.status(f"server  ready {self.server.url}")

    async def _start_gateway(self) -> None:
        from lkdevice.gateway import Gateway, GatewayConfig

        c = self.config
        gateway = Gateway(GatewayConfig(livekit_url=self.server_url, host=c.gateway_host, port=c.gateway_port))
        try:
            await gateway.start()
        except OSError as e:
            raise UsageError(f"the gateway cannot listen on {c.gateway_host}:{c.gateway_port}: "
                             f"{e.strerror or e}; pick another with --gateway-listen") from None
        self.gateway = gateway
        self.status(f"gateway ready {gateway.url}")

    async def _start_agent(self) -> None:
        c = self.config
        self.agent = AgentProcess(self.server_url, agent_name=c.agent_name, echo=c.echo,
                                  log_path=self.workdir / "agent.log", threads=c.agent_threads)
        self.agent.spawn()
        await with_progress("agent  ", f"starting {c.agent_name} ({self.agent.mode}): loading models",
                            self.agent.wait_registered(), self.status)
        self.status(f"agent   ready {c.agent_name} ({self.agent.mode})")

    async def watch(self, poll: float = 0.3) -> None:
        """Return never; raise PartDied when a part stops on its own."""
        while True:
            if self.server is not None and self.server.proc is not None and self.server.proc.poll() is not None:
                raise PartDied("server", f"livekit-server exited with {self.server.proc.returncode}",
                               self.server.log_tail(15))
            if self.agent is not None and self.agent.returncode() is not None:
                raise PartDied("agent", f"exited with {self.agent.returncode()}", log_tail(self.agent.log_path))
            await asyncio.sleep(poll)

    async def stop(self) -> None:
        # the agent first (it leaves its rooms), then the devices' gateway, then the server
        if self.agent is not None:
            await self.agent.stop()
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.gateway.close(), 10)
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        if not self.failed:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> "Stack":
        try:
            return await self.start()
        except BaseException as e:
            self.failed = not isinstance(e, (asyncio.CancelledError, KeyboardInterrupt))  # keep logs of a failure
            await asyncio.shield(self.stop())
            raise

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, StackError):
            self.failed = True
        await asyncio.shield(self.stop())
