"""Talking to the offline voice agent (`lkdevice agent`, a real LiveKit Agents worker) through a device.

Speech made by espeak-ng goes into a simulated ESP32's microphone (through the
gateway) or the robot app's; what the agent heard and said is read from
`lk.transcription` by a hidden observer; what the device's speaker played is
recognized again with PocketSphinx.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from lkdevice.host_tools.agent.brain import normalize
from lkdevice.host_tools.agent.espeak_tts import speak
from lkdevice.host_tools.agent.sphinx_stt import transcribe
from lkdevice.host_tools.livekit_server import DEV_API_KEY, DEV_API_SECRET
from lkdevice.host_tools.simulator import SimulatedDevice, write_wav

from .conftest import Peer, token

AGENT = "lkdevice-agent-test"
RATE = 16000
LEAD_S = 2.0  # silence before the question: the device joins and the agent links to it
# firmware/lkd/ui.py's LED colours for the agent's states
LISTENING, SPEAKING = (0, 32, 0), (24, 0, 24)


class AgentProcess:
    """`lkdevice agent` as a user starts it, its output read as it comes."""

    def __init__(self, url: str, *extra: str):
        env = {**os.environ, "LIVEKIT_API_KEY": DEV_API_KEY, "LIVEKIT_API_SECRET": DEV_API_SECRET}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lkdevice.cli", *(["-v"] if os.environ.get("LKD_TEST_AGENT_LOG") else []), "agent", "--url", url, "--agent-name", AGENT, *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.out, True), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.err, False), daemon=True).start()

    def _drain(self, stream, into: list[str], ready: bool) -> None:
        for line in stream:
            into.append(line)
            if os.environ.get("LKD_TEST_AGENT_LOG"):
                with open(os.environ["LKD_TEST_AGENT_LOG"], "a") as f:
                    f.write(line)
            if ready and " registered with " in line:
                self._ready.set()

    def wait_ready(self, timeout: float = 90.0) -> None:
        if not self._ready.wait(timeout):
            self.proc.kill()
            raise AssertionError(f"the agent did not register within {timeout}s:\n{''.join(self.err)[-3000:]}")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the agent did not stop within 15 s of SIGTERM")


def no_route_out() -> bool:
    out = subprocess.run(["ip", "route", "get", "1.1.1.1"], capture_output=True, text=True)
    return out.returncode != 0 and "unreachable" in out.stderr.lower()


@pytest.fixture(scope="module")
def voice_agent(server):
    # every test here runs the agent where nothing beyond this machine can be reached
    assert no_route_out(), "the voice tests run in a namespace with no route out (host_tools/isolated.sh)"
    agent = AgentProcess(server.url, "--greeting", "")
    agent.wait_ready()
    yield agent
    code = agent.stop()
    assert code in (0, 130), "".join(agent.err)[-3000:]
    assert DEV_API_SECRET not in "".join(agent.out + agent.err).replace("secret=", "")


class Observer(Peer):
    """A hidden participant: sees the transcripts and the agent's state, is nobody's user."""

    def __init__(self):
        super().__init__("observer")
        self.transcripts: list[tuple[float, str, bool, str]] = []  # (time, identity, final, text)
        self.states: list[tuple[float, str]] = []
        self.room.register_text_stream_handler("lk.transcription", self._on_text)
        self.room.on("participant_attributes_changed", self._on_attributes)

    def _on_text(self, reader, identity: str) -> None:
        async def read():
            text = await reader.read_all()
            final = reader.info.attributes.get("lk.transcription_final") == "true"
            self.transcripts.append((time.monotonic(), identity, final, text))
        asyncio.ensure_future(read())

    def _on_attributes(self, changed: dict, participant) -> None:
        if "lk.agent.state" in changed:
            self.states.append((time.monotonic(), changed["lk.agent.state"]))

    def agent_identity(self) -> str | None:
        return next((p.identity for p in self.room.remote_participants.values()
                     if p.attributes.get("lk.agent.state") is not None), None)

    async def wait(self, what, timeout: float, describe: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {describe} within {timeout}s; transcripts {self.transcripts}, states {self.states}")

    async def agent_ready(self, timeout: float = 30.0) -> str:
        return await self.wait(lambda: self.agent_identity() if self.states or self.agent_identity() else None,
                               timeout, "agent in the room")

    def final(self, identity: str, after: float = 0.0) -> list[str]:
        return [t for ts, who, final, t in self.transcripts if who == identity and final and ts >= after]


@pytest.fixture
async def observer(server, room_name):
    obs = Observer()
    await obs.connect(server.url, room_name, hidden=True, agent_name=AGENT)
    yield obs
    await obs.close()


def question(text: str, tail_s: float = 6.0) -> tuple[np.ndarray, float, float]:
    """The device's microphone: silence, the spoken `text`, silence. Also (start, end) of the words in s."""
    words = speak(text, sample_rate=RATE)
    pcm = np.concatenate([np.zeros(int(LEAD_S * RATE), np.int16), words, np.zeros(int(tail_s * RATE), np.int16)])
    return pcm, LEAD_S, LEAD_S + len(words) / RATE


