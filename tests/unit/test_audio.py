"""PCM in and out: resampling, pacing, stall recovery, WAV files."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from lkdevice.rtc.audio import OPUS_FRAME, OPUS_RATE, MicrophoneTrack, Resampler, tone
from lkdevice.rtc.wavfile import WavWriter, read_wav
from tests.audio_checks import frame_frequency


def test_resampler_keeps_pitch_and_length():
    t = np.arange(16000) / 16000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    out = Resampler(48000).resample(pcm, 16000)
    assert abs(len(out) - 48000) < 100
    assert abs(frame_frequency(out[24000:24960], 48000) - 440) < 1


async def test_microphone_paces_in_real_time_and_fills_silence():
    mic = MicrophoneTrack()
    rtp = mic.rtp_track()
    await mic.write(np.full(OPUS_FRAME, 1000, np.int16), OPUS_RATE)
    started = time.monotonic()
    frames = [await rtp.recv() for _ in range(6)]
    elapsed = time.monotonic() - started
    assert 0.08 <= elapsed <= 0.2  # five 20 ms waits after the first frame
    assert [f.pts for f in frames] == [i * OPUS_FRAME for i in range(6)]
    assert frames[0].to_ndarray().max() == 1000
    assert frames[1].to_ndarray().max() == 0  # underrun: silence, not stale audio


async def test_mute_sends_silence():
    mic = MicrophoneTrack()
    mic.muted = True
    await mic.write(np.full(OPUS_FRAME, 1000, np.int16), OPUS_RATE)
    frame = await mic.rtp_track().recv()
    assert frame.to_ndarray().max() == 0


async def test_backlog_after_a_stall_is_dropped():
    mic = MicrophoneTrack()
    rtp = mic.rtp_track()
    await rtp.recv()
    for _ in range(10):  # a capture callback kept writing while nobody read
        mic.write_nowait(np.ones(OPUS_FRAME, np.int16), OPUS_RATE)
    await asyncio.sleep(0.5)
    await rtp.recv()
    assert mic.buffered <= 0.04


async def test_stopped_microphone_ends_its_rtp_track():
    mic = MicrophoneTrack()
    rtp = mic.rtp_track()
    mic.stop()
    with pytest.raises(MediaStreamError):
        await rtp.recv()


async def test_a_new_rtp_track_continues_the_same_microphone():
    mic = MicrophoneTrack()
    first = mic.rtp_track()
    await first.recv()
    first.stop()  # aiortc does this when a peer connection closes
    second = mic.rtp_track()
    await mic.write(np.full(OPUS_FRAME, 7, np.int16), OPUS_RATE)
    frame = await second.recv()
    assert frame.pts == OPUS_FRAME and frame.to_ndarray().max() == 7


async def test_tone_source_has_its_frequency():
    chunk = await tone(1000, sample_rate=16000).__anext__()
    assert abs(frame_frequency(chunk.samples, 16000) - 1000) < 1


def test_wav_round_trip(tmp_path):
    path = str(tmp_path / "a.wav")
    w = WavWriter(path, 16000)
    w.write(np.arange(-100, 100, dtype=np.int16))
    w.close()
    pcm, rate = read_wav(path)
    assert rate == 16000 and pcm.tolist() == list(range(-100, 100))
