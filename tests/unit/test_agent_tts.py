"""The eSpeak NG TTS with the real espeak-ng: speech comes out, early, and stops when told."""

from __future__ import annotations

import asyncio
import os
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from lkdevice.host_tools.agent.espeak_tts import (
    ESPEAK_RATE,
    MAX_AHEAD_S,
    ESpeakError,
    ESpeakMissing,
    ESpeakTTS,
    WavStream,
    espeak_binary,
    speak,
    speak_to_wav,
)

pytest.importorskip("livekit.agents")
from livekit.agents import APIError  # noqa: E402
from livekit.agents import tts as agents_tts  # noqa: E402

SENTENCE = "Turn on the kitchen light, please."
# punctuated like a reply: espeak-ng speaks it clause by clause
LONG = " ".join(
    f"This is sentence number {i} of a long answer, and it goes on for a while." for i in range(1, 11)
)


def voiced_seconds(samples: np.ndarray, rate: int, frame_ms: int = 40) -> float:
    """Seconds of frames that are loud and periodic with a pitch in 100-400 Hz (a voice)."""
    n = rate * frame_ms // 1000
    lo, hi = rate // 400, rate // 100
    voiced = 0
    for i in range(0, len(samples) - n + 1, n):
        x = samples[i:i + n].astype(np.float64)
        x -= x.mean()
        energy = float(np.dot(x, x))
        if np.sqrt(energy / n) < 300:  # quieter than about -40 dBFS
            continue
        ac = np.correlate(x, x, "full")[n - 1:]
        if ac[lo:hi + 1].max() / energy > 0.5:
            voiced += 1
    return voiced * frame_ms / 1000