def voiced_seconds(pcm: np.ndarray, rate: int = RATE, threshold: float = 200.0) -> float:
    n = rate // 50
    frames = pcm[: len(pcm) // n * n].reshape(-1, n).astype(np.float64)
    return float((np.sqrt((frames ** 2).mean(axis=1)) > threshold).sum()) / 50


def first_voiced(pcm: np.ndarray, after_s: float, rate: int = RATE, threshold: float = 500.0) -> float | None:
    n = rate // 50
    start = int(after_s * rate) // n * n
    for i in range(start, len(pcm) - n, n):
        if np.sqrt((pcm[i:i + n].astype(np.float64) ** 2).mean()) > threshold:
            return i / rate
    return None


@pytest.fixture
async def sim_device():
    made: list[SimulatedDevice] = []

    def make(url: str, room: str, identity: str, pcm: np.ndarray, **kw) -> SimulatedDevice:
        dev = SimulatedDevice(url, token(identity, room, ttl=600, agent_name=AGENT), play=pcm, **kw).start()
        made.append(dev)
        return dev

    yield make
    for dev in made:
        await asyncio.to_thread(dev.stop)
        errors = dev.errors()
        dev.cleanup()
        assert not errors, errors


@pytest.mark.parametrize("codec", ["pcm16", "ulaw", "adpcm"])
async def test_speech_both_ways_through_the_esp32_path(voice_agent, server, gateway, observer, room_name,
                                                       sim_device, codec, tmp_path):
    """The user asks the time; the agent's transcript holds the words; the speaker says the agent's reply."""
    agent = await observer.agent_ready()
    mic, _, spoken_end = question("what time is it")
    dev = sim_device(gateway.url, room_name, "esp32", mic, codec=codec)
    heard = await observer.wait(lambda: observer.final("esp32"), 30, "user transcript")
    assert normalize(heard[0]) == "what time is it", heard
    replies = await observer.wait(lambda: observer.final(agent), 20, "agent reply")
    reply = normalize(replies[0])
    assert re.fullmatch(r"the time is [a-z' ]+", reply), reply
    # the agent back to listening: the reply has been played out
    await observer.wait(lambda: observer.states and observer.states[-1][1] == "listening"
                        and any(s == "speaking" for _, s in observer.states), 20, "speaking, then listening")
    await asyncio.sleep(1.0)
    speaker = dev.speaker_pcm()
    write_wav(str(tmp_path / "speaker.wav"), speaker, RATE)
    answer = speaker[int(spoken_end * RATE):]
    start = first_voiced(answer, 0.0)
    assert start is not None, f"the speaker played nothing after the question ({tmp_path})"
    answer = answer[max(0, int((start - 0.3) * RATE)):]
    # the whole reply, as long as espeak-ng makes it on its own
    voiced, expected = voiced_seconds(answer), voiced_seconds(speak(replies[0], sample_rate=RATE))
    assert voiced >= 1.0 and voiced >= 0.8 * expected, f"speaker: {voiced:.2f} s voiced of {expected:.2f} ({tmp_path})"
    distractors = ["what time is it", "hello ask me what i can do", "moving forward", "the robot did not answer",
                   "i heard what time is it"]
    assert transcribe(answer, RATE, phrases=[reply, *distractors]) == reply
    # the LED went through the agent's states
    # the LED followed the agent: speaking while it answered, listening once it was done
    led = dev.led_colors()
    assert SPEAKING in [rgb for _, rgb in led] and led[-1][1] == LISTENING, led


async def test_voice_drives_the_robot(voice_agent, server, observer, room_name, tmp_path):
    """The robot app (synthetic camera, WAV audio) hears "move forward": the sim drive moves, the agent says so."""
    agent = await observer.agent_ready()
    mic, _, _ = question("move forward", tail_s=8.0)
    wav = tmp_path / "question.wav"
    write_wav(str(wav), mic, RATE)
    env = {**os.environ}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkdevice.cli", "-v", "robot", "--url", server.url,
        "--token", token("robot", room_name, agent_name=AGENT), "--camera", "test", "--plugin", "sim", "--audio", "wav",
        "--play", str(wav), "--record", str(tmp_path / "speaker.wav"), "--duration", "14", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 40)
    finally:
        if proc.returncode is None:
            proc.kill()
    text = out.decode() + err.decode()
    console = "\n".join(line for line in text.splitlines() if line.startswith("[") or "drive:" in line)
    assert proc.returncode == 0, text[-3000:]
    assert f"drive: move forward at speed 0.50 for 500 ms (from {agent})" in text, (console, observer.transcripts)
    assert "moving forward" in [normalize(t) for t in observer.final(agent)], observer.transcripts
    assert f"{agent} said: Moving forward." in text, console


