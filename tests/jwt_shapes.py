"""JWT-shaped strings for tests that need a token's form, not a signed token.

Built at run time from their claims, so that no token sits in the repository."""

from __future__ import annotations

import base64
import json


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(claims: dict | bytes, signature: bytes = b"sig") -> str:
    """header.payload.signature, the payload `claims` (a dict, or raw bytes as they are)."""
    payload = claims if isinstance(claims, bytes) else json.dumps(claims, separators=(",", ":")).encode()
    header = json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode()
    return f"{b64url(header)}.{b64url(payload)}.{b64url(signature)}"
