"""Find or build livekit-server, and run it locally for development and tests.

The server binds to loopback only, advertises only the addresses we name, and
gets a STUN entry on loopback so it never hands clients a public STUN server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SERVER_VERSION = "v1.13.5"
SERVER_MODULE = "github.com/livekit/livekit-server/cmd/server"
DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"
# An empty server exits on SIGTERM in milliseconds; one still running after this needs a second (stop()).
DRAIN_WAIT = 1.0


class ServerUnavailable(RuntimeError):
    """No livekit-server binary can be found or built on this machine."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "lkdevice"


def cached_binary() -> Path:
    return cache_dir() / f"livekit-server-{SERVER_VERSION}"


def find_server_binary() -> Path | None:
    """An explicit LIVEKIT_SERVER_BIN, then one on PATH, then our cached build."""
    explicit = os.environ.get("LIVEKIT_SERVER_BIN")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    on_path = shutil.which("livekit-server")
    if on_path:
        return Path(on_path)
    cached = cached_binary()
    return cached if cached.is_file() else None


def build_server_binary(verbose: bool = True) -> Path:
    """`go install` the pinned server version into the cache, once."""
    found = find_server_binary()
    if found:
        return found
    go = shutil.which("go")
    if not go:
        raise ServerUnavailable(
            "livekit-server is not on PATH and Go is not installed. Either install "
            "Go (https://go.dev/dl/, or `apt-get install golang`) and run "
            "`lkdevice server build`, or put a livekit-server binary on PATH, "
            "or set LIVEKIT_SERVER_BIN to its path."
        )
    dest = cached_binary()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lkdevice-gobin-") as gobin:
        env = dict(os.environ, GOBIN=gobin, CGO_ENABLED=os.environ.get("CGO_ENABLED", "0"))
        if verbose:
            print(f"building livekit-server {SERVER_VERSION} with go install (first time only)...", flush=True)
        proc = subprocess.run(
            [go, "install", f"{SERVER_MODULE}@{SERVER_VERSION}"],
            env=env,
            stdout=None if verbose else subprocess.PIPE,
            stderr=None if verbose else subprocess.STDOUT,
        )
        if proc.returncode != 0:
            raise ServerUnavailable(f"`go install {SERVER_MODULE}@{SERVER_VERSION}` failed (exit {proc.returncode})")
        shutil.move(os.path.join(gobin, "server"), dest)
    dest.chmod(0o755)
    return dest


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServerConfig:
    """What a local server listens on and what it advertises to clients."""

    port: int = 0
    rtc_udp_port: int = 0
    node_ip: str = "127.0.0.1"
    # Addresses the server may advertise as ICE candidates; loopback by default.
    candidate_ips: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    api_key: str = DEV_API_KEY
    api_secret: str = DEV_API_SECRET
    empty_timeout: int = 30
    departure_timeout: int = 5
    log_level: str = "info"

    def to_yaml(self) -> str:
        ips = "\n".join(f"      - {ip}/32" for ip in self.candidate_ips)
        return f"""\
port: {self.port}
bind_addresses: ["127.0.0.1"]
rtc:
  udp_port: {self.rtc_udp_port}
  tcp_port: 0
  use_external_ip: false
  enable_loopback_candidate: true
  node_ip: {self.node_ip}
  ips:
    includes:
{ips}
  # a STUN entry on loopback keeps the server from advertising public STUN servers
  stun_servers: ["127.0.0.1:3478"]
keys:
  {self.api_key}: {self.api_secret}
room:
  empty_timeout: {self.empty_timeout}
  departure_timeout: {self.departure_timeout}
logging:
  level: {self.log_level}
"""


class LocalServer:
    """A livekit-server child process with its own config and log file."""

    def __init__(self, config: ServerConfig | None = None, binary: Path | None = None, workdir: Path | None = None):
        self.config = config or ServerConfig()
        if not self.config.port:
            self.config.port = free_port()
        if not self.config.rtc_udp_port:
            self.config.rtc_udp_port = free_port(kind=socket.SOCK_DGRAM)
        self.binary = binary
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lkdevice-server-"))
        self.log_path = self.workdir / "livekit-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.config.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    def start(self, timeout: float = 20.0) -> "LocalServer":
        binary = self.binary or find_server_binary() or build_server_binary()
        cfg = self.workdir / "livekit.yaml"
        cfg.write_text(self.config.to_yaml())
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(binary), "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise ServerUnavailable(f"livekit-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.http_url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise ServerUnavailable(f"livekit-server did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        # join requests log whole SDP offers: keep each line short
        return "\n".join(line[:300] for line in text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """A clean shutdown: the server closes its rooms (each participant is sent a leave,
        SERVER_SHUTDOWN, which it may exit before writing: then the socket's close tells) and exits.

        livekit-server's first SIGTERM only drains: it takes no one new and waits, without end, until
        its rooms are empty (LivekitServer.Stop(force=false), polled every 5 s); and one that comes
        in the ~100 ms after its port first answers, before it counts itself running, is dropped.
        A second signal forces that stop."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            if not self._exits_within(DRAIN_WAIT):  # participants in its rooms: the second signal
                self.proc.terminate()
                if not self._exits_within(timeout):
                    self.kill()
        self.proc = None

    def kill(self) -> None:
        """A crash: SIGKILL, no participant told; each finds out by its own link."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def _exits_within(self, seconds: float) -> bool:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def restart(self, timeout: float = 20.0) -> None:
        """Gone without a goodbye (kill()) and up again on the same ports: what clients must come
        back from by themselves. (A clean stop() would end their sessions with SERVER_SHUTDOWN.)"""
        self.kill()
        self.start(timeout)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
