"""The fuzz's cases and its ear: the answers it expects are the spec's, and its gap measure sees a gap."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from lkdevice import device_protocol as dp
from lkdevice.hil.audio import CODE_S, code_of, code_tone
from lkdevice.hil.fuzz import CodeWatch, Stats
from lkdevice.hil.fuzz_cases import CLOSE_FOR, FirstFrames, SessionFrames, answer_of_first, break_field


@pytest.mark.parametrize("text, code", [
    ('{"t":"hello","v":1,"token":"x","codec":"pcm16"}', dp.E_TOKEN),
    ('{"t":"hello","v":2,"token":"x","codec":"pcm16"}', dp.E_VERSION),
    ('{"t":"hello","v":1,"token":"x","codec":"opus"}', dp.E_CODEC),
    ('{"t":"hello","v":"1","token":"x","codec":"pcm16"}', dp.E_MALFORMED),
    ('{"t":"resume","v":1,"session":"s","key":"k"}', dp.E_SESSION),
    ('{"t":"ping"}', dp.E_STATE),
    ('[]', dp.E_MALFORMED),
    ("[" * 3000 + "]" * 3000, dp.E_MALFORMED),
])
def test_a_first_frames_answer_is_the_specs(text, code):
    assert answer_of_first(text)[0] == code


def test_every_fatal_code_has_the_specs_close():
    assert CLOSE_FOR[dp.E_TOO_LARGE] == 4413 and CLOSE_FOR[dp.E_TOKEN] == 4401
    assert CLOSE_FOR[dp.E_SESSION] == 4404 and CLOSE_FOR[dp.E_MALFORMED] == 4400


def test_a_broken_field_never_decodes():
    rng = random.Random(3)
    bases = [{"t": "hello", "v": 1, "token": "x", "codec": "pcm16"}, {"t": "mute", "muted": True},
             {"t": "rpc", "id": "r", "to": "p", "method": "m"}, {"t": "attributes", "attributes": {}}]
    for _ in range(2000):
        _, msg = break_field(rng.choice(bases), rng)
        with pytest.raises(dp.ProtocolError):
            dp.decode_message(json.dumps(msg).encode(), dp.DEVICE_MESSAGES)


def test_cases_are_bounded_and_seeded():
    a = [FirstFrames("tok", random.Random(7)).case() for _ in range(300)]
    b = [FirstFrames("tok", random.Random(7)).case() for _ in range(300)]
    assert [c.data for c in a[:50]] == [c.data for c in b[:50]]
    s = SessionFrames(random.Random(7))
    for c in a + [s.case(True, True) for _ in range(3000)]:
        assert len(c.data) <= 5 * dp.MAX_TEXT_FRAME
        assert c.expect or c.close or c.reply or c.fatal is False  # silent only when the spec takes it silently


def test_no_control_budget_means_no_counted_control_message():
    s = SessionFrames(random.Random(1))
    assert all(s.case(False, False).control_tokens == 0 for _ in range(3000))


def test_code_tone_is_read_back_frame_by_frame():
    pcm = code_tone(1.0)
    codes = [code_of(pcm[i:i + 160], 16000) for i in range(0, len(pcm) - 159, 160)]
    assert codes[:6] == [0, 0, 1, 1, 2, 2] and codes[38:42] == [19, 19, 0, 0]


def _heard(pcm: np.ndarray, start: float = 100.0) -> CodeWatch:
    w = CodeWatch()
    for i in range(0, len(pcm) - 159, 160):
        w.feed(start + i / 16000, code_of(pcm[i:i + 160], 16000))
    return w


def test_the_watch_sees_a_stall_that_concealment_fills_with_the_last_frame():
    pcm = code_tone(2.0)
    n = int(CODE_S * 16000)
    frozen = np.tile(pcm[20 * n:21 * n], 15)  # 300 ms of the same 20 ms again, as a jitter buffer repeats it
    w = _heard(np.concatenate([pcm[:21 * n], frozen, pcm[21 * n:]]))
    gaps = np.diff(w.between(0, 1e9)[:, 0]) * 1000
    assert 300 <= gaps.max() <= 330 and w.skipped == 0


def test_the_watch_counts_what_never_came():
    pcm = code_tone(2.0)
    n = int(CODE_S * 16000)
    w = _heard(np.concatenate([pcm[:30 * n], pcm[33 * n:]]))  # three frames lost
    assert w.skipped == 3
    assert np.diff(w.between(0, 1e9)[:, 0]).max() * 1000 <= 25


def test_stats_keep_a_bounded_account():
    st = Stats()
    case = FirstFrames("tok", random.Random(1)).case()
    for i in range(500):
        st.fault(case, f"fault {i}")
        st.answered("malformed", i / 1000)
    assert st.wrong_n == 500 and len(st.wrong) == 50
    assert st.latency_ms(0.5) == pytest.approx(251, abs=2)


def test_a_too_large_case_is_over_the_limit_whatever_its_pad():
    """(A pad drawn just under the limit made a frame of 16 377 bytes: malformed, not too_large; once in 300 000.)"""
    rng = random.Random(5)
    first, sess = FirstFrames("tok", rng), SessionFrames(rng)
    cases = [first.case() for _ in range(20000)] + [sess.case(True, True) for _ in range(20000)]
    big = [c for c in cases if c.expect == {dp.E_TOO_LARGE} and not c.binary]
    assert big and all(len(c.data.encode()) > dp.MAX_TEXT_FRAME for c in big)
