"""`lkdevice demo`: the local stack plus a simulated device that asks the agent something.

A hidden observer (our own client, `lkdevice.rtc.Room`) joins first, so it sees
every transcript; its token dispatches the agent as the device's does (whichever
join creates the room dispatches it). Then the device (the simulated ESP32
through the gateway, or the robot app over WebRTC) joins, the agent greets it,
its microphone plays the spoken question (or the computer's microphone), and the
observer prints what the agent heard and said from `lk.transcription` until the
agent has answered: something it said after it heard the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .simulator import write_wav
from .stack import PartDied, Stack, StackConfig, StackError, UsageError, log_tail

RATE = 16000
DEVICES = ("esp32-sim", "robot-sim")
AUDIO = ("auto", "sounddevice", "wav")
# the robot's default asks it to do something (the agent calls its get_battery); the ESP32 has no drive
DEFAULT_QUESTIONS = {"esp32-sim": "what time is it", "robot-sim": "what is your battery"}
# silence around the question: the VAD hears where speech starts and, after it, that it ended
LEAD_S, TAIL_S = 1.0, 3.0
ANSWER_TIMEOUT_S = 60.0
GREETING_WAIT_S = 15.0
# the robot's microphone plays its file from its join, while the agent greets it: the question waits
ROBOT_LEAD_S = 5.0
TRANSCRIPTION_TOPIC = "lk.transcription"
Status = Callable[[str], None]


@dataclass
class DemoConfig:
    device: str = "esp32-sim"
    audio: str = "auto"
    say: str | None = None  # None: DEFAULT_QUESTIONS[device]
    record: str = "demo-answer.wav"
    room: str = "lkdevice-demo"
    echo: bool = False
    answer_timeout: float = ANSWER_TIMEOUT_S

    def check(self) -> None:
        if self.device not in DEVICES:
            raise UsageError(f"--device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.audio not in AUDIO:
            raise UsageError(f"--audio must be one of {', '.join(AUDIO)}, not {self.audio!r}")
        if not self.answer_timeout > 0:
            raise UsageError(f"--timeout wants a number of seconds above 0, got {self.answer_timeout}")
        if self.say is None:
            self.say = DEFAULT_QUESTIONS[self.device]
        if not self.say.strip():
            raise UsageError("--say needs some words to speak")
        parent = Path(self.record).resolve().parent
        if not parent.is_dir():
            raise UsageError(f"--record {self.record}: no directory {parent}")


# --- audio -----------------------------------------------------------------------------------------

def sounddevice_usable() -> bool:
    """True when `sounddevice` imports and this computer has a default microphone and speaker."""
    try:
        import sounddevice as sd

        sd.query_devices(kind="input")
        sd.query_devices(kind="output")
        return True
    except Exception:  # no PortAudio, no sound card, no default device: all mean "use files"
        return False


def pick_audio(choice: str) -> str:
    if choice == "auto":
        return "sounddevice" if sounddevice_usable() else "wav"
    if choice == "sounddevice" and not sounddevice_usable():
        raise UsageError("--audio sounddevice: no microphone and speaker here (pip install sounddevice; "
                         "libportaudio2); use --audio wav")
    return choice


def speak(text: str, path: Path) -> np.ndarray:
    """`text` spoken by espeak-ng (the agent's own voice), 16 kHz mono int16, with silence before and after;
    also written to `path`."""
    from .agent.espeak_tts import ESpeakError, speak as espeak

    try:
        pcm = espeak(text, RATE, leading_silence_ms=int(LEAD_S * 1000), trailing_silence_ms=int(TAIL_S * 1000))
    except ESpeakError as e:  # missing (names the package) or failed
        raise UsageError(f"the spoken question: {e}") from None
    write_wav(path, pcm)
    return pcm


def voiced_seconds(pcm: np.ndarray, rate: int) -> float:
    """Seconds of 20 ms blocks louder than a whisper: how much the agent said, as a user hears it."""
    n = rate // 50
    if len(pcm) < n:
        return 0.0
    blocks = pcm[: len(pcm) // n * n].astype(np.float64).reshape(-1, n)
    rms = np.sqrt((blocks ** 2).mean(axis=1))
    return float((rms > 300).sum()) * 0.02


class MicFeeder:
    """Feeds the simulated ESP32's microphone file while it runs: silence, then what is queued.

    The simulator reads the file at wall-clock pace and treats a short read as the end of the
    recording, so the file is kept ahead of the clock by LEAD_S; queued audio goes at its end.
    """

    AHEAD_S = 0.5
    MAX_QUEUED = 500  # 20 ms blocks: 10 s of speech waiting

    def __init__(self, path: Path, started: float):
        self.path = path
        self.started = started
        self.written = 0  # samples in the file
        self.blocks: queue.Queue[np.ndarray] = queue.Queue(self.MAX_QUEUED)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mic-feeder", daemon=True)

    def start(self, initial_samples: int) -> "MicFeeder":
        self.written = initial_samples
        self._thread.start()
        return self

    def play(self, pcm: np.ndarray) -> None:
        n = RATE // 50
        for i in range(0, len(pcm), n):
            self.blocks.put(pcm[i:i + n])

    def _run(self) -> None:
        silence = np.zeros(RATE // 50, dtype="<i2")
        with open(self.path, "ab") as f:
            while not self._stop.is_set():
                due = int((time.monotonic() - self.started + self.AHEAD_S) * RATE)
                while self.written < due:
                    try:
                        block = self.blocks.get_nowait()
                    except queue.Empty:
                        block = silence
                    f.write(np.asarray(block, dtype="<i2").tobytes())
                    self.written += len(block)
                f.flush()
                self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)


class SoundCard:
    """The computer's microphone into a MicFeeder, and a growing speaker file out to its speaker."""

    def __init__(self, feeder: MicFeeder, speaker_path: Path):
        import sounddevice as sd

        self._sd = sd
        self.feeder = feeder
        self.speaker_path = speaker_path
        self._stop = threading.Event()
        self._in = sd.InputStream(samplerate=RATE, channels=1, dtype="int16", blocksize=RATE // 50,
                                  callback=self._heard)
        self._thread = threading.Thread(target=self._play, name="speaker", daemon=True)

    def _heard(self, data, frames, when, status) -> None:
        with contextlib.suppress(queue.Full):  # a stalled device: drop the computer's audio, not block
            self.feeder.blocks.put_nowait(data[:, 0].copy())

    def _play(self) -> None:
        offset = 0
        with self._sd.RawOutputStream(samplerate=RATE, channels=1, dtype="int16") as out:
            while not self._stop.is_set():
                try:
                    with open(self.speaker_path, "rb") as f:
                        f.seek(offset)
                        data = f.read(RATE // 5 * 2)
                except OSError:
                    data = b""
                data = data[: len(data) // 2 * 2]
                if data:
                    offset += len(data)
                    out.write(data)
                else:
                    self._stop.wait(0.02)

    def start(self) -> "SoundCard":
        self._in.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._in.stop()
            self._in.close()
        self._thread.join(2)


# --- the observer ----------------------------------------------------------------------------------

@dataclass
class Line:
    who: str  # "user" or "agent"
    text: str
    at: float


@dataclass
class Observer:
    """A hidden participant that follows the agent: its state and every final transcript."""

    status: Status
    lines: list[Line] = field(default_factory=list)
    states: list[tuple[float, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    room: object = None

    async def connect(self, url: str, token: str) -> None:
        from lkdevice.rtc.room import Room, RoomOptions

        self.room = Room(RoomOptions(auto_subscribe=False))
        self.room.on("agent_state_changed", self._state)
        self.room.on("text_stream_received", self._text)
        self.room.on("participant_connected", lambda p: self.changed.set())
        await self.room.connect(url, token)

    def agent(self):
        if self.room is None:
            return None
        for p in self.room.remote_participants.values():
            if p.is_agent:
                return p
        return None

    def participant(self, identity: str):
        return self.room.remote_participants.get(identity)

    def _state(self, participant, state: str) -> None:
        self.states.append((time.monotonic(), state or ""))
        self.changed.set()

    def _owner_of(self, track_sid: str):
        for p in self.room.remote_participants.values():
            if track_sid in p.tracks or any(t.sid == track_sid for t in p.tracks.values()):
                return p
        return None

    def _text(self, reader) -> None:
        info = reader.info
        if info.topic != TRANSCRIPTION_TOPIC or info.attributes.get("lk.transcription_final") != "true":
            return
        text = reader.text.strip()
        if not text:
            return
        owner = self._owner_of(info.attributes.get("lk.transcribed_track_id", ""))
        if owner is None:
            owner = self.participant(info.participant_identity)
        who = "agent" if owner is not None and owner.is_agent else "user"
        self.lines.append(Line(who, text, time.monotonic()))
        self.status(f"{'you said' if who == 'user' else 'agent':8} {text}"
                    + ("   (what the agent heard)" if who == "user" else ""))
        self.changed.set()

    def state(self) -> str | None:
        # the participant's attribute: a state set before we joined came with it, not as a change
        agent = self.agent()
        if agent is not None and agent.agent_state is not None:
            return agent.agent_state
        return self.states[-1][1] if self.states else None

    async def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return True

    async def close(self) -> None:
        if self.room is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.room.disconnect(), 5)


# --- the devices -----------------------------------------------------------------------------------

class Esp32Sim:
    identity = "esp32-sim"

    def __init__(self, stack: Stack, audio: str, workdir: Path):
        from .simulator import SimulatedDevice

        # the file starts with silence the feeder keeps ahead of the clock (MicFeeder)
        self.initial = np.zeros(int(2 * RATE), np.int16)
        self.dev = SimulatedDevice(stack.gateway_url, stack.token(self.identity), play=self.initial,
                                   workdir=str(workdir / "esp32"))
        self.audio = audio
        self.feeder: MicFeeder | None = None
        self.card: SoundCard | None = None

    async def start(self) -> None:
        from .simulator import SimulatorError

        try:
            await asyncio.to_thread(self.dev.start)
        except SimulatorError as e:
            raise UsageError(str(e)) from None
        self.feeder = MicFeeder(self.dev.mic_path, time.monotonic()).start(len(self.initial))
        if self.audio == "sounddevice":
            self.card = SoundCard(self.feeder, self.dev.spk_path).start()
        try:
            await self.dev.wait_line(r"\[lkd\] welcome room=", timeout=30)
        except TimeoutError:
            raise PartDied("esp32-sim", "did not join the room through the gateway within 30 s",
                           "\n".join(self.dev.lines()[-15:])) from None

    def ask(self, pcm: np.ndarray) -> None:
        assert self.feeder is not None
        self.feeder.play(pcm)

    def alive(self) -> bool:
        return self.dev.running

    def tail(self) -> str:
        return "\n".join(self.dev.lines()[-15:])

    async def stop(self, record: str | None) -> float:
        if self.card:
            self.card.stop()
        if self.feeder:
            self.feeder.stop()
        await asyncio.to_thread(self.dev.stop)
        seconds = 0.0
        if record:
            pcm = self.dev.speaker_pcm()
            write_wav(record, pcm)
            seconds = len(pcm) / RATE
        self.dev.cleanup()
        return seconds


class RobotSim:
    """`lkdevice robot` (synthetic camera, the sim drive) joining the server directly."""

    identity = "robot"

    def __init__(self, stack: Stack, audio: str, workdir: Path, question: np.ndarray | None, record: str,
                 extra_lead_s: float):
        self.stack = stack
        self.audio = audio
        self.workdir = workdir
        self.question_wav = workdir / "robot-mic.wav"
        if question is not None:
            write_wav(self.question_wav, np.concatenate([np.zeros(int(extra_lead_s * RATE), np.int16), question]))
        self.record = str(Path(record).resolve())
        self.log_path = workdir / "robot.log"
        self.proc: subprocess.Popen | None = None
        self.started = time.monotonic()

    async def start(self) -> None:
        token_file = self.workdir / "robot.token"
        token_file.write_text(self.stack.token(self.identity))
        token_file.chmod(0o600)
        # the token by file (the process list shows argv)
        (self.workdir / "robot.toml").write_text(
            f'[server]\nurl = "{self.stack.server_url}"\ntoken_file = "{token_file}"\n')
        # a small, slow synthetic camera: the video is real but the demo is about the voice
        argv = [sys.executable, "-m", "lkdevice.cli", "robot", "--config", str(self.workdir / "robot.toml"),
                "--camera", "test", "--size", "320x240", "--fps", "10", "--plugin", "sim", "--audio", self.audio]
        if self.audio == "wav":
            argv += ["--play", str(self.question_wav), "--record", self.record]
        self.started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self) -> str:
        return log_tail(self.log_path)

    async def stop(self, record: str | None) -> float:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            deadline = time.monotonic() + 10
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if record and self.audio == "wav" and Path(self.record).exists():
            with wave.open(self.record, "rb") as w:
                return w.getnframes() / w.getframerate()
        return 0.0


# --- the demo --------------------------------------------------------------------------------------

@dataclass
class DemoResult:
    heard: list[str]
    said: list[str]
    recording: str | None
    recorded_s: float
    voiced_s: float


async def run_demo(config: DemoConfig, status: Status = print) -> DemoResult:
    """The whole demo; raises StackError (one line for the user) when something fails."""
    config.check()
    audio = pick_audio(config.audio)
    workdir = Path(tempfile.mkdtemp(prefix="lkdevice-demo-"))
    question_wav = workdir / "question.wav"
    try:
        question = speak(config.say, question_wav) if audio == "wav" else None
        stack_cfg = StackConfig(room=config.room, server_port=0, gateway_port=0, echo=config.echo)
        async with Stack(stack_cfg, status) as stack:
            return await _with_stack(stack, config, audio, workdir, question, status)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _with_stack(stack: Stack, config: DemoConfig, audio: str, workdir: Path, question: np.ndarray | None,
                      status: Status) -> DemoResult:
    observer = Observer(status)
    await observer.connect(stack.server_url, stack.token("demo-observer", hidden=True))
    device = None
    try:
        if not await observer.wait(lambda: observer.agent() is not None, 30):
            raise PartDied("agent", "was not dispatched to the room within 30 s", log_tail(stack.agent.log_path))
        status(f"device  starting {config.device} ({audio} audio)")
        if config.device == "esp32-sim":
            device = Esp32Sim(stack, audio, workdir)
        else:
            device = RobotSim(stack, audio, workdir, question, config.record,
                              0.0 if config.echo else ROBOT_LEAD_S - LEAD_S)
        await device.start()
        if not await observer.wait(lambda: _has_audio(observer.participant(device.identity)), 30):
            raise PartDied(config.device, "joined no microphone within 30 s", device.tail())
        status(f"device  ready {device.identity} in room {config.room}")
        await _greeted(observer, config.echo)
        if audio == "sounddevice":
            status("speak now: the agent answers through this computer's speaker; Ctrl-C to stop")
            await _until_device_dies(stack, device, config)
            return _result(observer, None, 0.0, 0.0)
        asked = time.monotonic()
        if isinstance(device, Esp32Sim):
            device.ask(question)
        else:
            asked = device.started  # its microphone plays the question from its join
        status(f"device  asking: \"{config.say}\" (espeak-ng)")
        answered = await _answered(observer, asked, config, stack, device)
        if not answered:
            heard = [l.text for l in observer.lines if l.who == "user" and l.at >= asked]
            raise StackError(f"no answer from the agent within {config.answer_timeout:.0f} s"
                             + (f" (it heard: {' / '.join(heard)})" if heard else " (it heard nothing)")
                             + f"; the agent's log ends:\n{log_tail(stack.agent.log_path)}")
        recorded = await device.stop(config.record)
        device = None
        return _result(observer, config.record, recorded, _voiced(config.record))
    finally:
        if device is not None:
            await device.stop(None)
        await observer.close()


def _has_audio(p) -> bool:
    return p is not None and any(t.kind == "audio" for t in p.tracks.values())


async def _greeted(observer: Observer, echo: bool) -> None:
    """Until the agent has greeted the device and listens (the voice agent says hello first)."""
    await observer.wait(lambda: observer.state() == "listening", 30)
    if echo:
        return
    await observer.wait(lambda: any(l.who == "agent" for l in observer.lines)
                        and observer.state() != "speaking", GREETING_WAIT_S)


async def _answered(observer: Observer, asked: float, config: DemoConfig, stack: Stack, device) -> bool:
    """True once the agent has answered and stopped speaking; False at the timeout."""
    deadline = asked + config.answer_timeout

    def spoke() -> bool:
        if config.echo:  # the echo agent publishes no transcript: its speaking is the answer
            return any(s == "speaking" and t > asked for t, s in observer.states)
        # an answer is what the agent says after it heard the question (not its greeting)
        heard = [l.at for l in observer.lines if l.who == "user" and l.at > asked]
        return bool(heard) and any(l.who == "agent" and l.at > heard[0] for l in observer.lines)

    while time.monotonic() < deadline:
        if not device.alive():
            raise PartDied(config.device, "stopped", device.tail())
        if stack.agent.returncode() is not None:
            raise PartDied("agent", f"exited with {stack.agent.returncode()}", log_tail(stack.agent.log_path))
        if spoke() and observer.state() != "speaking":
            # the last words still travel to the device's speaker
            await asyncio.sleep(1.0)
            return True
        await observer.wait(lambda: False, 0.3)
    return False


async def _until_device_dies(stack: Stack, device, config: DemoConfig) -> None:
    watch = asyncio.ensure_future(stack.watch())
    try:
        while device.alive():
            if watch.done():
                watch.result()
            await asyncio.sleep(0.3)
        raise PartDied(config.device, "stopped", device.tail())
    finally:
        watch.cancel()


def _voiced(path: str) -> float:
    from lkdevice.rtc.wavfile import read_wav

    try:
        pcm, rate = read_wav(path)
    except Exception:
        return 0.0
    return voiced_seconds(np.asarray(pcm), rate)


def _result(observer: Observer, recording: str | None, recorded_s: float, voiced_s: float) -> DemoResult:
    return DemoResult(heard=[l.text for l in observer.lines if l.who == "user"],
                      said=[l.text for l in observer.lines if l.who == "agent"],
                      recording=recording, recorded_s=recorded_s, voiced_s=voiced_s)
