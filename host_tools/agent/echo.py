"""`lkdevice agent --echo`: replay what the user said once they stop speaking (for latency tests).

The Silero VAD decides where speech ends, as in the full agent, so the time from
the end of the user's speech to the first replayed audio is the agent's
endpointing plus the transport, with no STT or TTS in between.
"""

from __future__ import annotations

import asyncio
import logging

from livekit import rtc
from livekit.agents import vad as agents_vad

log = logging.getLogger("lkdevice.agent")
SAMPLE_RATE = 48000
# one utterance replayed at a time; a second one waits for the first to end
MAX_PENDING_UTTERANCES = 2


async def run_echo(ctx, vad: agents_vad.VAD) -> None:
    await ctx.connect(auto_subscribe="audio_only")
    room: rtc.Room = ctx.room
    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=1000)
    track = rtc.LocalAudioTrack.create_audio_track("echo", source)
    await room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    await room.local_participant.set_attributes({"lk.agent.state": "listening"})
    utterances: asyncio.Queue[list[rtc.AudioFrame]] = asyncio.Queue(MAX_PENDING_UTTERANCES)
    listening: dict[str, asyncio.Task] = {}

    async def listen(audio: rtc.Track) -> None:
        stream = vad.stream()
        frames = rtc.AudioStream(audio, sample_rate=16000, num_channels=1)

        async def feed() -> None:
            async for ev in frames:
                stream.push_frame(ev.frame)

        feeder = asyncio.ensure_future(feed())
        try:
            async for ev in stream:
                if ev.type == agents_vad.VADEventType.END_OF_SPEECH and ev.frames:
                    if utterances.full():
                        log.warning("echo: dropping an utterance (still replaying %d)", utterances.qsize())
                        continue
                    utterances.put_nowait(list(ev.frames))
        finally:
            feeder.cancel()
            await stream.aclose()
            await frames.aclose()

    async def replay() -> None:
        resampler: rtc.AudioResampler | None = None
        while True:
            frames = await utterances.get()
            await room.local_participant.set_attributes({"lk.agent.state": "speaking"})
            for frame in frames:
                if frame.sample_rate != SAMPLE_RATE:
                    resampler = resampler or rtc.AudioResampler(frame.sample_rate, SAMPLE_RATE)
                    for out in resampler.push(frame):
                        await source.capture_frame(out)
                else:
                    await source.capture_frame(frame)
            await source.wait_for_playout()
            await room.local_participant.set_attributes({"lk.agent.state": "listening"})

    @room.on("track_subscribed")
    def on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and pub.sid not in listening:
            log.info("echo: listening to %s", participant.identity)
            listening[pub.sid] = asyncio.ensure_future(listen(track))

    @room.on("track_unsubscribed")
    def on_untrack(track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        task = listening.pop(pub.sid, None)
        if task:
            task.cancel()

    player = asyncio.ensure_future(replay())

    async def shutdown() -> None:
        player.cancel()
        for task in listening.values():
            task.cancel()

    ctx.add_shutdown_callback(shutdown)
