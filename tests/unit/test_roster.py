"""device/gateway/roster.py: welcome and resumed fit the device's max_text, and say what they left out."""

from __future__ import annotations

import json

import pytest

from lkdevice import device_protocol as dp
from lkdevice.gateway.roster import fit, fit_participant, size


def participant(i: int, kind: str = "standard", attr: int = 0) -> dict:
    return {"sid": f"PA_{i:04d}", "identity": f"user-{i}", "name": f"User {i}", "kind": kind,
            "attributes": {"profile": "x" * attr} if attr else {}}


def welcome(participants: list[dict], metadata: str = "") -> dict:
    return {"t": "welcome", "v": 1, "session": "s" * 16, "key": "k" * 32, "grace_s": 15, "codec": "ulaw",
            "room": {"name": "room", "sid": "RM_x", "metadata": metadata},
            "me": {"sid": "PA_me", "identity": "esp32", "name": ""}, "participants": participants}


def test_a_message_that_fits_is_sent_as_it_is():
    msg = welcome([participant(i, attr=20) for i in range(3)])
    assert fit(msg, dp.DEFAULT_DEVICE_TEXT) is msg


@pytest.mark.parametrize("max_text", [dp.MIN_DEVICE_TEXT, 2048, dp.DEFAULT_DEVICE_TEXT, dp.MAX_TEXT_FRAME])
@pytest.mark.parametrize("n", [5, 60, 500])
def test_a_big_room_is_trimmed_to_fit_and_says_so(max_text, n):
    people = [participant(i, "agent" if i in (1, n - 2) else "standard", attr=300) for i in range(n)]
    msg = welcome(people)
    out = fit(msg, max_text)
    if size(msg) <= max_text:
        assert out is msg
        return
    assert size(out) <= max_text
    dp.validate(json.loads(json.dumps(out)), dp.GATEWAY_MESSAGES)
    listed = out["participants"]
    truncated = out["truncated"]
    assert len(listed) + truncated.get("participants", 0) == n
    assert {"user-1", f"user-{n - 2}"} <= {p["identity"] for p in listed}, "agents go last"
    assert truncated.get("attributes", 0) == sum("attributes" not in p for p in listed)
    order = [p["identity"] for p in people]
    at = [order.index(p["identity"]) for p in listed]
    assert at == sorted(at), "participants keep the room's order"
    assert msg["participants"] == people, "the input was changed"


def test_attributes_go_before_participants():
    people = [participant(i, attr=200) for i in range(4)]
    out = fit(welcome(people), dp.MIN_DEVICE_TEXT)
    assert len(out["participants"]) == 4 and "participants" not in out["truncated"]
    assert out["truncated"]["attributes"] >= 1


def test_large_room_metadata_is_left_out_before_participants():
    out = fit(welcome([participant(0)], metadata="m" * 3000), dp.MIN_DEVICE_TEXT)
    assert out["room"]["metadata"] == "" and out["truncated"] == {"metadata": True}
    assert [p["identity"] for p in out["participants"]] == ["user-0"]


def test_resumed_is_trimmed_the_same_way():
    msg = {"t": "resumed", "session": "s", "participants": [participant(i, attr=100) for i in range(40)]}
    out = fit(msg, dp.MIN_DEVICE_TEXT)
    assert size(out) <= dp.MIN_DEVICE_TEXT and out["truncated"]["participants"] > 0


def test_a_message_too_large_even_bare_is_refused():
    msg = welcome([])
    msg["me"]["identity"] = "i" * 2000
    assert fit(msg, dp.MIN_DEVICE_TEXT) is None


def test_joined_loses_attributes_rather_than_the_participant():
    msg = {"t": "joined", "p": participant(7, attr=3000)}
    out = fit_participant(msg, dp.MIN_DEVICE_TEXT)
    assert out["p"]["identity"] == "user-7" and "attributes" not in out["p"]
    assert out["truncated"] == {"attributes": 1} and size(out) <= dp.MIN_DEVICE_TEXT
    small = {"t": "joined", "p": participant(8, attr=10)}
    assert fit_participant(small, dp.MIN_DEVICE_TEXT) is small
    huge = {"t": "joined", "p": {**participant(9), "name": "n" * 2000}}
    assert fit_participant(huge, dp.MIN_DEVICE_TEXT) is None
