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


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


CHUNK = OPUS_RATE // 100  # a live source's 10 ms capture chunks


async def _live_call(stall: tuple[float, float] | None = None, late: tuple[float, float] | None = None,
                     seconds: float = 6.0) -> list[float]:
    """A live source writes numbered 10 ms chunks on its clock while the track sends on its own.

    The sender's first tick falls 3 ms after the source's second chunk. `late`
    (at, by) writes one chunk `by` late; `stall` (at, length) freezes the whole
    loop, after which the sender catches up first, then the source. Returns
    each chunk's latency: when its first sample was sent minus when the
    source had it.
    """
    clock = FakeClock()
    mic = MicrophoneTrack(clock=clock)
    t0 = clock.t
    writes = [(t0 + k * 0.01, k) for k in range(int(seconds * 100))]
    if late:
        k = int(round(late[0] * 100))
        writes[k] = (writes[k][0] + late[1], k)
        writes.sort()
    sent_at: dict[int, float] = {}
    w = 0
    while clock.t < t0 + seconds + 1:
        due = t0 + 0.013 if mic._start is None else mic._start + mic._pts / OPUS_RATE
        if stall and due >= t0 + stall[0]:
            clock.t = t0 + stall[0] + stall[1]
            while mic._start + mic._pts / OPUS_RATE <= clock.t:  # the sender catches up first
                await _send(mic, clock, sent_at)
            stall = None
            continue
        if w < len(writes) and writes[w][0] <= max(due, clock.t):
            clock.t = max(clock.t, writes[w][0])
            mic.write_nowait(np.full(CHUNK, writes[w][1] + 1, np.int16), OPUS_RATE)
            w += 1
            continue
        clock.t = max(clock.t, due)
        await _send(mic, clock, sent_at)
    return [sent_at[k] - (t0 + k * 0.01) for k in range(len(writes)) if k in sent_at]


async def _send(mic: MicrophoneTrack, clock: FakeClock, sent_at: dict[int, float]) -> None:
    frame = await mic.next_frame()  # the clock is never behind its schedule here: it does not sleep
    pcm = frame.to_ndarray().reshape(-1)
    for v in np.unique(pcm[pcm > 0]):
        sent_at.setdefault(int(v) - 1, clock.t)


def _drift_ms(latencies: list[float]) -> float:
    first, last = latencies[:100], latencies[-100:]
    return (float(np.median(last)) - float(np.median(first))) * 1000


async def test_live_latency_is_steady_without_hiccups():
    lat = await _live_call()
    assert abs(_drift_ms(lat)) < 1
    assert max(lat) < 0.025  # a chunk waits at most for the next tick


async def test_a_late_chunk_does_not_add_latency_for_the_rest_of_the_call():
    # 5 ms late once: its frame goes out padded with silence and every later chunk
    # waits a frame longer, unless the track sheds the backlog that now stands
    lat = await _live_call(late=(1.01, 0.005))
    assert abs(_drift_ms(lat)) < 2, f"latency rose by {_drift_ms(lat):.1f} ms"


@pytest.mark.parametrize("stall", [0.15, 0.35])
async def test_a_stall_does_not_add_latency_for_the_rest_of_the_call(stall):
    lat = await _live_call(stall=(1.5, stall))
    assert abs(_drift_ms(lat)) < 2, f"latency rose by {_drift_ms(lat):.1f} ms"
    # and it is back within 2 s of the stall
    back = [x for k, x in enumerate(lat) if k >= int((1.5 + stall + 2.0) * 100)]
    assert max(back) < max(lat[:100]) + 0.002


async def test_a_file_source_that_keeps_the_buffer_full_loses_nothing():
    clock = FakeClock()
    mic = MicrophoneTrack(clock=clock)
    n = 0

    async def file_source():
        nonlocal n
        while True:  # far ahead of real time: write() holds it back when the buffer is full
            await mic.write(np.arange(n, n + CHUNK, dtype=np.int64).astype(np.int16), OPUS_RATE)
            n += CHUNK

    feeder = asyncio.ensure_future(file_source())
    await asyncio.sleep(0)
    sent = []
    for i in range(150):
        clock.t = 100.0 + i * 0.02
        sent.append((await mic.next_frame()).to_ndarray().reshape(-1))
        await asyncio.sleep(0)
    feeder.cancel()
    pcm = np.concatenate(sent).astype(np.int64)
    assert mic.samples_dropped == 0
    assert np.all(np.diff(pcm) % 65536 == 1)  # every sample, in order
