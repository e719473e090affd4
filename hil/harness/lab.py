"""What every scenario of a run shares: the LiveKit server, tokens, and (started on first need) the agent."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from lkdevice.host_tools.livekit_server import DEV_API_KEY, DEV_API_SECRET, LocalServer, ServerConfig
from lkdevice.host_tools.stack import AgentProcess
from lkdevice.host_tools.tokens import mint_token

from .far_side import FarSide

AGENT_NAME = "lkdevice-hil-agent"


class Lab:
    """A local livekit-server (in the namespace's address when there is one) and the offline voice agent."""

    def __init__(self, server: LocalServer | None = None) -> None:
        self.server = server  # one already running (a test session's) is used, and left running
        self._own_server = server is None
        self.agent: AgentProcess | None = None
        self._impaired: list[Lab] = []  # at most one: a scenario's, kept until the device has stopped

    @property
    def url(self) -> str:
        assert self.server is not None, "Lab.start() first"
        return self.server.url

    def start(self) -> "Lab":
        node_ip = os.environ.get("LKDEVICE_NODE_IP", "127.0.0.1")
        ips = [node_ip] + (["127.0.0.1"] if node_ip != "127.0.0.1" else [])
        self.server = LocalServer(ServerConfig(node_ip=node_ip, candidate_ips=ips)).start()
        return self

    def impaired(self, **impairment) -> "ImpairedLab":
        """A started ImpairedLab for one scenario. It outlives the scenario's cleanups (the runner stops the
        device after them: its server must not go first), so the previous one is stopped here, or at stop()."""
        self._stop_impaired()
        lab = ImpairedLab(**impairment)
        self._impaired.append(lab)
        return lab.start()

    def _stop_impaired(self) -> None:
        while self._impaired:
            self._impaired.pop().stop()

    def stop(self) -> None:
        self._stop_impaired()
        if self.agent is not None:
            self.agent.terminate()
            self.agent.log_path.unlink(missing_ok=True)
            self.agent = None
        if self.server is not None and self._own_server:
            self.server.stop()
            self.server = None

    def restart_server(self, timeout: float = 20.0) -> None:
        """livekit-server stopped and started again on the same ports (its rooms are gone). The agent,
        if running, is stopped too: the next scenario that needs it starts a fresh one."""
        assert self.server is not None, "Lab.start() first"
        if self.agent is not None:
            self.agent.terminate()
            self.agent.log_path.unlink(missing_ok=True)
            self.agent = None
        self.server.restart(timeout)

    def token(self, identity: str, room: str, *, agent: bool = False, **kw) -> str:
        return mint_token(DEV_API_KEY, DEV_API_SECRET, identity=identity, room=room,
                          agent_name=AGENT_NAME if agent else None, **kw)

    @staticmethod
    def room_name(scenario: str) -> str:
        return f"hil-{scenario}-{uuid.uuid4().hex[:6]}"

    async def voice_agent(self) -> AgentProcess:
        """`lkdevice agent`, started once per run (its models load in ~10-20 s)."""
        if self.agent is None or self.agent.returncode() is not None:
            log = Path(tempfile.gettempdir()) / f"lkdevice-hil-agent-{uuid.uuid4().hex[:6]}.log"
            self.agent = AgentProcess(self.url, agent_name=AGENT_NAME, echo=False, log_path=log,
                                      extra_args=("--greeting", ""))
            self.agent.spawn()
            await self.agent.wait_registered()
        return self.agent

    async def far_side(self, identity: str, room: str, *, hidden: bool = False, agent: bool = False) -> FarSide:
        return await FarSide(identity).connect(self.url, self.token(identity, room, hidden=hidden, agent=agent,
                                                                    ttl=3600))

    def secrets(self) -> list[str]:
        """What must never appear in a report."""
        return [DEV_API_SECRET]


# the core issue's lossy network: 2 % of the server's media to its subscribers lost (each direction of a
# call loses 2 % once), every datagram held 30 ± 30 ms by the relay on each hop (client -> server and back)
LOSSY = {"loss_pct": 2.0, "delay_ms": 30.0, "jitter_ms": 30.0}


class ImpairedLab(Lab):
    """A lab with a server of its own whose media all pass host_tools.netimpair: loss and the delaying relay.

    The server advertises only the relay's address, and the relay is up before
    any client connects (NAT takes new flows only). Inside isolated.sh only."""

    def __init__(self, *, loss_pct: float, delay_ms: float = 0.0, jitter_ms: float = 0.0,
                 loss_direction: str = "down", max_seconds: float = 900.0) -> None:
        super().__init__()
        self.loss_pct, self.delay_ms, self.jitter_ms = loss_pct, delay_ms, jitter_ms
        self.loss_direction = loss_direction
        self.max_seconds = max_seconds
        self.net = None

    def start(self) -> "ImpairedLab":
        from lkdevice.host_tools.netimpair import RELAY_ADDRESS, Impairment, require_namespace
        require_namespace()  # before a server starts: a clear reason, nothing left running
        relayed = bool(self.delay_ms or self.jitter_ms)
        ip = RELAY_ADDRESS if relayed else os.environ.get("LKDEVICE_NODE_IP", "127.0.0.1")
        self.server = LocalServer(ServerConfig(node_ip=ip, candidate_ips=[ip])).start()
        try:
            self.net = Impairment(self.server.config.rtc_udp_port, max_seconds=self.max_seconds)
            if relayed:
                self.net.relay(self.delay_ms, self.jitter_ms)
            if self.loss_pct:
                self.net.loss(self.loss_pct, self.loss_direction)
        except BaseException:
            self.stop()
            raise
        return self

    def describe(self) -> str:
        parts = [f"{self.loss_pct:g} % loss ({self.loss_direction})"] if self.loss_pct else []
        if self.delay_ms or self.jitter_ms:
            parts.append(f"{self.delay_ms:g} ± {self.jitter_ms:g} ms per relayed hop")
        return ", ".join(parts) or "no impairment"

    def dropped(self) -> int | None:
        try:
            return None if self.net is None else self.net.dropped()
        except RuntimeError:
            return None

    def stop(self) -> None:
        if self.net is not None:
            self.net.close()
            self.net = None
        super().stop()
