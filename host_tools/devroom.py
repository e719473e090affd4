"""The embedded default for `lkdevice join` without --url: a local server and an echo agent."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Awaitable, Callable, Optional

from lkdevice.rtc.room import Room
from .echo_agent import run_echo_agent

Stopper = Optional[Callable[[], Awaitable[None]]]


@contextlib.asynccontextmanager
async def local_dev_room(args) -> AsyncIterator[tuple[str, str, Stopper]]:
    if args.url is not None:
        yield args.url, args.token, None
        return
    from .livekit_server import DEV_API_KEY, DEV_API_SECRET, LocalServer
    from .tokens import mint_token

    server = LocalServer()
    print("starting a local livekit-server (loopback only)...", flush=True)
    await asyncio.to_thread(server.start)
    print(f"livekit-server on {server.url}; log {server.log_path}", flush=True)
    agent: Room | None = None
    agent_task: asyncio.Task | None = None
    stop = asyncio.Event()
    try:
        if not args.no_agent:
            agent = Room()
            await agent.connect(server.url, mint_token(DEV_API_KEY, DEV_API_SECRET, identity="echo-agent",
                                                       room=args.room, name="Echo agent", kind="agent"))
            agent_task = asyncio.ensure_future(run_echo_agent(agent, stop))
            print(f"echo agent joined {args.room!r}", flush=True)

        async def stop_agent() -> None:
            stop.set()
            if agent_task:
                await agent_task
            if agent:
                await agent.disconnect()

        token = mint_token(DEV_API_KEY, DEV_API_SECRET, identity=args.identity, room=args.room)
        yield server.url, token, stop_agent
    finally:
        stop.set()
        if agent:
            await agent.disconnect()
        await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def local_dev_gateway(room: str, identity: str) -> AsyncIterator[tuple[str, str]]:
    """The embedded default for a simulated device: a local server, an echo agent,
    and a gateway on a free loopback port. Yields (gateway URL, device token)."""
    from types import SimpleNamespace

    from lkdevice.gateway import Gateway, GatewayConfig

    args = SimpleNamespace(url=None, token=None, room=room, identity=identity, no_agent=False)
    async with local_dev_room(args) as (url, token, _):
        async with Gateway(GatewayConfig(livekit_url=url, port=0)) as gateway:
            print(f"gateway serving devices at {gateway.url}", flush=True)
            yield gateway.url, token
