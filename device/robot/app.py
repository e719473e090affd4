"""`RobotApp`: the robot in the room, for as long as it runs.

It joins with our `Room`, publishes the microphone, plays the agent's speech,
starts the camera's video, and hands the agent's commands to the plugins
(`CommandRouter`). The Room gets back on its own after a lost link or a
server restart; when a session ends anyway (a refused token on rejoin, the
server removed us) the app joins again with a fresh Room, with backoff, for
ever, unless the token was refused and the token source cannot give another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

from ..rtc.backoff import Backoff
from ..rtc.errors import LiveKitError, TokenRejected
from ..rtc.room import Room, RoomOptions
from ..rtc.streams import TRANSCRIPTION_TOPIC
from ..rtc.tasks import TaskSet
from .audio import AudioBackend, make_audio
from .config import RobotConfig
from .console import Console
from .service import Notifier, WatchdogClock
from .tokens import TokenError, TokenSource

# how often the app checks it is still making progress (and may ping systemd's watchdog)
HEALTH_PERIOD_S = 0.5
# longest wait for the plugins' router to let go of the room when a session ends
ROUTER_CLOSE_S = 3.0
# how often -v logs the speaker's playout stats (jitter-buffer delay, concealed frames)
SPEAKER_STATS_PERIOD_S = 2.0
# a session that lasted this long resets the backoff: the next loss is news, not a flap
STABLE_SESSION_S = 30.0


class StartupError(Exception):
    """The robot cannot run as configured: one line for the user."""


@dataclass
class SessionStats:
    sessions: int = 0
    attempts: int = 0
    last_error: str = ""
    extra: dict = field(default_factory=dict)


class RobotApp:
    def __init__(self, config: RobotConfig, tokens: TokenSource, *, log: logging.Logger,
                 console: Console | None = None, notifier: Notifier | None = None, url: str | None = None):
        self.config = config
        self.url = url or config.url
        self.tokens = tokens
        self.log = log
        self.console = console or Console()
        self.notifier = notifier or Notifier({})
        self.stats = SessionStats()
        self.room: Room | None = None
        self.audio: AudioBackend | None = None
        self.plugins: list = []
        self.router = None
        self.video = None
        self._mic = None
        self._playing: tuple[str, bool] | None = None  # (track sid, from an agent)
        self._speaker_stream = None  # the AudioStream the speaker plays, for its stats
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._backoff = Backoff(initial=0.5, maximum=30.0)
        self._watchdog = WatchdogClock(self.notifier.watchdog_s) if self.notifier.watchdog_s else None
        self._ready_sent = False
        self._refreshed: str | None = None
        self._tasks = TaskSet(log, limit=8)
        self._status = ""

    # -- control --------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
            self.log.info("stopping: %s", reason)
            self._stop.set()

    def _set_status(self, status: str, ready: bool = True) -> None:
        """STATUS= for systemd; the first one with `ready` (joined, or retrying) is READY=1."""
        if status == self._status:
            return
        self._status = status
        if not self._ready_sent and ready:
            self._ready_sent = self.notifier.ready(status) or not self.notifier.enabled
        else:
            self.notifier.status(status)

    # -- the run ----------------------------------------------------------------------
    async def run(self) -> int:
        """Until stop() or the configured duration; returns the exit code."""
        self._setup()
        health = asyncio.ensure_future(self._health_loop())
        timer = None
        if self.config.duration is not None:
            timer = asyncio.get_running_loop().call_later(self.config.duration, self.stop, "duration elapsed")
        try:
            await self.audio.start()
            return await self._session_loop()
        finally:
            if timer:
                timer.cancel()
            health.cancel()
            self.notifier.stopping(f"stopping: {self._stop_reason or 'error'}")
            await self._tasks.aclose(2)
            await self._close_plugins()
            await self.audio.close()
            self.notifier.close()

    def _setup(self) -> None:
        try:
            self.audio = make_audio(self.config.audio, self.log)
        except (RuntimeError, ValueError, OSError) as exc:
            raise StartupError(f"audio: {exc}") from None
        if self.config.plugins:
            try:
                from .commands import PluginError, load_plugins
            except ImportError as exc:
                raise StartupError(f"plugins need lkdevice.robot.commands, which this build lacks ({exc})") from None
            try:
                self.plugins = load_plugins(self.config.plugins, self.config.plugin_settings)
            except PluginError as exc:
                raise StartupError(f"plugin: {exc}") from None
        if self.config.video.camera != "none":
            try:
                from . import video  # noqa: F401  (VIDEO's module; optional in this build)
            except ImportError as exc:
                raise StartupError(f"--camera {self.config.video.camera} needs lkdevice.robot.video, "
                                   f"which this build lacks ({exc})") from None

    async def _session_loop(self) -> int:
        while not self._stop.is_set():
            self.stats.attempts += 1
            # a fixed token expires; the server's refresh of it, from the last session, may not have
            refreshed, self._refreshed = self._refreshed, None
            try:
                token = refreshed or await self._until_stopped(self.tokens.get())
            except TokenError as exc:
                if exc.fatal:
                    self.console.line(f"error: {exc}")
                    return 2
                await self._retry(str(exc))
                continue
            if token is None:
                break
            room = Room(RoomOptions(room=self.config.room, reconnect_window=None))
            self._wire(room)
            self._set_status("connecting", ready=False)
            try:
                connected = await self._until_stopped(room.connect(self.url, token))
            except TokenRejected as exc:
                if refreshed:
                    await self._retry(f"{exc}; back to the configured token")
                    continue
                if not self.tokens.renewable:
                    self.console.line(f"error: {exc}; the token source cannot give another, stopping")
                    return 2
                await self._retry(f"{exc}; asking the token source for a new one")
                continue
            except (LiveKitError, OSError) as exc:
                await self._retry(f"could not join: {exc}")
                continue
            if connected is None:  # stopped while connecting
                await room.disconnect()
                break
            started = time.monotonic()
            await self._session(room)
            if not self.tokens.renewable:
                self._refreshed = room.refresh_token
            if time.monotonic() - started > STABLE_SESSION_S:
                self._backoff.reset()
            if not self._stop.is_set():
                # the Room keeps reconnecting by itself; it ended: removed, or a refused token
                await self._retry(f"left the room: {room.disconnect_reason}")
        return 0

    async def _until_stopped(self, coro):
        """`coro`'s result, or None if stop() came first (then it is cancelled)."""
        task = asyncio.ensure_future(coro)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if task in done:
            result = task.result()
            return True if result is None else result
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None

    async def _retry(self, why: str) -> None:
        delay = self._backoff.next_delay()
        self.stats.last_error = why
        self.log.warning("%s; trying again in %.1fs", why, delay)
        self._set_status(f"reconnecting: {why}")
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _session(self, room: Room) -> None:
        self.room = room
        self.stats.sessions += 1
        me = room.local_participant
        self.console.line(f"joined room {room.name!r} as {me.identity!r}")
        self._set_status(f"connected to room {room.name} as {me.identity}")
        try:
            for p in room.remote_participants.values():
                self._on_agent_state(p, p.agent_state)
            await self._attach_router(room)  # first: an agent may call as soon as it sees us
            if self.audio.has_mic:
                self._mic = await room.publish_audio(name="microphone", max_buffer_ms=100)
                self.audio.set_mic(self._mic.track)
            await self._start_video(room)
            closed = asyncio.ensure_future(room.wait_closed())
            await self._until_stopped(asyncio.shield(closed))
            closed.cancel()
        except (LiveKitError, OSError) as exc:
            self.log.warning("session failed: %s", exc)
        except StartupError:
            self.stop("the robot cannot run as configured")
            raise
        finally:
            await self._end_session(room)

    async def _attach_router(self, room: Room) -> None:
        if not self.plugins:
            return
        from .commands import CommandRouter, PluginError

        try:
            # one router per session: it belongs to its room; the plugins (and their state) stay
            self.router = CommandRouter(room, self.plugins, watchdog_s=self.config.watchdog_s, log=self.log)
        except PluginError as exc:  # two plugins claim one method: no session will do better
            raise StartupError(f"plugin: {exc}") from None
        self.router.attach()

    async def _start_video(self, room: Room) -> None:
        if self.config.video.camera == "none":
            return
        from .video import start_video

        try:
            self.video = await start_video(room, self.config.video, self.log)
        except (LiveKitError, asyncio.CancelledError):
            raise
        except Exception as exc:  # no such camera, an encoder that will not open: the config's to fix
            raise StartupError(f"camera {self.config.video.camera}: {exc}") from None
        v = self.config.video
        reason = getattr(self.video, "reason", "")
        self.console.line(f"video: {v.camera} {v.width}x{v.height}@{v.fps} as {self.video.codec}"
                          + (f"; {reason}" if reason else ""))

    async def _end_session(self, room: Room) -> None:
        reason = self._stop_reason if self._stop.is_set() else f"disconnected: {room.disconnect_reason}"
        await self._stop_motors(reason)
        self.audio.set_mic(None)
        self.audio.play(None)
        self._playing = None
        if self.video is not None:
            video, self.video = self.video, None
            try:
                await video.close()
            except Exception as exc:
                self.log.warning("closing the video: %s", exc)
        if self.router is not None:
            router, self.router = self.router, None
            try:
                # bounded: the robot must leave the room whatever its plugins do
                await asyncio.wait_for(router.close(), ROUTER_CLOSE_S)
            except asyncio.TimeoutError:
                self.log.warning("the command router did not close within %.0fs", ROUTER_CLOSE_S)
            except Exception as exc:
                self.log.warning("closing the command router: %s", exc)
        try:
            await asyncio.wait_for(room.disconnect(), 5)  # the others see CLIENT_INITIATED
        except Exception as exc:
            self.log.warning("leaving the room: %s", exc)
        self.console.line(f"left the room ({reason})")
        self.room = None
        self._mic = None

    async def _stop_motors(self, reason: str) -> None:
        if self.router is None:
            return
        try:
            await asyncio.wait_for(self.router.stop_all(reason), 2)
        except Exception as exc:
            self.log.error("stopping the motors failed: %s", exc)

    async def _close_plugins(self) -> None:
        for plugin in self.plugins:
            close = getattr(plugin, "close", None)
            if close is not None:
                try:
                    result = close()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception as exc:
                    self.log.warning("closing plugin %r: %s", plugin, exc)

    # -- room events ---------------------------------------------------------------------
    def _wire(self, room: Room) -> None:
        room.on("agent_state_changed", self._on_agent_state)
        room.on("track_subscribed", lambda track, pub, p: self._on_track(room, track, pub, p))
        room.on("track_unsubscribed", self._on_track_gone)
        room.on("reconnecting", lambda *a: self._on_link_lost(room))
        room.on("reconnected", lambda *a: self._set_status(f"connected to room {room.name}"))
        room.register_text_stream_handler(TRANSCRIPTION_TOPIC, self._on_transcription)

    def _on_agent_state(self, p, state) -> None:
        if state is None:
            return
        self.console.agent_state(p.identity, state)
        if self.router is not None:
            self.router.agent_state(p.identity, state)

    async def _on_transcription(self, reader, sender: str) -> None:
        identity = reader.info.participant_identity or sender
        text = ""
        async for chunk in reader:
            text += chunk
            if self.router is not None:
                self.router.transcript(identity, text, False)
        if reader.error:
            self.log.info("transcription from %s cut short: %s", identity, reader.error)
        self.console.transcript(identity, text, True)
        if self.router is not None:
            self.router.transcript(identity, text, True)

    def _on_track(self, room: Room, track, pub, p) -> None:
        if pub.kind != "audio" or not self.audio.has_speaker:
            return
        if self._playing is not None and self._playing[1] and not p.is_agent:
            return  # the agent's voice comes first
        self._playing = (pub.sid, p.is_agent)
        self._speaker_stream = room.audio_stream(track, sample_rate=48000)
        self.audio.play(self._speaker_stream)
        self.log.info("playing %s's audio track %s", p.identity, pub.sid)

    def _on_track_gone(self, track, pub, p) -> None:
        if self._playing is not None and self._playing[0] == pub.sid:
            self._playing = None
            self._speaker_stream = None
            self.audio.play(None)

    def _on_link_lost(self, room: Room) -> None:
        self._set_status("reconnecting")
        if self.router is not None:  # no commands can arrive: nothing may keep moving
            self._tasks.spawn(self._stop_motors("connection lost"), "stopping the motors")

    # -- health -----------------------------------------------------------------------------
    def _making_progress(self) -> bool:
        room = self.room
        if room is None or room.connection_state != "connected":
            return True  # trying to get back: the session loop and the Room's attempts run
        if self._mic is None:
            return True
        sent = self._mic.track.frames_sent
        moved = sent != self.stats.extra.get("mic_frames")
        self.stats.extra["mic_frames"] = sent
        return moved

    async def _health_loop(self) -> None:
        stats_due = time.monotonic() + SPEAKER_STATS_PERIOD_S
        while True:
            now = time.monotonic()
            if now >= stats_due:
                stats_due = now + SPEAKER_STATS_PERIOD_S
                stream = self._speaker_stream
                if stream is not None and self.log.isEnabledFor(logging.DEBUG):
                    self.log.debug("speaker stats %s", json.dumps(stream.stats, sort_keys=True))
            if self._watchdog is not None:
                if self._making_progress():
                    self._watchdog.progress(now)
                if self._ready_sent and self._watchdog.due(now):  # systemd watches from READY=1 on
                    self.notifier.watchdog()
            await asyncio.sleep(min(HEALTH_PERIOD_S, self._watchdog.interval / 2) if self._watchdog
                                else HEALTH_PERIOD_S)
