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

    @property
    def url(self) -> str:
        assert self.server is not None, "Lab.start() first"
        return self.server.url

    def start(self) -> "Lab":
        node_ip = os.environ.get("LKDEVICE_NODE_IP", "127.0.0.1")
        ips = [node_ip] + (["127.0.0.1"] if node_ip != "127.0.0.1" else [])
        self.server = LocalServer(ServerConfig(node_ip=node_ip, candidate_ips=ips)).start()
        return self

    def stop(self) -> None:
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
