"""device/client.py token_claims: read the room from an access token before connecting."""

from __future__ import annotations

import base64
import json

import pytest

from lkdevice.rtc.room import token_claims
from lkdevice.rtc.errors import ConnectError, TokenRejected
from lkdevice.host_tools.tokens import mint_token


def test_reads_room_and_identity_from_minted_token():
    token = mint_token("devkey", "secret" * 8, identity="robot-1", room="kitchen", name="Robo",
                       attributes={"fw": "1.0"})
    claims = token_claims(token)
    assert claims["video"]["room"] == "kitchen"
    assert claims["video"]["roomJoin"] is True
    assert claims["sub"] == "robot-1"
    assert claims["iss"] == "devkey"
    assert claims["name"] == "Robo"
    assert claims["attributes"] == {"fw": "1.0"}


def test_does_not_need_the_secret():
    a = token_claims(mint_token("k", "one-secret" * 4, identity="a", room="r1"))
    b = token_claims(mint_token("k", "another-secret" * 4, identity="a", room="r1"))
    assert a["video"]["room"] == b["video"]["room"] == "r1"


@pytest.mark.parametrize("length", range(1, 5))
def test_payload_lengths_needing_padding(length):
    # base64url without padding: every remainder must decode
    room = "r" * length
    assert token_claims(mint_token("k", "s" * 32, identity="i" * length, room=room))["video"]["room"] == room


def test_hand_made_unsigned_token():
    payload = base64.urlsafe_b64encode(json.dumps({"video": {"room": "düsseldorf"}}).encode()).rstrip(b"=")
    assert token_claims(f"e30.{payload.decode()}.sig")["video"]["room"] == "düsseldorf"


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "a.!!!.c", "a." + base64.urlsafe_b64encode(b"[1,").decode()])
def test_non_jwt_is_token_rejected(token):
    with pytest.raises(TokenRejected) as info:
        token_claims(token)
    assert isinstance(info.value, ConnectError)
    assert "not a JWT" in info.value.reason


def test_payload_that_is_not_a_json_object_is_token_rejected():
    payload = base64.urlsafe_b64encode(b"[1]").rstrip(b"=").decode()
    with pytest.raises(TokenRejected):
        token_claims(f"e30.{payload}.sig")
