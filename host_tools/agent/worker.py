"""`lkdevice agent`: the offline voice agent as a LiveKit Agents worker.

A worker registers with the server and is dispatched by name (a device's token
asks for it in its room configuration). Each job runs an `AgentSession` made of
Silero VAD, PocketSphinx STT, eSpeak NG TTS and the rule-based `Brain` in the
Agent's `llm_node`, or, with `echo`, replays what it heard when the user stops.

Nothing here reaches out: turn detection is the VAD's (no turn-detector model),
interruption is VAD-based (not the adaptive detector, which calls a cloud
model), no inference gateway, no telemetry exporter.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

DEFAULT_AGENT_NAME = "lkdevice-agent"
# silence the VAD needs to call speech ended; the turn ends endpointing_s later
_VAD_SILENCE_S = 0.25
log = logging.getLogger("lkdevice.agent")


class AgentDependencyMissing(RuntimeError):
    """The agent extra or espeak-ng is not installed."""


@dataclass(frozen=True)
class AgentConfig:
    url: str
    api_key: str
    api_secret: str
    agent_name: str = DEFAULT_AGENT_NAME
    echo: bool = False
    # said when a device joins; "" for none
    greeting: str = "Hello. I am listening."
    # silence after speech before the user's turn ends: the main part of the response time
    endpointing_s: float = 0.3
    # the worker's health-check HTTP server: loopback, any free port
    http_host: str = "127.0.0.1"
    http_port: int = 0
    # jobs in their own processes (LiveKit's default) or threads of the worker's (lighter, for tests)
    job_threads: bool = False
    log_level: str = "WARN"  # LiveKit Agents' own logging
    # a JSON line per conversation turn (who, text, LiveKit Agents' per-turn latency metrics)
    metrics_path: str | None = None
    # sessions at once; the next device waits for the server to find another worker
    max_jobs: int = 8

    def __repr__(self) -> str:  # the secret never reaches a log
        return f"AgentConfig(url={self.url!r}, agent_name={self.agent_name!r}, echo={self.echo})"


def _imports():
    try:
        from livekit import agents  # noqa: F401
        from livekit.plugins import silero  # noqa: F401
    except ImportError as e:
        raise AgentDependencyMissing(
            f"the voice agent needs the agent extra ({e.name} is missing): pip install 'lkdevice[agent]'") from None


def _prewarm(proc, config: AgentConfig) -> None:
    from livekit.plugins import silero

    proc.userdata["config"] = config
    # Silero's model ships in the plugin: loaded once per process, not per call
    proc.userdata["vad"] = silero.VAD.load(min_silence_duration=_VAD_SILENCE_S)
    if not config.echo:
        from .brain import PHRASES
        from .sphinx_stt import Recognizer

        # the decoders (about 1.5 s to load) are cached per process: built here, before the first
        # session, not on the session's event loop
        Recognizer(PHRASES)


async def _entrypoint(ctx) -> None:
    config: AgentConfig = ctx.proc.userdata["config"]
    vad = ctx.proc.userdata["vad"]
    if config.echo:
        from .echo import run_echo

        await run_echo(ctx, vad)
        return
    from livekit.agents import AgentSession

    from .brain import PHRASES, Brain
    from .espeak_tts import ESpeakTTS
    from .sphinx_stt import SphinxSTT
    from .voice import DeviceAgent, NoModel

    await ctx.connect()
    session = AgentSession(
        vad=vad,
        stt=SphinxSTT(PHRASES),
        tts=ESpeakTTS(),
        llm=NoModel(),
        turn_handling={
            "turn_detection": "vad",
            "endpointing": {"min_delay": config.endpointing_s, "max_delay": 3.0},
            "interruption": {"enabled": True, "mode": "vad", "min_duration": 0.4},
            "preemptive_generation": {"enabled": False},
        },
        # the STT is not streaming: AgentSession wraps it with the VAD
        user_away_timeout=None,
    )
    agent = DeviceAgent(Brain(), ctx.room)
    if config.metrics_path:
        _record_turns(session, ctx.room.name, config.metrics_path)
    from livekit.agents.voice import room_io

    # no automatic gain control: it drove the robot's speech into clipping and, while it
    # settles, reshapes a short command (the grammar lost "what time is it" 1 time in 3)
    options = room_io.RoomOptions(audio_input=room_io.AudioInputOptions(auto_gain_control=False))
    await session.start(agent=agent, room=ctx.room, room_options=options)
    if config.greeting:
        await ctx.wait_for_participant()
        session.say(config.greeting, allow_interruptions=True)


def _record_turns(session, room: str, path: str) -> None:
    import json
    import time

    def on_item(ev) -> None:
        item = ev.item
        if getattr(item, "type", None) != "message":
            return
        line = {"time": time.time(), "room": room, "role": getattr(item, "role", None),
                "text": getattr(item, "text_content", None), "interrupted": getattr(item, "interrupted", None),
                "metrics": dict(getattr(item, "metrics", None) or {})}
        with open(path, "a") as f:  # one write per line: jobs in other processes append to the same file
            f.write(json.dumps(line, default=str) + "\n")

    session.on("conversation_item_added", on_item)


# livekit-server hands a job only to a worker whose reported load is under 0.7 (its target load)
_SERVER_TARGET_LOAD = 0.7


def _load(server, max_jobs: int) -> float:
    """Load as sessions out of `max_jobs`, not the machine's CPU: LiveKit Agents' default reports CPU
    use, and on a busy 2-core host that passes 0.7 and the server stops dispatching while idle."""
    return min(1.0, _SERVER_TARGET_LOAD * len(server.active_jobs) / max_jobs)


def build_server(config: AgentConfig):
    """The AgentServer for `config`, not yet running."""
    _imports()
    from livekit.agents import AgentServer, JobExecutorType

    server = AgentServer(
        ws_url=config.url,
        api_key=config.api_key,
        api_secret=config.api_secret,
        host=config.http_host,
        port=config.http_port,
        job_executor_type=JobExecutorType.THREAD if config.job_threads else JobExecutorType.PROCESS,
        num_idle_processes=1,
        setup_fnc=functools.partial(_prewarm, config=config),
        load_fnc=functools.partial(_load, max_jobs=config.max_jobs),
        initialize_process_timeout=60.0,
        shutdown_process_timeout=5.0,
        log_level=config.log_level,
    )
    server.rtc_session(_entrypoint, agent_name=config.agent_name)
    return server


async def serve(config: AgentConfig, on_registered: Callable[[str], Any] | None = None) -> None:
    """Run the worker until cancelled. `on_registered(worker_id)` once the server has it."""
    # LiveKit Agents reads these too (its job processes inherit them); nothing else goes out
    os.environ.setdefault("LIVEKIT_URL", config.url)
    server = build_server(config)
    if on_registered is not None:
        server.on("worker_registered", lambda worker_id, info: on_registered(worker_id))
    try:
        await server.run(devmode=True)
    finally:
        await asyncio.shield(server.aclose())
