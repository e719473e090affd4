"""Response time of the offline voice agent as a user feels it, per device path, same run.

One livekit-server, one `lkdevice agent` (a real LiveKit Agents worker, run
with --metrics), one gateway process. Each path gets a fresh room and speaks
`--turns` questions made by espeak-ng (what time is it, what can you do,
hello, set the light to red, ...), each followed by silence long enough for
the brain's expected reply to be played out:

- esp32: the simulated ESP32 (the firmware on the MicroPython unix port)
  through the gateway, pcm16. Its microphone file and its speaker file both
  start when the firmware opens its I2S (the speaker just before the
  microphone, in one call at boot): one origin, within a few ms.
- pi: the robot app (`lkdevice robot --audio wav --camera test --plugin sim`).
  Its speaker WAV (48 kHz) starts when its audio starts, before it joins; its
  microphone WAV starts being sent once the microphone is published, after
  the join. The bench measures both origins on the wall clock and removes
  the difference (`origin_offset_ms`): the speaker's origin is the time of
  the app's "recorded" log line minus the recording's length (the speaker
  loop writes a 20 ms frame per wall-clock tick), the microphone's is when
  a hidden observer sees the track published, plus half the app's 20 ms
  wait for it. What is left: about +-25 ms.
- official: an official `livekit` SDK participant as the anchor: it hands
  the same speech to `rtc.AudioSource` at real-time pace (10 ms frames on the
  monotonic clock) and timestamps every 20 ms frame its `rtc.AudioStream`
  gives out of the agent's track, on the same clock.

Per turn, `felt_ms`: the end of the question in the device's own microphone
timeline (the last 10 ms of the words within 40 dB of their loudest) to the
first 20 ms frame of the device's speaker over RMS 500 after it. From the
agent's metrics line for that turn (LiveKit Agents' own figures):
end_of_turn_delay (the VAD's end of speech to the end of the turn),
transcription_delay, llm_node_ttfs, tts_node_ttfb and e2e_latency (the VAD's
end of speech to the first audio frame captured by the agent's AudioSource);
`transport_ms` = felt - e2e_latency: the device's uplink and downlink.

    host_tools/isolated.sh python bench/agent_response.py            # ~4.5 min, 10 turns per path
    host_tools/isolated.sh python bench/agent_response.py --turns 3  # ~1.5 min
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import json
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import _common as common
from _gateway import GatewayProcess
from lkdevice.host_tools.stack import AgentProcess, log_tail

log = logging.getLogger("bench.agent_response")

AGENT = "lkdevice-agent-bench"
RATE = 16000
FRAME_S = 0.020
VOICED_RMS = 500.0  # a 20 ms frame of the agent's speech, as tests/live/test_agent_voice.py's first_voiced
PATHS = ("esp32", "pi", "official")
QUESTIONS = ("what time is it", "what can you do", "hello", "set the light to red", "what is your battery",
             "turn left", "hello", "what time is it", "stop", "set the light to green")
# silence after each question beyond its expected reply: the response itself, and a margin
RESPONSE_ALLOWANCE_S = 2.5
MARGIN_S = 0.5
# our client's uplink to an official-SDK receiver, median (bench/audio_rtt.py, README's figures)
UPLINK_S = 0.045
LEAD_S = {"esp32": 3.0, "pi": 2.0, "official": 1.0}  # before the first question: boot, join, the agent links
PARTS = ("end_of_turn_delay", "transcription_delay", "llm_node_ttfs", "tts_node_ttfb", "e2e_latency")
ANCHORS = {"human_turn_gap_ms": [100, 300],
           "note": "gaps between turns in human conversation are 100-300 ms; xiaozhi and ESPHome voice "
                   "assistant users report responses that take seconds"}
_TOKEN_RX = re.compile(r"(Bearer\s+\S+|eyJ[\w-]+\.[\w-]+\.[\w-]+)")


def redact(line: str) -> str:
    return _TOKEN_RX.sub("<token>", line)


# --- the questions ---------------------------------------------------------------------------

@dataclass
class Turn:
    question: str
    start_s: float  # of the words, in the device's microphone timeline
    end_s: float
    next_s: float  # the next question's start (or the end of the microphone)
    late_s: float = 0.0  # the words left the device this much later than the file says (see run_pi)


def speech(text: str, rate: int) -> np.ndarray:
    """espeak-ng's `text`, cut to the words: 10 ms frames within 40 dB of the loudest one."""
    from lkdevice.host_tools.agent.espeak_tts import speak

    pcm = speak(text, sample_rate=rate)
    n = rate // 100
    frames = pcm[: len(pcm) // n * n].reshape(-1, n).astype(np.float64)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    loud = np.nonzero(rms > rms.max() / 100.0)[0]
    return pcm[loud[0] * n:(loud[-1] + 1) * n]


def expected_reply(question: str, path: str) -> str:
    """What the brain should say to `question` on this path, for the silence after it."""
    from lkdevice.host_tools.agent.brain import Brain

    brain = Brain()
    reply = brain.answer(question)
    if reply.call is None:
        return reply.say
    if path == "pi":  # the sim drive answers every call; a battery level of about this length
        return brain.after_call(reply.call, json.dumps({"percent": 87, "color": "red"}), None)
    return brain.after_call(reply.call, None, (1400, "unsupported method"))


def build_microphone(path: str, questions: list[str], rate: int, tail_s: float = 0.0) -> tuple[np.ndarray, list[Turn]]:
    """The device's microphone: lead-in silence, then each question and the silence for its answer."""
    from lkdevice.host_tools.agent.espeak_tts import speak

    parts = [np.zeros(int(LEAD_S[path] * rate), np.int16)]
    pos = len(parts[0])
    starts = []
    for q in questions:
        words = speech(q, rate)
        reply_s = len(speak(expected_reply(q, path), sample_rate=RATE)) / RATE
        gap = np.zeros(int((RESPONSE_ALLOWANCE_S + reply_s + MARGIN_S) * rate), np.int16)
        starts.append((q, pos / rate, (pos + len(words)) / rate))
        parts += [words, gap]
        pos += len(words) + len(gap)
    parts.append(np.zeros(int(tail_s * rate), np.int16))
    turns = [Turn(q, s, e, starts[i + 1][1] if i + 1 < len(starts) else pos / rate)
             for i, (q, s, e) in enumerate(starts)]
    return np.concatenate(parts), turns


def first_voiced(frames_rms: np.ndarray, times: np.ndarray, after: float, before: float) -> float | None:
    """The time of the first frame over VOICED_RMS starting in [after, before)."""
    idx = np.nonzero((times >= after) & (times < before) & (frames_rms > VOICED_RMS))[0]
    return float(times[idx[0]]) if idx.size else None


def frames_of(pcm: np.ndarray, rate: int, start_s: float) -> tuple[np.ndarray, np.ndarray]:
    """RMS and start time of 20 ms frames of `pcm` (sample 0 at 0 s), the grid anchored at `start_s`."""
    n = int(rate * FRAME_S)
    first = int(round(start_s * rate))
    seg = pcm[first:].astype(np.float64)
    seg = seg[: len(seg) // n * n].reshape(-1, n)
    rms = np.sqrt((seg ** 2).mean(axis=1)) if len(seg) else np.zeros(0)
    return rms, (first + np.arange(len(rms)) * n) / rate


# --- the processes ---------------------------------------------------------------------------

class Stoppable:
    """Anything the watchdog must end: a callable run once."""

    def __init__(self, stop) -> None:
        self._stop = stop

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._stop()


class Observer:
    """A hidden official-SDK participant: creates the room (dispatching the agent), sees its state
    and who publishes what."""

    def __init__(self) -> None:
        from livekit import rtc

        self.room = rtc.Room()
        self.states: list[tuple[float, str]] = []
        self.published: dict[str, float] = {}  # identity -> wall time its microphone was published
        # (wall time of arrival, rms) of each 20 ms frame of `listen_to`'s microphone, the newest ~10 min
        self.mic_frames: collections.deque[tuple[float, float]] = collections.deque(maxlen=30000)
        self.listen_to: str | None = None  # whose microphone to subscribe to (nothing else: no video decode)
        self._tasks: list[asyncio.Task] = []
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.on("track_published", self._on_published)
        self.room.on("track_subscribed", self._on_subscribed)

    def _on_attributes(self, changed: dict, participant) -> None:
        if "lk.agent.state" in changed:
            self.states.append((time.monotonic(), changed["lk.agent.state"]))

    def _on_published(self, publication, participant) -> None:
        from livekit import rtc

        if publication.kind == rtc.TrackKind.KIND_AUDIO:
            self.published.setdefault(participant.identity, time.time())
            if participant.identity == self.listen_to:
                publication.set_subscribed(True)

    def _on_subscribed(self, track, publication, participant) -> None:
        from livekit import rtc

        async def record() -> None:
            stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=20)
            try:
                async for ev in stream:
                    pcm = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float64)
                    self.mic_frames.append((time.time(), float(np.sqrt((pcm ** 2).mean())) if len(pcm) else 0.0))
            finally:
                await stream.aclose()

        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._tasks.append(asyncio.ensure_future(record()))

    async def connect(self, url: str, room: str) -> "Observer":
        from livekit import rtc

        await self.room.connect(url, common.mint_token(
            common.DEV_API_KEY, common.DEV_API_SECRET, identity="bench-observer", room=room, hidden=True,
            agent_name=AGENT), rtc.RoomOptions(auto_subscribe=False))
        return self

    def agent_identity(self) -> str | None:
        return next((p.identity for p in self.room.remote_participants.values()
                     if p.attributes.get("lk.agent.state") is not None), None)

    async def wait_agent(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (who := self.agent_identity()) is not None:
                return who
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the agent did not join the room within {timeout:.0f}s")

    async def wait_quiet(self, since: float, timeout: float) -> bool:
        """Until the agent is listening again (after speaking, if it spoke after `since`); bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.states[-1][1] if self.states else "listening"
            spoke = any(ts >= since and s == "speaking" for ts, s in self.states)
            if last == "listening" and (spoke or not any(ts >= since for ts, _ in self.states)):
                return True
            await asyncio.sleep(0.1)
        return False

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 5)


@dataclass
class Recording:
    """What a path produced: per-turn question ends, and the speaker as 20 ms frames on the same timeline."""

    turns: list[Turn]
    rms: np.ndarray
    times: np.ndarray
    mic_origin_wall: float  # the microphone timeline's 0 on the wall clock (for matching the metrics)
    origin_exact: bool  # mic_origin_wall good to tens of ms: the agent's wall-clock stamps split the transport
    notes: dict = field(default_factory=dict)


def speaker_frames(pcm: np.ndarray, rate: int, turns: list[Turn], shift_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames of the speaker with each turn's grid anchored at the question's end (microphone time)."""
    rms_all, times_all = [], []
    for t in turns:
        # the speaker's own time of the question's end is shift_s later than the microphone's
        rms, times = frames_of(pcm, rate, t.end_s + shift_s)
        keep = times - shift_s < t.next_s
        rms_all.append(rms[keep])
        times_all.append(times[keep] - shift_s)
    if not rms_all:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(rms_all), np.concatenate(times_all)


async def run_esp32(url: str, gateway: GatewayProcess, room: str, obs: Observer, questions: list[str],
                    refs: list) -> Recording:
    from lkdevice.host_tools.simulator import SimulatedDevice

    mic, turns = build_microphone("esp32", questions, RATE, tail_s=1.0)
    tok = common.mint_token(common.DEV_API_KEY, common.DEV_API_SECRET, identity="esp32", room=room, ttl=900,
                            agent_name=AGENT)
    dev = SimulatedDevice(gateway.url, tok, play=mic, codec="pcm16")
    refs.append(Stoppable(dev.stop))
    await asyncio.to_thread(dev.start)  # builds the flash (mpy-cross), then boots the firmware
    # the firmware opens its I2S soon after boot: for matching the agent's turns only (a second off is fine)
    started_wall = time.time()
    started = time.monotonic()
    try:
        await common.sleep_until(started + len(mic) / RATE)
        await obs.wait_quiet(started + turns[-1].start_s, 20.0)
        await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(dev.stop)
    errors = dev.errors()
    speaker = dev.speaker_pcm()
    dev.cleanup()
    if errors:
        raise RuntimeError(f"the simulated ESP32 failed: {errors[:3]}")
    # TX and RX open in one call at boot: one origin (the speaker's a few ms earlier, not removed)
    rms, times = speaker_frames(speaker, RATE, turns, 0.0)
    return Recording(turns, rms, times, started_wall, False, {"origin_offset_ms": 0.0,
                                                       "origin_note": "speaker and microphone I2S opened in one "
                                                                      "call at boot; the speaker's origin is a "
                                                                      "few ms earlier (not removed)"})


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO lkdevice\.robot: recorded ")


async def run_pi(url: str, room: str, obs: Observer, questions: list[str], refs: list, workdir: Path) -> Recording:
    from lkdevice.host_tools.simulator import write_wav
    from lkdevice.rtc.wavfile import read_wav

    mic, turns = build_microphone("pi", questions, RATE)
    obs.listen_to = "robot"
    duration = len(mic) / RATE + 1.5  # the app's join comes out of its duration
    # the app loops its WAV: silence past the end, so the questions are never heard twice
    write_wav(workdir / "pi-mic.wav", np.concatenate([mic, np.zeros(30 * RATE, np.int16)]), RATE)
    record = workdir / "pi-speaker.wav"
    tok = common.mint_token(common.DEV_API_KEY, common.DEV_API_SECRET, identity="robot", room=room, ttl=900,
                            agent_name=AGENT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkdevice.cli", "robot", "--url", url, "--token", tok, "--camera", "test",
        "--plugin", "sim", "--audio", "wav", "--play", str(workdir / "pi-mic.wav"), "--record", str(record),
        "--duration", f"{duration:.1f}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    refs.append(Stoppable(proc.kill))
    lines: collections.deque[str] = collections.deque(maxlen=300)
    recorded_at: float | None = None

    async def pump() -> None:
        nonlocal recorded_at
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(redact(line))
            m = _LOG_TIME.match(line)
            if m:  # asctime is local time, as .timestamp() reads it
                recorded_at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()

    reader = asyncio.ensure_future(pump())
    try:
        await asyncio.wait_for(proc.wait(), duration + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(reader, 5)
    if proc.returncode != 0 or recorded_at is None:
        raise RuntimeError(f"the robot app exited {proc.returncode}: " + " | ".join(list(lines)[-8:]))
    published = obs.published.get("robot")
    if published is None:
        raise RuntimeError("the observer never saw the robot's microphone published")
    mic_origin = published + 0.010  # the app's mic loop looks for the published track every 20 ms
    late_notes = words_late(obs, turns, mic, mic_origin)
    speaker, rate = read_wav(str(record))
    speaker = np.asarray(speaker, dtype=np.int16).reshape(-1)
    spk_origin = recorded_at - len(speaker) / rate
    shift = mic_origin - spk_origin  # microphone time t is speaker time t + shift
    rms, times = speaker_frames(speaker, rate, turns, shift)
    console = [l for l in lines if l.startswith("[")]
    first = obs.mic_frames[0][0] if obs.mic_frames else None
    return Recording(turns, rms, times, mic_origin, True, {
        "origin_offset_ms": round(shift * 1000, 1), **late_notes,
        # the microphone's first frame at the observer, after its publication: negotiation + uplink
        "mic_first_frame_at_observer_ms": None if first is None else round((first - published) * 1000, 1),
        "origin_note": "removed: speaker origin = 'recorded' log line minus the recording's length; microphone "
                       "origin = the observer saw the track published + 10 ms; left: about +-25 ms",
        "heard_on_console": [l for l in console if " said: " in l][:4 * len(turns)]})


def words_late(obs: Observer, turns: list[Turn], mic: np.ndarray, mic_origin: float) -> dict:
    """Put each question's end where its words really left the robot, on the wall clock.

    The app's WAV microphone goes at the pace its sender takes it (the file reader waits for room in
    the track's buffer), so under load it falls behind the wall clock and stays behind: the file's
    position is not the time. The hidden observer hears the robot's microphone: the arrival of the
    last 20 ms frame of a question over the threshold, minus our client's uplink to an official
    receiver, is when that frame ended at the robot; the file says how far the words' end is from it."""
    if not obs.mic_frames:
        return {"mic_late_note": "the observer heard nothing of the robot's microphone: file positions used"}
    arr = np.asarray(obs.mic_frames, dtype=np.float64)
    for t in turns:
        # the window starts where the file puts the words: the sender only ever falls behind
        lo, hi = mic_origin + t.start_s - 0.3, mic_origin + t.next_s
        voiced = arr[(arr[:, 0] >= lo) & (arr[:, 0] < hi) & (arr[:, 1] > VOICED_RMS), 0]
        rms, times = frames_of(mic, RATE, t.start_s)
        loud = times[(times < t.end_s) & (rms > VOICED_RMS)]
        if not voiced.size or not loud.size:
            continue
        end_at_robot = float(voiced[-1]) - UPLINK_S + (t.end_s - (float(loud[-1]) + FRAME_S))
        t.late_s = end_at_robot - (mic_origin + t.end_s)
        t.start_s += t.late_s
        t.end_s += t.late_s
    late = [t.late_s for t in turns]
    return {"mic_late_ms_first_last": [round(late[0] * 1000, 1), round(late[-1] * 1000, 1)],
            "mic_late_note": "question ends from the observer's hearing of the robot's microphone, minus "
                             f"{UPLINK_S * 1000:.0f} ms uplink; mic_late_ms per turn: how far that is from the "
                             "WAV file's position"}


async def run_official(url: str, room: str, obs: Observer, questions: list[str], refs: list) -> Recording:
    from livekit import rtc

    rate = 48000
    mic, turns = build_microphone("official", questions, rate, tail_s=1.0)
    me = rtc.Room()
    received: list[tuple[float, float]] = []  # (monotonic arrival, rms) per 20 ms frame
    max_frames = int((len(mic) / rate + 60) / FRAME_S)
    tasks: list[asyncio.Task] = []

    async def record(track) -> None:
        stream = rtc.AudioStream(track, sample_rate=rate, num_channels=1, frame_size_ms=20)
        try:
            async for ev in stream:
                pcm = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float64)
                if len(received) < max_frames:
                    received.append((time.monotonic(), float(np.sqrt((pcm ** 2).mean())) if len(pcm) else 0.0))
        finally:
            await stream.aclose()

    def on_track(track, publication, participant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and participant.attributes.get("lk.agent.state") is not None:
            tasks.append(asyncio.ensure_future(record(track)))

    me.on("track_subscribed", on_track)
    await me.connect(url, common.mint_token(common.DEV_API_KEY, common.DEV_API_SECRET, identity="official",
                                            room=room, agent_name=AGENT))
    try:
        source = rtc.AudioSource(rate, 1, queue_size_ms=50)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        await me.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        n = rate // 100
        handed: list[float] = []  # monotonic hand-over time of each 10 ms frame
        t0 = time.monotonic()
        t0_wall = time.time()
        for k in range(len(mic) // n):
            await common.sleep_until(t0 + k * 0.010)
            frame = rtc.AudioFrame.create(rate, 1, n)
            np.copyto(np.frombuffer(frame.data, dtype=np.int16), mic[k * n:(k + 1) * n])
            handed.append(time.monotonic())
            await source.capture_frame(frame)
        await obs.wait_quiet(t0 + turns[-1].start_s, 20.0)
        await asyncio.sleep(0.5)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(me.disconnect(), 5)
    # microphone time: when the frame holding the question's last sample was handed over (late if the loop was)
    for t in turns:
        k = min(int(t.end_s * rate) // n, len(handed) - 1)
        t.end_s = handed[k] - t0 + (t.end_s * rate - k * n) / rate
    arr = np.asarray(received, dtype=np.float64).reshape(-1, 2)
    late = max(h - (t0 + k * 0.010) for k, h in enumerate(handed)) if handed else 0.0
    return Recording(turns, arr[:, 1], arr[:, 0] - t0, t0_wall, True, {
        "origin_offset_ms": 0.0, "origin_note": "one monotonic clock: hand-over to AudioSource, arrival from "
                                                 "AudioStream", "mic_latest_handover_ms": round(late * 1000, 1)})


# --- the agent's metrics ---------------------------------------------------------------------

def read_metrics(path: Path, room: str) -> list[tuple[dict, dict | None]]:
    """(user line, the reply line after it or None) for `room`, in order."""
    pairs: list[list] = []
    if not path.exists():
        return []
    for raw in path.read_text().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("room") != room:
            continue
        if line.get("role") == "user":
            pairs.append([line, None])
        elif line.get("role") == "assistant" and pairs and pairs[-1][1] is None:
            pairs[-1][1] = line
    return [(u, a) for u, a in pairs]


def analyse(rec: Recording, metrics: list[tuple[dict, dict | None]]) -> dict:
    from lkdevice.host_tools.agent.brain import normalize

    rows = []
    for t in rec.turns:
        onset = first_voiced(rec.rms, rec.times, t.end_s, t.next_s)
        # the speaker still voiced during the question: the previous reply ran into it
        busy = bool(np.any((rec.times >= t.start_s) & (rec.times < t.end_s) & (rec.rms > VOICED_RMS)))
        # the agent's user turn for this question: its VAD end of speech falls before the next question
        lo, hi = rec.mic_origin_wall + t.start_s, rec.mic_origin_wall + t.next_s
        mine = [(u, a) for u, a in metrics if lo <= (u.get("metrics") or {}).get("stopped_speaking_at", 0) < hi]
        user, reply = mine[-1] if mine else ({}, None)
        um, am = user.get("metrics") or {}, (reply or {}).get("metrics") or {}
        row = {"question": t.question, "heard": user.get("text"), "said": (reply or {}).get("text"),
               "interrupted": (reply or {}).get("interrupted"), "agent_turns": len(mine),
               "question_end_s": round(t.end_s, 3), "mic_late_ms": round(t.late_s * 1000, 1),
               "felt_ms": None if onset is None else round((onset - t.end_s) * 1000, 1),
               "overlap": busy}
        if t.late_s and row["felt_ms"] is not None:  # what the WAV file's position alone would have said
            row["felt_by_file_ms"] = round(row["felt_ms"] + t.late_s * 1000, 1)
        for part in PARTS:
            v = um.get(part, am.get(part))
            row[f"{part}_ms"] = None if v is None else round(float(v) * 1000, 1)
        e2e = row["e2e_latency_ms"]
        row["transport_ms"] = None if row["felt_ms"] is None or e2e is None else round(row["felt_ms"] - e2e, 1)
        # one wall clock on this machine: the question's end to the VAD's end of speech (uplink, and how late
        # the VAD puts the end), and the rest of the transport (the agent's first frame to the speaker)
        stopped = um.get("stopped_speaking_at")
        row["to_vad_end_ms"] = None
        if rec.origin_exact and stopped is not None:
            row["to_vad_end_ms"] = round((stopped - (rec.mic_origin_wall + t.end_s)) * 1000, 1)
        row["downlink_ms"] = None if row["to_vad_end_ms"] is None or row["transport_ms"] is None else \
            round(row["transport_ms"] - row["to_vad_end_ms"], 1)
        row["understood"] = user.get("text") is not None and normalize(user["text"]) == t.question
        rows.append(row)
    good = [r for r in rows if r["felt_ms"] is not None and not r["overlap"]]

    def summary(key: str) -> dict:
        return common.summary_ms([r[key] / 1000 for r in good if r[key] is not None])

    out = {"felt": summary("felt_ms"), "agent": {p: summary(f"{p}_ms") for p in PARTS},
           "transport": summary("transport_ms"), "to_vad_end": summary("to_vad_end_ms"),
           "downlink": summary("downlink_ms"),
           "missed": sum(r["felt_ms"] is None for r in rows), "overlapped": sum(r["overlap"] for r in rows),
           "understood": sum(r["understood"] for r in rows), **rec.notes, "turns": rows}
    return out


# --- the run ---------------------------------------------------------------------------------

async def measure(args, server, refs: list, workdir: Path) -> dict:
    metrics_path = workdir / "agent-metrics.jsonl"
    agent = AgentProcess(server.url, agent_name=AGENT, echo=False, log_path=workdir / "agent.log",
                         extra_args=("--greeting", "", "--metrics", str(metrics_path)))
    agent.spawn()
    refs.append(Stoppable(agent.terminate))
    gateway = None
    result: dict = {"benchmark": "agent_response", "turns_per_path": args.turns, "paths": {}, "errors": []}
    try:
        await agent.wait_registered(90.0)
        if "esp32" in args.paths:
            gateway = GatewayProcess(server.url)
            await asyncio.to_thread(gateway.start)
            refs.append(gateway)
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.turns)]
        for path in args.paths:
            room = common.fresh_room(f"agent-{path}")
            obs = await Observer().connect(server.url, room)
            t = time.monotonic()
            try:
                await obs.wait_agent(30.0)
                log.info("%s: agent in room %s; %d turns", path, room, len(questions))
                if path == "esp32":
                    rec = await run_esp32(server.url, gateway, room, obs, questions, refs)
                elif path == "pi":
                    rec = await run_pi(server.url, room, obs, questions, refs, workdir)
                else:
                    rec = await run_official(server.url, room, obs, questions, refs)
                await asyncio.sleep(0.3)  # the metrics line of the last reply is written after its playout
                res = analyse(rec, read_metrics(metrics_path, room))
                res["seconds"] = round(time.monotonic() - t, 1)
                result["paths"][path] = res
                log.info("%s: felt median %s ms p90 %s ms (%d missed) in %.0f s", path, res["felt"]["median_ms"],
                         res["felt"]["p90_ms"], res["missed"], res["seconds"])
            except Exception as exc:
                log.exception("%s failed", path)
                result["errors"].append(f"{path}: {exc!r}")
            finally:
                await obs.close()
    finally:
        if gateway is not None:
            await asyncio.to_thread(gateway.stop)
        await agent.stop()
    if result["errors"]:
        result["agent_log_tail"] = [redact(line) for line in log_tail(agent.log_path, 20).splitlines()]
    result["table"] = [
        {"path": p, "felt_median_ms": r["felt"]["median_ms"], "felt_p90_ms": r["felt"]["p90_ms"],
         **{f"{k}_median_ms": r["agent"][k]["median_ms"] for k in PARTS},
         "transport_median_ms": r["transport"]["median_ms"], "to_vad_end_median_ms": r["to_vad_end"]["median_ms"],
         "downlink_median_ms": r["downlink"]["median_ms"], "n": r["felt"]["n"], "missed": r["missed"]}
        for p, r in result["paths"].items()]
    from lkdevice.host_tools.agent import worker
    result["agent_settings"] = {"vad_min_silence_s": getattr(worker, "_VAD_SILENCE_S", None),
                                "endpointing_min_delay_s": worker.AgentConfig.endpointing_s,
                                "stt": "pocketsphinx (grammar)", "tts": "espeak-ng"}
    result["anchors"] = ANCHORS
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=10, help="questions per path (default 10; 3 for a quick run)")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {','.join(PATHS)}")
    p.add_argument("--deadline", type=float, default=None,
                   help="watchdog seconds (default: 90 + 15 per turn and path)")
    p.add_argument("--keep", action="store_true", help="keep the recordings and the metrics file")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    args.paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    bad = [x for x in args.paths if x not in PATHS]
    if bad or not args.paths or args.turns < 1:
        p.error(f"--paths takes {','.join(PATHS)} and --turns at least 1 (got paths {args.paths}, "
                f"turns {args.turns})")
    common.require_isolation()
    common.setup_logging(args.verbose)
    if not args.verbose:  # the SDK's INFO lines through the root logger (byte streams nobody reads)
        for h in logging.getLogger().handlers:
            h.addFilter(lambda r: r.name != "root" or r.levelno >= logging.WARNING)
    if args.deadline is None:
        args.deadline = 90 + 15 * args.turns * len(args.paths)
    workdir = Path(tempfile.mkdtemp(prefix="lkd-agent-bench-"))
    refs: list = []
    ok = False
    with common.watchdog(args.deadline, refs):
        server = common.start_server()
        refs.insert(0, server)
        try:
            result = asyncio.run(asyncio.wait_for(measure(args, server, refs, workdir), args.deadline - 10))
            ok = not result["errors"] and all(r["felt"]["n"] > 0 for r in result["paths"].values())
        except Exception as exc:  # still one JSON object, saying what went wrong
            log.exception("agent_response failed")
            result = {"benchmark": "agent_response", "error": repr(exc), "server_log": str(server.log_path)}
        finally:
            for ref in reversed(refs[1:]):
                with contextlib.suppress(Exception):
                    ref.stop()
            common.stop_server(server, keep_workdir=not ok)
    if args.keep or not ok:
        result["workdir"] = str(workdir)
    else:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    result["environment"] = common.environment()
    common.emit(result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
