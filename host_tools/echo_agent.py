"""A stand-in agent for demos: it says back whatever it hears, and reports its state.

It runs on our own client, so a demo needs nothing but a local server.
"""

from __future__ import annotations

import asyncio
import logging

from lkdevice.rtc.room import Room

log = logging.getLogger(__name__)


async def run_echo_agent(room: Room, stop: asyncio.Event | None = None) -> None:
    """Republish every subscribed audio track on one 'echo' track until `stop`."""
    voice = await room.publish_audio(name="echo")
    await room.set_attributes({"lk.agent.state": "listening"})
    tasks: dict[str, asyncio.Task] = {}

    async def echo(track) -> None:
        async for chunk in room.audio_stream(track, sample_rate=48000, frame_ms=20):
            voice.track.write_nowait(chunk.samples, chunk.sample_rate)

    def on_subscribed(track, pub, participant) -> None:
        if pub.kind == "audio" and pub.sid not in tasks:
            log.info("echoing %s from %s", pub.sid, participant.identity)
            tasks[pub.sid] = asyncio.ensure_future(echo(track))

    def on_unsubscribed(track, pub, participant) -> None:
        task = tasks.pop(pub.sid, None)
        if task:
            task.cancel()

    room.on("track_subscribed", on_subscribed)
    room.on("track_unsubscribed", on_unsubscribed)
    room.register_rpc_method("ping", lambda inv: "pong")
    try:
        await (stop.wait() if stop else asyncio.Event().wait())
    finally:
        for task in tasks.values():
            task.cancel()
