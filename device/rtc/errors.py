"""Typed failures. Every message says what happened and what to check."""

from __future__ import annotations

import re

# The server quotes the whole token back in its refusal text; tokens are secrets.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact_tokens(text: str) -> str:
    return _JWT.sub("<token>", text)


class LiveKitError(Exception):
    """Base of every error this client raises."""


class ConnectError(LiveKitError):
    """The room could not be joined."""


class TokenRejected(ConnectError):
    """The server refused the access token; `reason` is the server's own text."""

    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = redact_tokens(reason)
        super().__init__(f"token rejected by server (HTTP {status}): {self.reason}")


class ServerUnreachable(ConnectError):
    """Nothing answered at the URL within the connect timeout."""


class ProtocolError(LiveKitError):
    """The server sent something this client cannot understand."""


class Disconnected(LiveKitError):
    """The room is gone: left by us, removed by the server, or unrecoverable."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"disconnected: {reason}")


class DataTooLarge(LiveKitError):
    """A data packet exceeds what the data channel can carry."""


class RpcError(LiveKitError):
    """An RPC failed; `code` follows the LiveKit RPC error codes."""

    APPLICATION_ERROR = 1500
    CONNECTION_TIMEOUT = 1501
    RESPONSE_TIMEOUT = 1502
    RECIPIENT_DISCONNECTED = 1503
    RESPONSE_PAYLOAD_TOO_LARGE = 1504
    SEND_FAILED = 1505
    UNSUPPORTED_METHOD = 1400
    RECIPIENT_NOT_FOUND = 1401
    REQUEST_PAYLOAD_TOO_LARGE = 1402
    UNSUPPORTED_SERVER = 1403
    UNSUPPORTED_VERSION = 1404

    def __init__(self, code: int, message: str, data: str = ""):
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"RPC error {code}: {message}")
