"""The receive jitter buffer (lkdevice.rtc.jitter), driven by a fake clock.

A sender makes a 20 ms Opus packet every 20 ms (RTP clock 48 kHz); the tests
deliver them with chosen arrival times and pop one frame per 20 ms tick, as
AudioStream's playout clock does.
"""

from __future__ import annotations

import random

import pytest

from lkdevice.rtc.jitter import Frame, JitterBuffer, Lost, Silence

F = 960  # samples per 20 ms packet at 48 kHz
TICK = 0.02
TS0 = 0xFFFF_F000  # near the 32-bit wrap, so unwrapping is exercised too
SEQ0 = 65530


def packet(i: int, *, ts_extra: int = 0) -> tuple[int, int, bytes]:
    return (SEQ0 + i) & 0xFFFF, (TS0 + i * F + ts_extra) & 0xFFFF_FFFF, bytes([i & 0xFF])


def run(jb: JitterBuffer, arrivals: dict[int, float], ticks: int, *, start: float = 0.0,
        ts_extra: dict[int, int] | None = None) -> list:
    """Push packet i at arrivals[i]; pop once every TICK from `start`. Returns what each pop gave."""
    events = sorted(arrivals.items(), key=lambda kv: kv[1])
    out = []
    k = 0
    for n in range(ticks):
        now = start + n * TICK
        while k < len(events) and events[k][1] <= now:
            i, t = events[k]
            seq, ts, payload = packet(i, ts_extra=(ts_extra or {}).get(i, 0))
            jb.push(seq, ts, payload, t)
            k += 1
        out.append(jb.pop(now))
    return out


def played(out: list) -> list[int]:
    return [o.payload[0] for o in out if isinstance(o, Frame)]


def kinds(out: list) -> str:
    return "".join("F" if isinstance(o, Frame) else "L" if isinstance(o, Lost) else "S" for o in out)


def steady(n: int, offset: float = 0.0005) -> dict[int, float]:
    return {i: i * TICK + offset for i in range(n)}


def test_clean_stream_plays_every_packet_in_order_after_the_baseline_delay():
    jb = JitterBuffer()
    out = run(jb, steady(50), 60)
    assert played(out) == list(range(50))
    first = kinds(out).index("F")
    assert first * TICK <= jb.min_delay + TICK  # starts within a tick of the baseline delay
    # nothing lost or concealed while packets kept coming
    assert "L" not in kinds(out)[first:first + 50]


def test_a_lost_packet_is_concealed_and_the_rest_plays_on_time():
    jb = JitterBuffer()
    arr = steady(30)
    del arr[10]
    out = run(jb, arr, 40)
    k = kinds(out)
    first = k.index("F")
    assert k[first:first + 30] == "F" * 10 + "L" + "F" * 19
    assert played(out) == [i for i in range(30) if i != 10]
    assert jb.stats["lost"] == 1


def test_reordered_packets_play_in_sequence_order():
    jb = JitterBuffer()
    arr = steady(20)
    arr[5], arr[6] = arr[6], arr[5]  # 6 overtakes 5 by one packet time
    out = run(jb, arr, 30)
    assert played(out) == list(range(20))
    assert jb.stats["lost"] == 0


def test_a_dtx_gap_is_silence_and_speech_after_it_keeps_its_timing():
    # packets 0..9, then the sender is silent for 1 s (DTX: seq continues, RTP time jumps by 50 frames)
    jb = JitterBuffer()
    arr = {i: i * TICK + 0.0005 for i in range(10)}
    extra = {}
    for i in range(10, 20):
        arr[i] = (i + 50) * TICK + 0.0005
        extra[i] = 50 * F
    out = run(jb, arr, 90, ts_extra=extra)
    k = kinds(out)
    first = k.index("F")
    assert played(out) == list(range(20))
    gap = k[first + 10:first + 60]
    assert len(gap) == 50 and set(gap) <= {"L", "S"}
    # a few frames of concealment at most (the buffer cannot tell a pause from a loss), then silence
    assert gap.count("L") <= jb.conceal_limit and gap.endswith("S" * 40)
    # speech resumes exactly 50 frames later: the delay was kept through the pause
    assert k[first + 60:first + 70] == "F" * 10


def test_a_dtx_gap_whose_end_is_already_buffered_is_all_silence():
    # a deep buffer holds the first packet after the pause when the pause starts: no concealment
    jb = JitterBuffer(min_delay=0.3)
    arr = {0: 0.0005, 1: 0.0205, 2: 0.0405, 3: 0.2605, 4: 0.2805}
    out = run(jb, arr, 40, ts_extra={3: 10 * F, 4: 10 * F})
    k = kinds(out).lstrip("S")
    assert k.startswith("FFF" + "S" * 10 + "FF")


