"""A bad network for tests and benches: loss, outages, delay and jitter on the server's media port.

netem is not available here, but nftables works inside the private network
namespace of host_tools/isolated.sh. `Impairment` owns one nft table of its own:

- `loss(percent, direction)`: random loss of UDP to or from the server's media
  port (`down` = server to its subscribers, `up` = publishers to the server);
- `outage(seconds)`: every media packet both ways dropped for a while;
- `relay(delay_ms, jitter_ms)`: a user-space UDP relay that every client's
  media to the server passes through, delaying each datagram both ways by
  `delay_ms` ± `jitter_ms` (uniform). The server must advertise only
  RELAY_ADDRESS (`ServerConfig(node_ip=RELAY_ADDRESS, candidate_ips=[RELAY_ADDRESS])`):
  a DNAT rule sends what clients send there to the relay, and every other path
  between the server's media port and a client is dropped, so ICE can only
  pick the relayed one. Set it up before the clients connect: NAT applies to
  new flows only.

Everything is bounded: the table is deleted on `close()` and, whatever happens,
by a timer after `max_seconds`; the relay keeps at most `MAX_FLOWS` flows and
`MAX_PENDING` datagrams in flight. It refuses to run outside the namespace
rather than touch the host's ruleset.

    with Impairment(server.config.rtc_udp_port) as net:
        net.loss(3, "down")
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
import selectors
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

RELAY_ADDRESS = "10.77.0.2"  # the only address a relayed server advertises; the relay binds it too
RELAY_MARK = 0x4C4B  # SO_MARK of the relay's sockets: not NATed again, not dropped or lost twice
MAX_FLOWS = 64
MAX_PENDING = 4096
FLOW_IDLE_S = 30.0
_SO_MARK = getattr(socket, "SO_MARK", 36)
_tables = itertools.count()


class NotIsolated(RuntimeError):
    """Refused: not inside host_tools/isolated.sh's network namespace."""


def require_namespace() -> None:
    """The env flag isolated.sh sets, and its veth pair present in this process's netns."""
    if os.environ.get("LKDEVICE_ISOLATED") != "1":
        raise NotIsolated("netimpair changes nftables rules and runs only inside the private network "
                          "namespace: host_tools/isolated.sh <command> (LKDEVICE_ISOLATED is not 1)")
    try:
        with open("/proc/self/net/dev") as f:
            own_ns = "lkd0:" in f.read()
    except OSError:
        own_ns = False
    if not own_ns:
        raise NotIsolated("LKDEVICE_ISOLATED=1 but this network namespace has no lkd0 veth: "
                          "refusing to touch what may be the host's ruleset")


def _nft(*commands: str) -> None:
    script = "\n".join(commands) + "\n"
    proc = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True, timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"nft failed ({proc.returncode}): {proc.stderr.strip()}\n{script}")


_DIRECTIONS = {"down": ("sport",), "up": ("dport",), "both": ("sport", "dport")}


