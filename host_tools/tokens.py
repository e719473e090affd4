"""Mint LiveKit access tokens for local development (HS256 JWT, pyjwt).

Only host tools mint tokens: devices and the gateway carry tokens, never secrets.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import jwt


def mint_token(
    api_key: str,
    api_secret: str,
    *,
    identity: str,
    room: str,
    name: str = "",
    ttl: float = 3600.0,
    not_before: float | None = None,
    can_publish: bool = True,
    can_subscribe: bool = True,
    can_publish_data: bool = True,
    can_update_own_metadata: bool = True,
    metadata: str = "",
    attributes: dict[str, str] | None = None,
    agent_name: str | None = None,
    kind: str | None = None,
    hidden: bool = False,
) -> str:
    now = time.time()
    claims: dict[str, Any] = {
        "iss": api_key,
        "sub": identity,
        "jti": identity,
        "nbf": int(not_before if not_before is not None else now - 5),
        "exp": int(now + ttl),
        "video": {
            "room": room,
            "roomJoin": True,
            "canPublish": can_publish,
            "canSubscribe": can_subscribe,
            "canPublishData": can_publish_data,
            "canUpdateOwnMetadata": can_update_own_metadata,
        },
    }
    if hidden:  # others never see it (an observer: `lkdevice demo` reading transcripts)
        claims["video"]["hidden"] = True
    if name:
        claims["name"] = name
    if metadata:
        claims["metadata"] = metadata
    if attributes:
        claims["attributes"] = dict(attributes)
    if kind:
        claims["kind"] = kind
    if agent_name:
        claims["roomConfig"] = {"agents": [{"agentName": agent_name}]}
    with warnings.catch_warnings():
        # the dev server's secret is short by design; real deployments use long ones
        warnings.simplefilter("ignore")
        return jwt.encode(claims, api_secret, algorithm="HS256")