async def test_barge_in_stops_the_agent_and_the_led_shows_listening(voice_agent, server, gateway, observer,
                                                                     room_name, sim_device):
    """The user speaks over a long answer: the agent stops speaking and listens; the LED shows it."""
    agent = await observer.agent_ready()
    first = speak("what can you do", sample_rate=RATE)
    second = speak("stop", sample_rate=RATE)
    # the capabilities answer lasts several seconds; the user cuts in 1.5 s after it begins
    gap = np.zeros(int(3.5 * RATE), np.int16)
    mic = np.concatenate([np.zeros(int(LEAD_S * RATE), np.int16), first, gap, second,
                          np.zeros(6 * RATE, np.int16)])
    dev = sim_device(gateway.url, room_name, "esp32", mic)
    await observer.wait(lambda: any(s == "speaking" for _, s in observer.states), 30, "agent speaking")
    spoke_at = next(ts for ts, s in observer.states if s == "speaking")
    await observer.wait(lambda: len(observer.final("esp32")) >= 2, 30, "second user turn")
    states_after = [(round(ts - spoke_at, 2), s) for ts, s in observer.states if ts > spoke_at]
    stopped_at = next((ts for ts, s in observer.states if ts > spoke_at and s != "speaking"), None)
    assert stopped_at is not None, observer.states
    # the full answer takes far longer than the time until the user cut in
    full = len(speak(
        "I can tell you the time, and drive the robot. Say move forward, turn left, stop, set the light to red, "
        "or ask what is your battery.", sample_rate=RATE)) / RATE
    assert stopped_at - spoke_at < full - 1.5, (states_after, full)
    replies = observer.final(agent)
    assert replies and "what is your battery" not in normalize(replies[0]), replies  # cut short
    await asyncio.sleep(1.0)
    led = dev.led_colors()
    spoke_ms = next(ms for ms, rgb in led if rgb == SPEAKING)
    listened_ms = next((ms for ms, rgb in led if rgb == LISTENING and ms > spoke_ms), None)
    assert listened_ms is not None and (listened_ms - spoke_ms) / 1000 < full - 1.0, (led[-20:], full, states_after)