class Impairment:
    """One nft table on the server's media port; rules added by method, all gone on close."""

    def __init__(self, media_port: int, *, max_seconds: float = 300.0):
        require_namespace()
        if not 0 < media_port < 65536:
            raise ValueError(f"bad port {media_port}")
        self.port = media_port
        self.table = f"lkdimpair{os.getpid()}x{next(_tables)}"
        self._closed = False
        self._relay: UdpRelay | None = None
        self._loss: dict[str, float] = {}
        self._dropped_before = 0
        _nft(f"add table inet {self.table}",
             f"add chain inet {self.table} media_in {{ type filter hook input priority 0; policy accept; }}",
             f"add chain inet {self.table} loss",
             f"add chain inet {self.table} blackout",
             f"add rule inet {self.table} media_in jump blackout",
             f"add rule inet {self.table} media_in jump loss")
        # the ruleset must not outlive a test that hangs or a process that dies badly
        self._timer = threading.Timer(max_seconds, self.close)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> "Impairment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def loss(self, percent: float, direction: str = "down") -> None:
        """Drop `percent` % (0..100, whole or tenths) of media packets in `direction`; 0 clears."""
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction is one of {sorted(_DIRECTIONS)}")
        if not 0 <= percent <= 100:
            raise ValueError("percent is 0..100")
        self._loss[direction] = percent
        self._dropped_before += self._counted("loss")  # flushing resets the counters
        rules = [f"flush chain inet {self.table} loss"]
        for d, pct in self._loss.items():
            if pct <= 0:
                continue
            for field in _DIRECTIONS[d]:
                # per mille, so 2.5 % works; numgen draws per packet; on input, so the sender sees no
                # error; the relay's copy of what the server sent is not lost a second time
                skip = f"meta mark != {RELAY_MARK} " if field == "sport" else ""
                rules.append(f"add rule inet {self.table} loss udp {field} {self.port} {skip}"
                             f"numgen random mod 1000 < {int(round(pct * 10))} counter drop")
        _nft(*rules)

    def blackout(self, on: bool) -> None:
        """Drop every media packet both ways (on) or none (off)."""
        self._dropped_before += self._counted("blackout")
        rules = [f"flush chain inet {self.table} blackout"]
        if on:
            rules += [f"add rule inet {self.table} blackout udp {f} {self.port} counter drop"
                      for f in ("sport", "dport")]
        _nft(*rules)

    def outage(self, seconds: float) -> threading.Timer:
        """A blackout that ends by itself after `seconds` (at most 30)."""
        if not 0 < seconds <= 30:
            raise ValueError("an outage lasts 0..30 s")
        self.blackout(True)
        t = threading.Timer(seconds, lambda: None if self._closed else self.blackout(False))
        t.daemon = True
        t.start()
        return t

    def dropped(self) -> int:
        """Packets the loss and blackout rules dropped so far."""
        return self._dropped_before + self._counted("loss") + self._counted("blackout")

    def _counted(self, chain: str) -> int:
        proc = subprocess.run(["nft", "list", "chain", "inet", self.table, chain],
                              text=True, capture_output=True, timeout=10)
        return sum(int(line.split("counter packets")[1].split()[0])
                   for line in proc.stdout.splitlines() if "counter packets" in line)

    def relay(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, *, seed: int | None = None) -> "UdpRelay":
        """Route every client's media through a delaying relay (call before the clients connect)."""
        if self._relay is not None:
            self._relay.set(delay_ms, jitter_ms)
            return self._relay
        t, p, m = self.table, self.port, RELAY_MARK
        _nft(f"add set inet {t} relayports {{ type inet_service; size {MAX_FLOWS * 2}; }}",
             f"add chain inet {t} guard",
             f"add rule inet {t} media_in jump guard",  # after loss: an accept here ends the hook
             f"add rule inet {t} guard udp sport {p} udp dport @relayports counter accept",  # server -> relay
             f"add rule inet {t} guard udp sport {p} meta mark {m} counter accept",  # relay -> client
             f"add rule inet {t} guard udp sport {p} counter drop",  # server -> client, around the relay
             f"add rule inet {t} guard udp dport {p} meta mark != {m} counter drop",  # client -> server, around it
             # what the server sends around the relay must leave no conntrack entry, or a
             # client's answer would count as its reply and skip the DNAT below
             f"add chain inet {t} raw_out {{ type filter hook output priority -300; policy accept; }}",
             f"add rule inet {t} raw_out udp sport {p} udp dport != @relayports counter notrack")
        def on_flow(port: int, opened: bool) -> None:
            _nft(f"{'add' if opened else 'delete'} element inet {t} relayports {{ {port} }}")

        self._relay = UdpRelay(p, delay_ms, jitter_ms, seed=seed, server_host=RELAY_ADDRESS, on_flow=on_flow).start()
        # the empty nat chains register the hooks where conntrack undoes the DNAT on replies
        _nft(f"add chain inet {t} nat {{ type nat hook output priority -100; policy accept; }}",
             f"add chain inet {t} nat_post {{ type nat hook postrouting priority 100; policy accept; }}",
             f"add chain inet {t} nat_in {{ type nat hook input priority 100; policy accept; }}",
             f"add rule inet {t} nat meta mark != {m} ip daddr {RELAY_ADDRESS} udp dport {p} "
             f"dnat ip to {RELAY_ADDRESS}:{self._relay.port}")
        return self._relay

    def relay_stats(self) -> dict | None:
        """What the relay carried, and what it dropped with its queue full (None: no relay)."""
        r = self._relay
        return None if r is None else {"relayed": r.relayed, "overflow": r.overflow, "flows": len(r._flows),
                                       "errors": r.errors[-5:]}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._timer.cancel()
        try:
            _nft(f"delete table inet {self.table}")
        except RuntimeError:
            pass
        if self._relay is not None:
            self._relay.stop()


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    data: bytes = b""
    sock: socket.socket | None = None
    addr: tuple | None = None