def espeak_children() -> list[tuple[int, str]]:
    """This process's espeak-ng children in any state (zombies included), from /proc."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if int(ppid) == me and comm.startswith("espeak"):
            found.append((int(entry), state))
    return found


async def synthesize(tts: ESpeakTTS, text: str) -> tuple[np.ndarray, set[tuple[int, int]], float, float]:
    """PCM, the (rate, channels) of its frames, first-frame time and total time."""
    t0 = time.perf_counter()
    first = None
    chunks, formats = [], set()
    async for ev in tts.synthesize(text):
        if first is None:
            first = time.perf_counter() - t0
        formats.add((ev.frame.sample_rate, ev.frame.num_channels))
        chunks.append(np.frombuffer(ev.frame.data, dtype=np.int16).copy())
    total = time.perf_counter() - t0
    assert first is not None, "no audio at all"
    return np.concatenate(chunks), formats, first, total


def test_the_voice_check_tells_speech_from_noise_and_silence():
    rng = np.random.default_rng(1)
    assert voiced_seconds((rng.standard_normal(22050) * 5000).astype(np.int16), 22050) == 0
    assert voiced_seconds(np.zeros(22050, np.int16), 22050) == 0
    assert voiced_seconds(speak(SENTENCE, 22050), 22050) >= 0.5


async def test_synthesize_gives_voiced_frames_at_22050_hz_mono_growing_with_the_text():
    tts = ESpeakTTS()
    assert (tts.sample_rate, tts.num_channels, tts.capabilities.streaming) == (22050, 1, False)
    short, formats, _, _ = await synthesize(tts, "Hello.")
    longer, formats2, _, _ = await synthesize(tts, SENTENCE + " " + SENTENCE)
    assert formats == formats2 == {(ESPEAK_RATE, 1)}
    assert voiced_seconds(longer, ESPEAK_RATE) >= 0.5
    assert len(longer) > 2 * len(short)
    await tts.aclose()


async def test_first_audio_comes_before_the_synthesis_ends():
    tts = ESpeakTTS()
    figures = {}
    for name, text in (("short", SENTENCE), ("long", LONG)):
        await synthesize(tts, text)  # warm the page cache: espeak-ng's data files
        pcm, _, first, total = await synthesize(tts, text)
        figures[name] = (first, total, len(pcm) / ESPEAK_RATE)
    print(
        "\nespeak-ng TTS: "
        + "; ".join(f"{k}: first audio {f * 1000:.1f} ms, total {t * 1000:.1f} ms for {d:.1f} s of speech"
                    for k, (f, t, d) in figures.items())
    )
    first, total, spoken = figures["long"]
    assert spoken > 30  # a long reply indeed
    assert first < total  # no tight timing here: the cancel test shows espeak-ng still runs at the first frame
    await tts.aclose()


async def test_cancelling_mid_synthesis_kills_and_reaps_espeak_ng():
    tts = ESpeakTTS()
    assert espeak_children() == []
    got_first = asyncio.Event()
    heard = 0

    async def listen() -> None:
        nonlocal heard
        async with tts.synthesize(LONG * 4) as stream:  # past MAX_AHEAD_S: espeak-ng still runs when cut
            async for ev in stream:
                heard += ev.frame.samples_per_channel
                got_first.set()

    task = asyncio.create_task(listen())
    await asyncio.wait_for(got_first.wait(), 10)
    running = espeak_children()
    # also: the first audio came out while espeak-ng was still synthesizing
    assert running, "espeak-ng had already ended: this would not test cancellation"
    t0 = time.perf_counter()
    task.cancel()  # what an interruption does to the agent's speech task
    done, _ = await asyncio.wait([task], timeout=5)
    assert done and task.cancelled(), "the cancelled synthesis did not end"
    print(f"\nespeak-ng TTS: cancel to process reaped {(time.perf_counter() - t0) * 1000:.1f} ms")
    assert espeak_children() == [], f"left behind: {running}"
    assert heard / ESPEAK_RATE < 120  # it stopped early, not after the whole text
    await tts.aclose()


async def test_a_long_reply_is_held_at_most_max_ahead_of_real_time():
    tts = ESpeakTTS()
    heard = 0
    stream = tts.synthesize(LONG * 4)  # 160 s of speech, made in well under a second
    t0 = time.perf_counter()
    async for ev in stream:
        heard += ev.frame.samples_per_channel
        if time.perf_counter() - t0 > 1.0:
            break
    await stream.aclose()
    # espeak-ng waits on its pipe instead of filling memory with the whole reply
    assert MAX_AHEAD_S <= heard / ESPEAK_RATE <= MAX_AHEAD_S + 10
    assert espeak_children() == []
    await tts.aclose()


async def test_the_agent_sessions_sentence_adapter_speaks_every_sentence():
    # AgentSession wraps a non-streaming TTS in a StreamAdapter: one synthesize per sentence
    adapter = agents_tts.StreamAdapter(tts=ESpeakTTS())
    stream = adapter.stream()
    stream.push_text("Hello there. I turned on the kitchen light. ")
    stream.push_text("Anything else?")
    stream.end_input()
    chunks = []
    async for ev in stream:
        assert (ev.frame.sample_rate, ev.frame.num_channels) == (ESPEAK_RATE, 1)
        chunks.append(np.frombuffer(ev.frame.data, dtype=np.int16).copy())
    await stream.aclose()
    await adapter.aclose()
    one, _, _, _ = await synthesize(ESpeakTTS(), "I turned on the kitchen light.")
    pcm = np.concatenate(chunks)
    assert len(pcm) > 1.5 * len(one)
    assert voiced_seconds(pcm, ESPEAK_RATE) >= 1.0


async def test_a_bad_voice_is_a_clear_error_not_a_hang():
    tts = ESpeakTTS(voice="xx-nosuch")
    errors = []
    tts.on("error", errors.append)
    with pytest.raises(APIError) as caught:
        await asyncio.wait_for(synthesize(tts, "hello"), 10)
    assert "xx-nosuch" in str(caught.value) and "espeak-ng failed" in str(caught.value)
    assert "does not exist" in str(caught.value) or "voice" in str(caught.value).lower()
    assert errors and errors[-1].recoverable is False  # the session's error event
    assert espeak_children() == []
    await tts.aclose()
    with pytest.raises(ESpeakError, match="xx-nosuch"):
        speak("hello", voice="xx-nosuch")


@pytest.mark.parametrize("voice", ["--help", "-s", "", "en us", "en;ls"])
def test_a_voice_that_is_not_a_voice_name_is_refused(voice):
    with pytest.raises(ValueError, match="voice"):
        ESpeakTTS(voice=voice)


@pytest.mark.parametrize("wpm", [0, 79, 451, 175.5])
def test_a_speed_out_of_range_is_refused(wpm):
    with pytest.raises(ValueError, match="words_per_minute"):
        ESpeakTTS(words_per_minute=wpm)


@pytest.mark.parametrize(
    "text",
    [
        "--help me open the door",
        "-v xx --version of the door",
        "-s 450 -w /tmp/out.wav open the door",
        'She said "open" and \'the door\'.',
        "$(touch /tmp/x) `id`; open the door",
    ],
)
async def test_text_that_looks_like_options_or_shell_is_spoken(text):
    tts = ESpeakTTS()
    pcm, _, _, _ = await synthesize(tts, text)
    # espeak-ng's help or version text would come out instead of a WAV (an error here),
    # and an option taken would speak the rest at another speed or voice, or into a file
    assert voiced_seconds(pcm, ESPEAK_RATE) >= 0.4
    assert len(pcm) / ESPEAK_RATE > 1.0
    await tts.aclose()


async def test_newlines_do_not_cut_the_text():
    tts = ESpeakTTS()
    first_line, _, _, _ = await synthesize(tts, "Turn on")
    spaced, _, _, _ = await synthesize(tts, "Turn on the kitchen light and the hall light")
    lines, _, _, _ = await synthesize(tts, "Turn on\nthe kitchen light\n\nand the hall light")
    assert len(lines) > 2 * len(first_line)
    assert len(lines) >= 0.9 * len(spaced)
    # a blank line is a paragraph's pause, so not equal; all of it spoken
    assert voiced_seconds(lines, ESPEAK_RATE) >= 0.8 * voiced_seconds(spaced, ESPEAK_RATE)
    await tts.aclose()


def test_speak_to_wav_writes_16_khz_mono_of_the_right_length(tmp_path):
    reference = speak(SENTENCE, ESPEAK_RATE)  # espeak-ng's own rate: no resampling
    path = speak_to_wav(SENTENCE, tmp_path / "q.wav", leading_silence_ms=300, trailing_silence_ms=700)
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    words = round(len(reference) * 16000 / ESPEAK_RATE)
    assert len(pcm) == 4800 + words + 11200
    assert not pcm[:4800].any() and not pcm[-11200:].any()
    assert voiced_seconds(pcm, 16000) >= 0.5  # resampled, still a voice
    assert abs(voiced_seconds(pcm, 16000) - voiced_seconds(reference, ESPEAK_RATE)) < 0.25


def test_missing_espeak_ng_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ESpeakMissing, match="sudo apt-get install espeak-ng"):
        espeak_binary()
    with pytest.raises(ESpeakMissing):
        ESpeakTTS()
    assert issubclass(ESpeakMissing, RuntimeError)


def test_wav_stream_reads_espeak_ng_output_in_any_pieces():
    import subprocess

    whole = subprocess.run([espeak_binary(), "--stdout"], input=b"hello", capture_output=True).stdout
    assert whole[:4] == b"RIFF" and whole[40:44] != len(whole[44:]).to_bytes(4, "little")  # length unknown
    at_once = WavStream()
    expected = at_once.feed(whole)
    assert at_once.format is not None and at_once.format.sample_rate == ESPEAK_RATE
    piecewise = WavStream()
    got = b"".join(piecewise.feed(whole[i:i + 7]) for i in range(0, len(whole), 7))
    assert got == expected and len(got) == len(whole) - 44 and len(got) % 2 == 0
    with pytest.raises(ValueError, match="not a WAV"):
        WavStream().feed(b"Usage: espeak-ng [options] [words]\n")
