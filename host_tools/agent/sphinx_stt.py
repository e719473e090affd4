"""PocketSphinx as a LiveKit Agents STT: a grammar of the agent's phrases first, the open en-us model after.

Everything ships inside the `pocketsphinx` package (acoustic model, dictionary, language model):
nothing is downloaded. The STT is not streaming; AgentSession wraps it with its VAD
(`stt.StreamAdapter`), which hands `recognize()` one buffer per utterance.

How an utterance is decided (measured on espeak-ng speech, 4 voices/speeds x 16 and 48 kHz: 12
commands, and 30 other sentences, many one word off a command): a grammar forces every sound onto
some phrase, so its answer is taken only if
  1. its best path reached the end of a phrase (out of grammar it mostly stops part way: "what");
  2. it put at most 150 ms of speech-loud frames into silence or filler ("move forward quickly"
     comes out "move forward" with the last word as silence; in-grammar commands kept <= 120 ms);
  3. its score per frame is within 10 of an unconstrained phone loop over the same audio (in
     grammar the worst was -8.0; "open the door" as "what can you do" was -18.9). That needs
     every senone scored (`compallsen`) so both searches share one normalisation.
Else the open model's words are the answer (or "" without the fallback). Measured so: commands
96/96 exact (the open model alone: 12/96); other sentences 214/240 not taken for a command. What
still passes is a one-word substitution ("set the light to purple" as "... blue", "what can i do"):
the grammar cannot hear a word it lacks.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import wave
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import pocketsphinx
    from livekit import rtc
    from livekit.agents import APIError, stt, utils
    from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
except ImportError as e:  # the agent extra is not installed
    raise ImportError(f"the offline STT needs {e.name}: pip install 'lkdevice[agent]'", name=e.name) from e

from lkdevice.rtc.audio import Resampler

RATE = 16000
FRAME = RATE // 100  # pocketsphinx's 10 ms frame
# espeak-ng and the device paths carry exact digital zeros; a frame of zeros has no log energy and
# wrecks the cepstral mean (measured: 7 of 12 commands exact without this, 12 of 12 with)
DITHER = 3.0
PAD = RATE // 5  # 200 ms of quiet each side: a clip cut right at the speech still starts and ends in silence
SPEECH_IN_SILENCE_FRAMES = 15
MIN_MARGIN_PER_FRAME = -10.0
# below this RMS (about -60 dBFS) there is nothing to recognize
QUIET_RMS = 30.0
# the speech in a clip: frames within 40 dB of its loudest and 12 dB above its quietest tenth
# (the noise floor), and 250 ms either side
TRIM_BELOW_PEAK = 0.01
TRIM_ABOVE_FLOOR = 4.0
TRIM_MARGIN_FRAMES = 25
# recognitions waiting for the decoder thread, per recognizer, before a new one is refused
MAX_PENDING = 4
_WORD = re.compile(r"[a-z][a-z']*")
# a reply's text as a phrase: "It is on." is the words "it is on"
_PUNCTUATION = re.compile(r"[.,;:!?\"()]")


def _words(phrase: str) -> list[str]:
    return _PUNCTUATION.sub(" ", phrase.lower()).split()


def _frame_rms(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME
    return np.sqrt(np.mean(x[: n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2, axis=1))


def _speech_part(x: np.ndarray) -> np.ndarray:
    """From the first to the last speech-loud frame, with a margin; empty if nothing is loud enough.

    Decoding is batch (the cepstral mean over the whole clip): seconds of room tone around a
    command shift that mean until the grammar loses it ("turn left" then 2 s at -64 dBFS: nothing).
    """
    rms = _frame_rms(x)
    if not len(rms) or rms.max() < QUIET_RMS:
        return x[:0]
    floor = np.percentile(rms, 10)
    loud = np.nonzero(rms > max(QUIET_RMS, rms.max() * TRIM_BELOW_PEAK, floor * TRIM_ABOVE_FLOOR))[0]
    if not len(loud):  # steady noise, nothing standing out of it
        return x[:0]
    start = max(0, (loud[0] - TRIM_MARGIN_FRAMES) * FRAME)
    return x[start: (loud[-1] + 1 + TRIM_MARGIN_FRAMES) * FRAME]


class _Grammar:
    """The phrases as a JSGF search, and a phone loop to weigh its score against (one decoder)."""

    def __init__(self, phrases: tuple[str, ...]):
        self.phrases = phrases
        self.decoder = pocketsphinx.Decoder(lm=None, compallsen=True, loglevel="FATAL")
        missing = sorted({w for p in phrases for w in p.split()
                          if not _WORD.fullmatch(w) or self.decoder.lookup_word(w) is None})
        if missing:
            raise ValueError(f"not in the en-us dictionary: {', '.join(missing)} (use words it has)")
        rules = " | ".join(f"( {p} )" for p in phrases)
        self.decoder.add_jsgf_string("grammar", f"#JSGF V1.0;\ngrammar agent;\npublic <phrase> = {rules};\n")
        self.decoder.add_allphone_file("phones", pocketsphinx.get_model_path("en-us/en-us-phone.lm.bin"))
        self.lock = threading.Lock()

    def _decode(self, search: str, pcm: bytes) -> tuple[str, float | None, list[pocketsphinx.Segment]]:
        d = self.decoder
        d.activate_search(search)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        if hyp is None or hyp.score <= 0:
            return "", None, []
        return hyp.hypstr, d.logmath.log(hyp.score), list(d.seg() or [])

    def match(self, x: np.ndarray) -> str | None:
        """The phrase said, or None if the audio is not one of them (the module docstring's rules)."""
        with self.lock:
            text, score, segs = self._decode("grammar", x.tobytes())
            if text not in self.phrases or score is None:
                return None
            rms = _frame_rms(x)
            n = len(rms)
            loud = rms > 0.1 * np.percentile(rms, 95)
            in_silence = sum(int(loud[s.start_frame: s.end_frame + 1].sum())
                             for s in segs if s.word.startswith(("<sil>", "[", "+")))
            if in_silence > SPEECH_IN_SILENCE_FRAMES:
                return None
            _, phones, _ = self._decode("phones", x.tobytes())
        if phones is not None and (score - phones) / max(n, 1) < MIN_MARGIN_PER_FRAME:
            return None
        return text


class _OpenModel:
    """The en-us language model that ships with pocketsphinx (one decoder, shared)."""

    def __init__(self) -> None:
        self.decoder = pocketsphinx.Decoder(loglevel="FATAL")
        self.lock = threading.Lock()

    def words(self, x: np.ndarray) -> str:
        with self.lock:
            d = self.decoder
            d.start_utt()
            d.process_raw(x.tobytes(), full_utt=True)
            d.end_utt()
            hyp = d.hyp()
        return " ".join(hyp.hypstr.split()) if hyp else ""


# a grammar's decoder holds its own acoustic model: about 28 MB each (the open model's about 90 MB)
@functools.lru_cache(maxsize=4)
def _grammar(phrases: tuple[str, ...]) -> _Grammar:
    return _Grammar(phrases)


@functools.lru_cache(maxsize=1)
def _open_model() -> _OpenModel:
    return _OpenModel()


def _normalise(phrases: Sequence[str]) -> tuple[str, ...]:
    if isinstance(phrases, str):
        raise TypeError("phrases is a sequence of phrases, not one string")
    out = []
    for p in phrases:
        words = _words(p)
        if not words:
            raise ValueError(f"an empty phrase in {list(phrases)!r}")
        out.append(" ".join(words))
    return tuple(dict.fromkeys(out))


class Recognizer:
    """One grammar (may be empty) and the open model, for 16 kHz mono int16 clips; thread-safe."""

    def __init__(self, phrases: Sequence[str] = (), *, open_fallback: bool = True):
        self.phrases = _normalise(phrases)
        if not self.phrases and not open_fallback:
            raise ValueError("nothing to recognize with: give phrases, or keep the open fallback")
        self.open_fallback = open_fallback
        self._grammar = _grammar(self.phrases) if self.phrases else None
        self._open = _open_model() if open_fallback else None

    def recognize(self, samples: np.ndarray) -> str:
        x = _speech_part(np.asarray(samples, dtype=np.int16).reshape(-1))
        if not len(x):
            return ""
        quiet = np.zeros(PAD, np.float64)
        noise = np.random.default_rng(0).normal(0, DITHER, len(x) + 2 * PAD)
        x = np.clip(np.concatenate([quiet, x, quiet]) + noise, -32768, 32767).astype(np.int16)
        if self._grammar is not None:
            phrase = self._grammar.match(x)
            if phrase is not None:
                return phrase
        return self._open.words(x) if self._open is not None else ""


def to_16k_mono(samples: np.ndarray, sample_rate: int, channels: int = 1) -> np.ndarray:
    x = np.asarray(samples, dtype=np.int16).reshape(-1)
    if channels > 1:
        x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1).astype(np.int16)
    return Resampler(RATE).resample(x, sample_rate)


