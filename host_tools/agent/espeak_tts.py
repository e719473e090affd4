"""eSpeak NG as a LiveKit Agents TTS, and synchronous helpers that make spoken WAVs.

`ESpeakTTS` runs `espeak-ng --stdout` once per utterance and hands its PCM to the
agent as it arrives: espeak-ng writes a WAV header with an unknown length and then
audio in stdio-sized pieces, so the first 20 ms frame is out long before the
synthesis of a long reply ends. The text always goes in on stdin (`--stdin`: the
whole text at once, so newlines and long lines are not cut into utterances or at
espeak-ng's 1000-byte line buffer), never on the command line.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from livekit.agents import APIConnectOptions, APIError, APITimeoutError, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

ESPEAK_RATE = 22050
INSTALL_HINT = "espeak-ng is not installed: sudo apt-get install espeak-ng (or run host_tools/system_deps.sh)"
# espeak-ng's own range for -s
MIN_WPM, MAX_WPM = 80, 450
# Voice names as espeak-ng lists them (en-us, en-us+f3, mb-en1, gmw/en-US); never an option
_VOICE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+./-]{0,63}")
# A header longer than this is not espeak-ng's (its own is 44 bytes)
MAX_HEADER = 4096
READ_CHUNK = 16384
# espeak-ng runs hundreds of times faster than real time; past this lead over the
# wall clock the reader waits, so a long reply holds at most this much audio here
# and espeak-ng blocks on its pipe rather than filling memory
MAX_AHEAD_S = 60.0
STDERR_LIMIT = 2048


class ESpeakError(RuntimeError):
    """espeak-ng could not make the speech asked for."""


class ESpeakMissing(ESpeakError):
    """No espeak-ng on PATH."""


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise ESpeakMissing(INSTALL_HINT)
    return path


def _command(binary: str, voice: str, words_per_minute: int) -> list[str]:
    if not _VOICE_RE.fullmatch(voice):
        raise ValueError(f"voice {voice!r} is not an espeak-ng voice name (see: espeak-ng --voices)")
    if not isinstance(words_per_minute, int) or not MIN_WPM <= words_per_minute <= MAX_WPM:
        raise ValueError(f"words_per_minute must be an integer from {MIN_WPM} to {MAX_WPM}, got {words_per_minute!r}")
    return [binary, "--stdout", "--stdin", "-v", voice, "-s", str(words_per_minute)]


def _failure(voice: str, returncode: int, stderr: bytes) -> str:
    said = stderr.decode("utf-8", "replace").strip().splitlines()
    why = said[-1] if said else "no message"
    return f"espeak-ng failed with voice {voice!r} (exit {returncode}): {why}"


@dataclass(frozen=True)
class WavFormat:
    sample_rate: int
    channels: int
    bits: int


class WavStream:
    """A WAV byte stream in, PCM bytes out, as they come; the header's lengths are ignored.

    espeak-ng writes 0x7ffff000 as its lengths when its output is a pipe, so the data
    runs to end of file. Bytes are whole samples: an odd byte waits for its partner.
    """

    def __init__(self) -> None:
        self.format: WavFormat | None = None
        self._head = bytearray()
        self._in_data = False
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        if self._in_data:
            return self._whole_samples(data)
        self._head += data
        pcm = self._parse_head()
        if not self._in_data and len(self._head) > MAX_HEADER:
            raise ValueError(f"no WAV data chunk in the first {MAX_HEADER} bytes")
        return pcm

    def _parse_head(self) -> bytes:
        head = self._head
        if len(head) < 12:
            return b""
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"not a WAV stream (starts {bytes(head[:12])!r})")
        pos = 12
        while len(head) >= pos + 8:
            chunk_id, size = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
            body = pos + 8
            if chunk_id == b"data":
                if self.format is None:
                    raise ValueError("WAV data before its fmt chunk")
                self._in_data = True
                rest = bytes(head[body:])
                self._head = bytearray()
                return self._whole_samples(rest)
            if len(head) < body + size:
                return b""
            if chunk_id == b"fmt ":
                if size < 16:
                    raise ValueError(f"WAV fmt chunk of {size} bytes")
                tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", head, body)
                if tag != 1 or bits != 16:
                    raise ValueError(f"WAV is not 16-bit PCM (format {tag}, {bits}-bit)")
                self.format = WavFormat(rate, channels, bits)
            pos = body + size + (size & 1)  # chunks are padded to even length
        return b""

    def _whole_samples(self, data: bytes) -> bytes:
        if self._carry:
            data = self._carry + data
        frame = 2 * (self.format.channels if self.format else 1)
        cut = len(data) - len(data) % frame
        self._carry = data[cut:]
        return data[:cut]


class ESpeakTTS(tts.TTS):
    """eSpeak NG, offline: 22050 Hz mono, one espeak-ng process per utterance."""

    def __init__(self, voice: str = "en-us", words_per_minute: int = 175) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=ESPEAK_RATE,
            num_channels=1,
        )
        self._command = _command(espeak_binary(), voice, words_per_minute)
        self._voice = voice

    @property
    def model(self) -> str:
        return self._voice

    @property
    def provider(self) -> str:
        return "espeak-ng"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> ESpeakStream:
        return ESpeakStream(tts=self, input_text=text, conn_options=conn_options)


class ESpeakStream(tts.ChunkedStream):
    """One utterance: espeak-ng's PCM pushed to the emitter as it is read."""

    def __init__(self, *, tts: ESpeakTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        command, voice = self._espeak._command, self._espeak._voice
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError as e:
            raise APIError(INSTALL_HINT, retryable=False) from e
        assert proc.stdin and proc.stdout and proc.stderr
        feeder = asyncio.create_task(_feed(proc.stdin, self._input_text.encode("utf-8")))
        errors = asyncio.create_task(_bounded_read(proc.stderr, STDERR_LIMIT))
        # not asyncio.wait_for around each read: before 3.12 it can swallow the
        # cancellation of a barge-in when the read completes at the same moment
        watchdog = _Watchdog(proc, self._conn_options.timeout)
        try:
            pushed = await self._pump(proc.stdout, output_emitter, watchdog)
            await feeder
            stderr = await errors
            returncode = await proc.wait()
            if watchdog.fired:
                # a hung espeak-ng would hang again: no retry
                raise APITimeoutError(f"espeak-ng made no progress for {watchdog.seconds} s", retryable=False)
            if returncode != 0:
                raise APIError(_failure(voice, returncode, stderr), retryable=False)
            if pushed:
                output_emitter.flush()
        finally:
            watchdog.stop()
            # barge-in cancels us here: the process goes at once and is reaped
            if proc.returncode is None:
                proc.kill()
            await asyncio.shield(_reap(proc))
            for task in (feeder, errors):
                task.cancel()

    async def _pump(self, stdout: asyncio.StreamReader, emitter: tts.AudioEmitter, watchdog: _Watchdog) -> int:
        """Read espeak-ng's WAV and push its PCM; returns the samples pushed."""
        wav = WavStream()
        loop = asyncio.get_running_loop()
        started: float | None = None
        samples = 0
        rate = ESPEAK_RATE
        while True:
            watchdog.arm()
            data = await stdout.read(READ_CHUNK)
            if not data:
                if started is None:
                    # no audio at all (empty text, or a failure the exit status explains)
                    emitter.initialize(
                        request_id=utils.shortuuid(), sample_rate=rate, num_channels=1, mime_type="audio/pcm"
                    )
                return samples
            try:
                pcm = wav.feed(data)
            except ValueError as e:
                raise APIError(f"espeak-ng output unreadable: {e}", retryable=False) from e
            if not pcm:
                continue
            if started is None:
                assert wav.format is not None
                rate = wav.format.sample_rate
                emitter.initialize(
                    request_id=utils.shortuuid(),
                    sample_rate=rate,
                    num_channels=wav.format.channels,
                    mime_type="audio/pcm",
                )
                started = loop.time()
            emitter.push(pcm)
            samples += len(pcm) // 2
            ahead = samples / rate - (loop.time() - started)
            if ahead > MAX_AHEAD_S:
                watchdog.stop()  # our own wait, not espeak-ng's
                await asyncio.sleep(ahead - MAX_AHEAD_S)


class _Watchdog:
    """Kills espeak-ng when a read waits longer than `seconds`; the read then sees end of file."""

    def __init__(self, proc: asyncio.subprocess.Process, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._proc = proc
        self._timer: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        self.stop()
        self._timer = asyncio.get_running_loop().call_later(self.seconds, self._fire)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        if self._proc.returncode is None:
            self.fired = True
            self._proc.kill()


async def _reap(proc: asyncio.subprocess.Process) -> None:
    # wait() returns only once every pipe is closed, and a paused reader never sees
    # stdout's end: read what is left (one pipe's worth at most, the process is gone)
    assert proc.stdout is not None
    while await proc.stdout.read(READ_CHUNK):
        pass
    await proc.wait()


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stdin.write(data)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        return  # espeak-ng exited early (bad voice): its exit status says why
    finally:
        stdin.close()


async def _bounded_read(stream: asyncio.StreamReader, limit: int) -> bytes:
    """All of a stream, keeping only its last `limit` bytes."""
    kept = b""
    while data := await stream.read(4096):
        kept = (kept + data)[-limit:]
    return kept


def _resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling in the frequency domain (a short clip, whole)."""
    if rate == new_rate or len(samples) == 0:
        return samples.astype(np.int16)
    n_out = round(len(samples) * new_rate / rate)
    spectrum = np.fft.rfft(samples.astype(np.float64))
    bins = n_out // 2 + 1
    if bins <= len(spectrum):
        spectrum = spectrum[:bins]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(bins - len(spectrum), complex)])
    out = np.fft.irfft(spectrum, n_out) * (n_out / len(samples))
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def speak(
    text: str,
    sample_rate: int = 16000,
    voice: str = "en-us",
    words_per_minute: int = 175,
    *,
    leading_silence_ms: int = 0,
    trailing_silence_ms: int = 0,
    timeout: float = 60.0,
) -> np.ndarray:
    """`text` spoken by espeak-ng as mono int16 at `sample_rate`, with silence around it if asked."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if leading_silence_ms < 0 or trailing_silence_ms < 0:
        raise ValueError("silence lengths must not be negative")
    command = _command(espeak_binary(), voice, words_per_minute)
    try:
        done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ESpeakError(f"espeak-ng took longer than {timeout} s") from e
    if done.returncode != 0:
        raise ESpeakError(_failure(voice, done.returncode, done.stderr[-STDERR_LIMIT:]))
    wav = WavStream()
    try:
        pcm = wav.feed(done.stdout)
    except ValueError as e:
        raise ESpeakError(f"espeak-ng output unreadable: {e}") from e
    samples = np.frombuffer(pcm, dtype="<i2")
    rate = ESPEAK_RATE
    if wav.format is not None:
        rate = wav.format.sample_rate
        if wav.format.channels > 1:
            samples = samples.reshape(-1, wav.format.channels).mean(axis=1)
    out = _resample(samples, rate, sample_rate)
    lead = np.zeros(sample_rate * leading_silence_ms // 1000, np.int16)
    trail = np.zeros(sample_rate * trailing_silence_ms // 1000, np.int16)
    return np.concatenate([lead, out, trail])


def speak_to_wav(
    text: str,
    path: str | Path,
    sample_rate: int = 16000,
    voice: str = "en-us",
    words_per_minute: int = 175,
    *,
    leading_silence_ms: int = 0,
    trailing_silence_ms: int = 0,
) -> Path:
    """Write `text` spoken as a mono 16-bit WAV at `sample_rate`; returns the path."""
    samples = speak(
        text,
        sample_rate,
        voice,
        words_per_minute,
        leading_silence_ms=leading_silence_ms,
        trailing_silence_ms=trailing_silence_ms,
    )
    path = Path(path)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path