def test_a_jitter_burst_raises_the_target_and_it_returns_to_baseline():
    jb = JitterBuffer()
    rnd = random.Random(7)
    arr = steady(500)
    for i in range(100, 150):  # one second of up to 80 ms extra delay
        arr[i] += rnd.uniform(0, 0.08)
    targets = []

    def sample(n):
        targets.append(jb.target_delay)

    events = sorted(arr.items(), key=lambda kv: kv[1])
    k = 0
    out = []
    for n in range(520):
        now = n * TICK
        while k < len(events) and events[k][1] <= now:
            i, t = events[k]
            jb.push(*packet(i), t)
            k += 1
        out.append(jb.pop(now))
        sample(n)
    base = jb.min_delay
    assert targets[90] == pytest.approx(base)
    assert max(targets[100:160]) > base + 0.05  # followed the burst
    # back to the baseline within 2 s of the burst's end (packet 150 is due at 3.0 s)
    assert targets[250] == pytest.approx(base)
    # and the playout delay itself came back: latency of the last frames is near the baseline
    delay = jb.current_delay(519 * TICK)
    assert delay < base + 2 * TICK


def test_late_burst_after_an_outage_is_played_then_the_delay_shrinks_back():
    # 500 ms outage where the network queues packets and then delivers them at once
    jb = JitterBuffer()
    arr = steady(300)
    for i in range(100, 125):
        arr[i] = 125 * TICK + 0.0005
    run(jb, arr, 320)
    assert jb.current_delay(319 * TICK) < jb.min_delay + 2 * TICK
    # the buffer never held more than its bound
    assert jb.stats["max_held"] <= jb.capacity


def test_bounded_under_a_flood():
    jb = JitterBuffer(capacity=64)
    for i in range(20000):
        jb.push(*packet(i), 0.0001 * i)
        assert len(jb) <= 64
    assert jb.stats["overflow"] == 20000 - 64
    assert jb.estimator_size() <= 2 * 1024


def test_an_unread_buffer_is_bounded_and_a_late_reader_starts_at_the_newest_audio():
    jb = JitterBuffer(capacity=64)
    for i in range(3000):  # a minute of audio nobody reads
        jb.push(*packet(i), i * TICK)
    assert len(jb) <= 64
    now = 3000 * TICK
    out = [jb.pop(now + n * TICK) for n in range(5)]
    frames = [o for o in out if isinstance(o, Frame)]
    assert frames and frames[0].payload[0] >= (3000 - 5) & 0xFF
    assert jb.current_delay(now + 4 * TICK) < jb.min_delay + 2 * TICK


def test_packets_from_before_the_playout_point_are_dropped_as_late():
    jb = JitterBuffer()
    arr = steady(20)
    arr[8] = 19 * TICK  # 220 ms late: its slot was concealed long ago
    out = run(jb, arr, 30)
    assert 8 not in played(out)
    assert jb.stats["late"] == 1


def test_reset_forgets_the_old_stream():
    jb = JitterBuffer()
    run(jb, steady(10), 10)
    jb.reset()
    assert len(jb) == 0
    jb.push(100, 12345, b"x", 1.0)
    out = [jb.pop(1.0 + n * TICK) for n in range(4)]
    assert any(isinstance(o, Frame) and o.payload == b"x" for o in out)


def test_start_time_is_the_first_packets_arrival_plus_the_target():
    jb = JitterBuffer()
    assert jb.start_time() is None
    jb.push(*packet(0), 1.0)
    assert jb.start_time() == pytest.approx(1.0 + jb.min_delay)
    assert isinstance(jb.pop(1.0 + jb.min_delay - 0.001), Silence)
    assert isinstance(jb.pop(1.0 + jb.min_delay), Frame)
    assert jb.start_time() is None


def test_a_delay_stretched_by_late_packets_comes_back_in_the_next_pause():
    # a 45 ms delay spike stretches playout (the late packets are played, not cut);
    # the sender's next pause (DTX) is where the extra delay is given back, for free
    jb = JitterBuffer()
    arr = steady(100)
    for i in range(40, 50):
        arr[i] += 0.045
    extra = {}
    for i in range(60, 100):  # a 1 s pause after packet 59
        arr[i] += 1.0
        extra[i] = 50 * F
    out = run(jb, arr, 160, ts_extra=extra)
    assert played(out) == list(range(100))
    assert jb.current_delay(159 * TICK) < jb.min_delay + 0.01  # as before the spike


def test_next_held_is_the_packet_right_after_a_lost_frame_and_only_that():
    """What AudioStream takes FEC from: after one lost frame, the held packet that follows it;
    after the first of two lost frames, nothing (its FEC holds the second, not the first)."""
    jb = JitterBuffer(min_delay=0.06)  # three packets held ahead of playout
    seen = []
    for n in range(12):
        now = n * TICK
        if n in (0, 1, 3, 6, 7, 8, 9, 10, 11):  # 2 lost; 4 and 5 lost
            jb.push(*packet(n), now)
        item = jb.pop(now)
        if isinstance(item, Silence):
            continue  # not started yet
        if isinstance(item, Lost):
            nxt = jb.next_held()
            seen.append(("Lost", nxt.payload[0] if nxt is not None else None))
        else:
            seen.append(("Frame", item.payload[0]))
    assert seen[:7] == [("Frame", 0), ("Frame", 1), ("Lost", 3), ("Frame", 3),
                        ("Lost", None), ("Lost", 6), ("Frame", 6)]