async def test_offline_the_agent_answers_with_no_route_out(voice_agent, server, gateway, observer, room_name,
                                                            sim_device):
    """No route out of the namespace, and still: VAD, STT, the brain and TTS answer a question."""
    assert no_route_out()
    agent = await observer.agent_ready()
    mic, _, _ = question("what can you do")
    sim_device(gateway.url, room_name, "esp32", mic)
    replies = await observer.wait(lambda: observer.final(agent), 40, "agent reply")
    assert normalize(replies[0]).startswith("i can tell you the time"), replies
    log = "".join(voice_agent.err)
    assert not re.search(r"(?i)(getaddrinfo|name resolution|network is unreachable|huggingface)", log), log[-2000:]


async def test_echo_mode_replays_the_user_and_no_secret_reaches_its_log_even_at_debug(tmp_path):
    """`lkdevice -v agent --echo` on a server with a real-looking secret: it says back what it heard,
    and neither the secret nor any token it makes appears in what it prints."""
    import secrets

    from livekit import rtc

    from lkdevice.host_tools.livekit_server import LocalServer
    from lkdevice.host_tools.tokens import mint_token

    from .conftest import server_config

    key, secret = "APIk" + secrets.token_hex(6), secrets.token_urlsafe(32)
    cfg = server_config()
    cfg.api_key, cfg.api_secret = key, secret
    srv = LocalServer(cfg)
    await asyncio.to_thread(srv.start)
    env = {**os.environ, "LIVEKIT_API_KEY": key, "LIVEKIT_API_SECRET": secret}
    proc = subprocess.Popen([sys.executable, "-m", "lkdevice.cli", "-v", "agent", "--url", srv.url, "--echo",
                             "--agent-name", "echo-test"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    room = rtc.Room()
    heard: list[np.ndarray] = []
    try:
        deadline = time.monotonic() + 90
        while not any(" registered with " in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)[-3000:]
            await asyncio.sleep(0.1)

        def on_track(track, pub, participant):
            async def record():
                async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
                    heard.append(np.frombuffer(ev.frame.data, np.int16).copy())
            asyncio.ensure_future(record())

        room.on("track_subscribed", on_track)
        await room.connect(srv.url, mint_token(key, secret, identity="device", room="echo", agent_name="echo-test"))
        source = rtc.AudioSource(RATE, 1)
        await room.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track("mic", source),
                                                   rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        words = speak("move forward", sample_rate=RATE)
        pcm = np.concatenate([np.zeros(3 * RATE, np.int16), words, np.zeros(5 * RATE, np.int16)])
        pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % 160, np.int16)])
        for i in range(0, len(pcm), 160):
            await source.capture_frame(rtc.AudioFrame(pcm[i:i + 160].tobytes(), RATE, 1, 160))
        replayed = np.concatenate(heard) if heard else np.zeros(0, np.int16)
        expected = voiced_seconds(words)
        assert voiced_seconds(replayed) >= 0.8 * expected, (voiced_seconds(replayed), expected)
    finally:
        await room.disconnect()
        proc.terminate()
        proc.wait(15)
        reader.join(5)
        await asyncio.to_thread(srv.stop)
    out = "".join(lines)
    assert "received job request" in out  # -v: LiveKit Agents' own debug logging was on
    assert secret not in out
    assert not re.search(r"eyJ[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}", out), "a token in the agent's output"


@pytest.mark.parametrize("words", ["what time is it", "set the light to green"])
async def test_the_robot_path_hears_the_words(voice_agent, server, observer, room_name, tmp_path, words):
    """Through the robot app's microphone (our WebRTC client, Opus) the agent hears the words exactly."""
    await observer.agent_ready()
    mic, _, _ = question(words, tail_s=5.0)
    wav = tmp_path / "question.wav"
    write_wav(str(wav), mic, RATE)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkdevice.cli", "robot", "--url", server.url,
        "--token", token("robot", room_name, agent_name=AGENT), "--plugin", "sim", "--audio", "wav",
        "--play", str(wav), "--record", str(tmp_path / "speaker.wav"), "--duration", "9",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        heard = await observer.wait(lambda: observer.final("robot"), 30, "user transcript")
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
    assert normalize(heard[0]) == words, observer.transcripts
