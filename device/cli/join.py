"""`lkdevice join` and `lkdevice echo`: a participant on our own client, from the command line."""

from __future__ import annotations

import asyncio
import sys
import time

from ..rtc.errors import LiveKitError
from ..rtc.room import Room, RoomOptions
from ..rtc.wavfile import WavWriter, dominant_frequency, read_wav
from ..robot.audio import mic_source

DEMO_ROOM = "lkdevice-demo"


def _describe(name: str, args: tuple) -> str:
    parts = []
    for a in args:
        identity = getattr(a, "identity", None)
        if identity is not None:
            parts.append(f"participant={identity}")
        elif hasattr(a, "sid") and hasattr(a, "kind"):
            parts.append(f"track={a.sid}({a.kind})")
        elif isinstance(a, list):
            parts.append("[" + ",".join(getattr(p, "identity", str(p)) for p in a) + "]")
        elif isinstance(a, dict):
            parts.append(" ".join(f"{k}={v}" for k, v in a.items()))
        elif hasattr(a, "payload") and hasattr(a, "topic"):
            parts.append(f"from={a.participant_identity} topic={a.topic} bytes={len(a.payload)}")
        elif hasattr(a, "info") and hasattr(a, "text"):
            parts.append(f"from={a.info.participant_identity} topic={a.info.topic} text={a.text!r}")
        elif a is not None and not hasattr(a, "recv"):
            parts.append(str(a))
    return f"{name} " + " ".join(parts)


PRINTED_EVENTS = [
    "connected", "disconnected", "reconnecting", "reconnected", "participant_connected",
    "participant_disconnected", "track_published", "track_unpublished", "track_subscribed",
    "track_unsubscribed", "track_muted", "track_unmuted", "participant_attributes_changed",
    "agent_state_changed", "participant_metadata_changed", "participant_name_changed",
    "active_speakers_changed", "connection_quality_changed", "room_metadata_changed",
    "data_received", "text_stream_received",
]


def _print_events(room: Room, started: float) -> None:
    for name in PRINTED_EVENTS:
        def printer(*args, _name=name):
            print(f"[{time.monotonic() - started:7.2f}s] {_describe(_name, args)}", flush=True)
        room.on(name, printer)


def _source(play: str | None):
    # the robot's --play, but a file is played once
    return mic_source(play, loop=False) if play else None


async def _record(room: Room, path: str, stop: asyncio.Event) -> int:
    """Write the first remote audio track we get, at 48 kHz mono, until `stop`."""
    writer = WavWriter(path, 48000)
    try:
        track_wait = asyncio.ensure_future(room.wait_for_audio_track(timeout=3600))
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({track_wait, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if track_wait not in done:
            track_wait.cancel()
            return 0
        stream = room.audio_stream(track_wait.result(), sample_rate=48000, frame_ms=20)
        while not stop.is_set():
            nxt = asyncio.ensure_future(stream.__anext__())
            done, _ = await asyncio.wait({nxt, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                break
            try:
                writer.write(nxt.result().samples)
            except StopAsyncIteration:
                break
        return writer.samples
    finally:
        writer.close()


async def _join(args) -> int:
    from ..host_tools.devroom import local_dev_room

    started = time.monotonic()
    async with local_dev_room(args) as (url, token, echo):
        room = Room(RoomOptions(room=args.room if args.url is None or args.room_given else None))
        _print_events(room, started)
        try:
            await room.connect(url, token)
        except LiveKitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        me = room.local_participant
        print(f"joined room {room.name!r} as {me.identity!r} ({me.sid}); "
              f"others: {', '.join(room.remote_participants) or 'none'}", flush=True)
        stop = asyncio.Event()
        recorder = asyncio.ensure_future(_record(room, args.record, stop)) if args.record else None
        mic = None
        if args.play:
            mic = await room.publish_audio(_source(args.play))
            print(f"publishing {args.play} as track {mic.sid}", flush=True)
        closed = asyncio.ensure_future(room.wait_closed())
        try:
            await asyncio.wait_for(asyncio.shield(closed), args.duration)
            print(f"room closed: {room.disconnect_reason}", flush=True)
        except asyncio.TimeoutError:
            pass
        stop.set()
        if recorder:
            samples = await recorder
            print(f"recorded {samples / 48000:.2f}s to {args.record}", flush=True)
            pitch = dominant_frequency(*read_wav(args.record))
            if pitch:
                print(f"loudest tone in the recording: {pitch:.0f} Hz", flush=True)
        await room.disconnect()
        if echo is not None:
            await echo()
    return 0


async def _echo(args) -> int:
    from ..host_tools.echo_agent import run_echo_agent

    room = Room()
    _print_events(room, time.monotonic())
    await room.connect(args.url, args.token)
    print(f"echo agent in room {room.name!r} as {room.local_participant.identity!r}", flush=True)
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_echo_agent(room, stop))
    try:
        await asyncio.wait_for(room.wait_closed(), args.duration)
    except asyncio.TimeoutError:
        pass
    stop.set()
    await task
    await room.disconnect()
    return 0


def add_parsers(sub) -> None:
    j = sub.add_parser("join", help="join a room, publish a tone or WAV, record what you hear, print events",
                       description="Join a room as a participant on our own client and print its events. "
                                   "Without --url a local dev server and an echo agent are started.",
                       epilog="example: lkdevice join --play tone:440 --record echo.wav --duration 5")
    j.add_argument("--url", help="LiveKit URL (ws[s]:// or http[s]://); without it a local dev server is started")
    j.add_argument("--token", help="access token (required with --url)")
    j.add_argument("--room", help=f"room name (default {DEMO_ROOM}; with --url, checked against the token)")
    j.add_argument("--identity", default="lkdevice", help="identity for the self-minted dev token")
    j.add_argument("--play", help="tone:FREQ or a 16-bit WAV file to publish as the microphone")
    j.add_argument("--record", help="write the first remote audio track here (WAV, 48 kHz mono)")
    j.add_argument("--duration", type=float, default=10.0, help="seconds to stay in the room (default 10)")
    j.add_argument("--no-agent", action="store_true", help="without --url: do not start the local echo agent")
    j.set_defaults(run=run_join)

    e = sub.add_parser("echo", help="run an echo agent: republish what it hears",
                       epilog="example: lkdevice echo --url ws://127.0.0.1:7880 --token \"$(lkdevice token --identity echo)\"")
    e.add_argument("--url", required=True)
    e.add_argument("--token", required=True)
    e.add_argument("--duration", type=float, default=3600.0)
    e.set_defaults(run=lambda a: asyncio.run(_echo(a)))


def run_join(args) -> int:
    if (args.url is None) != (args.token is None):
        args.parser.error("--url and --token go together")
    args.room_given = args.room is not None
    args.room = args.room or DEMO_ROOM
    return asyncio.run(_join(args))