class UdpRelay:
    """Datagrams between clients and the server, each held `delay` ± `jitter` (one thread, no asyncio).

    Clients reach it through the DNAT rule (so they still see the server's
    address in replies, conntrack undoes the NAT); it talks to the server from
    one marked socket per client flow.
    """

    def __init__(self, server_port: int, delay_ms: float = 0.0, jitter_ms: float = 0.0, *,
                 server_host: str = "10.77.0.1", seed: int | None = None, on_flow=None):
        self.server = (server_host, server_port)
        self.set(delay_ms, jitter_ms)
        self._rng = random.Random(seed)
        self._on_flow = on_flow  # (upstream port, opened): the guard lets the server's replies to it in
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.setsockopt(socket.SOL_SOCKET, _SO_MARK, RELAY_MARK)
        self._front.bind((RELAY_ADDRESS, 0))
        self._front.setblocking(False)
        self.port = self._front.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._front, selectors.EVENT_READ, None)
        self._flows: dict[tuple, socket.socket] = {}
        self._last_seen: dict[tuple, float] = {}
        self._pending: list[_Pending] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)
        self.relayed = 0
        self.overflow = 0
        self.errors: list[str] = []

    def set(self, delay_ms: float, jitter_ms: float) -> None:
        if delay_ms < 0 or jitter_ms < 0 or delay_ms > 2000 or jitter_ms > 1000:
            raise ValueError("delay 0..2000 ms, jitter 0..1000 ms")
        self.delay = delay_ms / 1000.0
        self.jitter = jitter_ms / 1000.0

    def start(self) -> "UdpRelay":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in [self._front, *self._flows.values()]:
            s.close()
        self._flows.clear()

    def _hold(self) -> float:
        return max(0.0, self.delay + self._rng.uniform(-self.jitter, self.jitter))

    def _upstream(self, client: tuple) -> socket.socket | None:
        sock = self._flows.get(client)
        if sock is None:
            if len(self._flows) >= MAX_FLOWS:
                self._expire(force=True)
                if len(self._flows) >= MAX_FLOWS:
                    return None
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, _SO_MARK, RELAY_MARK)
            sock.bind((self.server[0], 0))
            sock.setblocking(False)
            self._tell(sock, True)
            self._sel.register(sock, selectors.EVENT_READ, client)
            self._flows[client] = sock
        self._last_seen[client] = time.monotonic()
        return sock

    def _expire(self, force: bool = False) -> None:
        now = time.monotonic()
        idle = sorted(self._last_seen.items(), key=lambda kv: kv[1])
        for client, seen in idle:
            if now - seen > FLOW_IDLE_S or force:
                sock = self._flows.pop(client)
                self._last_seen.pop(client)
                self._sel.unregister(sock)
                self._tell(sock, False)
                sock.close()
                if force:
                    return

    def _tell(self, sock: socket.socket, opened: bool) -> None:
        if self._on_flow is None:
            return
        try:
            self._on_flow(sock.getsockname()[1], opened)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            if len(self.errors) < 20:  # the relay goes on; that flow may not get replies
                self.errors.append(repr(exc)[:200])

    def _queue(self, data: bytes, sock: socket.socket, addr: tuple) -> None:
        if len(self._pending) >= MAX_PENDING:
            self.overflow += 1  # a full relay drops, as a router's queue would
            return
        heapq.heappush(self._pending, _Pending(time.monotonic() + self._hold(), next(self._seq), data, sock, addr))

    def _run(self) -> None:
        next_expiry = time.monotonic() + FLOW_IDLE_S
        while not self._stop.is_set():
            now = time.monotonic()
            while self._pending and self._pending[0].due <= now:
                p = heapq.heappop(self._pending)
                try:
                    p.sock.sendto(p.data, p.addr)
                    self.relayed += 1
                except OSError:
                    pass
            timeout = 0.05 if not self._pending else max(0.0, min(0.05, self._pending[0].due - now))
            for key, _ in self._sel.select(timeout):
                sock = key.fileobj
                for _ in range(64):
                    try:
                        data, addr = sock.recvfrom(65536)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    if key.data is None:  # from a client, to the server
                        up = self._upstream(addr)
                        if up is not None:
                            self._queue(data, up, self.server)
                    else:  # from the server, back to its client
                        self._queue(data, self._front, key.data)
            if now > next_expiry:
                self._expire()
                next_expiry = now + FLOW_IDLE_S