def transcribe(samples: np.ndarray, sample_rate: int, phrases: Sequence[str] = (), open_fallback: bool = True) -> str:
    """What was said in mono int16 `samples`: lower case, single spaces, "" for silence."""
    return Recognizer(phrases, open_fallback=open_fallback).recognize(to_16k_mono(samples, sample_rate))


def transcribe_wav(path: str, phrases: Sequence[str] = (), open_fallback: bool = True) -> str:
    """`transcribe` for a 16-bit PCM WAV file (any rate, mono or stereo)."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise ValueError(f"{path}: only 16-bit PCM WAV is supported (got {8 * w.getsampwidth()}-bit)")
            rate, channels = w.getframerate(), w.getnchannels()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{path}: not a WAV file ({e})") from e
    return transcribe(to_16k_mono(pcm, rate, channels), RATE, phrases, open_fallback)


def _final(text: str) -> stt.SpeechEvent:
    return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                           alternatives=[stt.SpeechData(language="en", text=text)])


class SphinxSTT(stt.STT):
    """Offline STT: exact phrases from a grammar, the open en-us model for anything else."""

    def __init__(self, phrases: Sequence[str] = (), *, open_fallback: bool = True):
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._recognizer = Recognizer(phrases, open_fallback=open_fallback)
        # one thread: the decoders are used one utterance at a time anyway (each holds a lock)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sphinx-stt")
        self._pending = 0

    @property
    def phrases(self) -> tuple[str, ...]:
        return self._recognizer.phrases

    @property
    def model(self) -> str:
        return "en-us" + ("+grammar" if self.phrases else "")

    @property
    def provider(self) -> str:
        return "pocketsphinx"

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> stt.SpeechEvent:
        if utils.is_given(language) and not language.lower().startswith("en"):
            raise ValueError(f"pocketsphinx's model here is en-us only, not {language!r}")
        if isinstance(buffer, list) and not buffer:
            return _final("")
        frame = rtc.combine_audio_frames(buffer) if isinstance(buffer, list) else buffer
        if self._pending >= MAX_PENDING:
            raise APIError(f"speech recognizer busy: {self._pending} utterances already waiting", retryable=False)
        self._pending += 1
        try:
            pcm = np.frombuffer(frame.data, dtype=np.int16)
            text = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._recognize_pcm, pcm, frame.sample_rate, frame.num_channels)
        finally:
            self._pending -= 1
        return _final(text)

    def _recognize_pcm(self, pcm: np.ndarray, rate: int, channels: int) -> str:
        return self._recognizer.recognize(to_16k_mono(pcm, rate, channels) if len(pcm) else pcm)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
