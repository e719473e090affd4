"""hil/harness/media.py's pure parts: markers found where they are, missing where they are not; the speaker's stop."""

from __future__ import annotations

import numpy as np

from lkdevice.hil import media
from lkdevice.hil.target import Recording

RATE = 16000


def _received(delay_s: float, *, drop: range = range(0), seconds: float = 30.0, noise: float = 300.0):
    offsets = media.marker_offsets(seconds)
    pcm = media.signal(seconds, RATE, 440.0, offsets).astype(np.float64)
    for k in drop:  # those markers never arrived: their span is silence
        i = int(offsets[k] * RATE)
        pcm[i:i + int(media.CHIRP_S * RATE)] = 0
    rx = np.concatenate([np.zeros(int(delay_s * RATE)), pcm])
    rx += np.random.default_rng(3).normal(0, noise, len(rx))
    return rx.astype(np.int16), offsets


def test_every_marker_is_found_at_the_latency_it_was_delayed_by():
    rx, offsets = _received(0.337)
    got = media.find_markers(rx, RATE, media.Timeline.linear(500.0, len(rx), RATE), [500.0 + o for o in offsets])
    assert len(got) >= len(offsets) - 3  # the last ones' arrival window runs past the end
    assert all(lat is not None and abs(lat - 0.337) <= 0.002 for _, lat in got), got


def test_a_marker_that_did_not_arrive_is_missing_not_found_elsewhere():
    rx, offsets = _received(0.9, drop=range(5, 9))
    got = media.find_markers(rx, RATE, media.Timeline.linear(0.0, len(rx), RATE), offsets)
    missing = [i for i, (_, lat) in enumerate(got) if lat is None]
    assert missing == [5, 6, 7, 8], got


def test_a_timeline_from_late_arrivals_keeps_the_earliest():
    rec = media.TrackRecorder()
    for i in range(500):  # 10 ms frames; every 7th arrived 80 ms late (a busy loop)
        rec._frames.append(np.zeros(160, np.int16))
        rec._arrived.append(100.0 + (i + 1) * 0.01 + (0.08 if i % 7 == 0 else 0.0))
    _, clock = rec.pcm_and_clock()
    assert abs(float(clock.time_at(0)) - 100.0) < 1e-6 and abs(float(clock.time_at(RATE)) - 101.0) < 1e-6


def _speaker(loud_s: float, total_s: float) -> Recording:
    t = np.arange(int(total_s * RATE)) / RATE
    pcm = (3000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    pcm[int(loud_s * RATE):] = 0
    return Recording(pcm, RATE, origin=10.0)


def test_the_speaker_stopped_at_the_second_it_went_silent():
    why = media.speaker_stopped(_speaker(20.0, 40.0), 14.0, 50.0)
    assert why == "the speaker stopped at 20 s (16 s into the call): silent from there to the call's end at 36 s"
    assert media.speaker_stopped(_speaker(40.0, 40.0), 14.0, 50.0) is None


def test_a_speaker_recording_that_ends_early_is_a_stop():
    why = media.speaker_stopped(_speaker(30.0, 30.0), 14.0, 50.0)
    assert why.startswith("the speaker stopped at 30 s (26 s into the call): its recording ends 10 s before")


def test_loss_over_a_sliding_window_and_overall():
    s = [media.LossSample(t, 50 * t - lost, lost) for t, lost in ((0, 0), (2, 2), (4, 2), (6, 2), (12, 2))]
    pts, overall = media.loss_series(s, 0.0, window_s=4.0)
    # each point: since the last sample at least 4 s before it (or the first)
    assert [(t, round(v, 2)) for t, v in pts] == [(2, 2.0), (4, 1.0), (6, 0.0), (12, 0.0)]
    assert overall == 100 * 2 / 600
    assert media.loss_series(s[:1], 0.0) == ([], None)


def test_a_late_packet_taking_back_a_loss_shows_no_negative_loss():
    s = [media.LossSample(0, 0, 0), media.LossSample(2, 97, 3), media.LossSample(4, 200, 0)]
    pts, overall = media.loss_series(s, 0.0, window_s=1.0)
    assert min(v for _, v in pts) == 0.0 and overall == 0.0


def test_the_published_track_made_frame_by_frame_is_the_signal():
    pub = media.MarkerPublisher(12.0)
    whole = media.signal(12.0, pub.RATE, 1000.0, pub.offsets)
    made = np.concatenate([pub.chunk(p, pub.FRAME) for p in range(0, len(whole), pub.FRAME)])[:len(whole)]
    assert np.abs(made.astype(int) - whole).max() <= 1


def test_markers_are_followed_when_the_latency_drifts_through_the_call():
    # a busy device: the latency grows from 0.2 s to 0.8 s over a minute, as a stalled loop's backlog would
    seconds = 60.0
    offsets = media.marker_offsets(seconds)
    c = media.CHIRP_AMPLITUDE * media.chirp(RATE)
    rx = np.random.default_rng(5).normal(0, 300, int((seconds + 2) * RATE))
    drift = {o: 0.2 + 0.6 * o / seconds for o in offsets}
    for o, lat in drift.items():
        i = int((o + lat) * RATE)
        rx[i:i + len(c)] += 32767 * c
    got = media.find_markers(rx.astype(np.int16), RATE, media.Timeline.linear(0.0, len(rx), RATE), offsets)
    assert len(got) >= len(offsets) - 2
    assert all(lat is not None and abs(lat - drift[s]) <= 0.002 for s, lat in got), \
        [(round(s), lat and round(lat, 3)) for s, lat in got]
