"""Secrets stay out of logs, at every level.

websockets logs at DEBUG every handshake header (the signal connection's
`Authorization: Bearer <token>`) and the start and end of every frame (up to
all of it with WEBSOCKETS_MAX_LOG_SIZE): a device's hello holds its token, a
welcome or resume its resume key, LiveKit's refresh_token message a fresh
token. `RedactSecrets` rewrites such records before any handler sees them:
credential headers keep their name and lose their value, data frames show
their kind, message type and length but no payload, and any JWT left in a
message or traceback becomes `<token>`.

`websocket_logger(side)` installs it on websockets' own loggers (both sides,
once) and returns the one to hand to `connect()` or `serve()`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from websockets.frames import Frame, Opcode

from .errors import redact_tokens

_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_HEADER_LINES = frozenset({"> %s: %s", "< %s: %s"})
_DATA_OPCODES = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})
_MESSAGE_TYPE = re.compile(rb'^\s*\{\s*"t"\s*:\s*"([a-z_]{1,16})"')
_formatter = logging.Formatter()


def frame_summary(frame: Frame) -> str:
    """A frame as a log may show it: kind and length; for a device-protocol text frame, its type."""
    if frame.opcode not in _DATA_OPCODES:
        return str(frame)  # ping, pong, close: no payload of ours
    head = bytes(frame.data[:40])
    m = _MESSAGE_TYPE.match(head) if frame.opcode is Opcode.TEXT else None
    kind = f" t={m.group(1).decode()}" if m else ""
    return f"{frame.opcode.name}{kind} [{len(frame.data)} bytes{'' if frame.fin else ', continued'}]"


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, Frame):
        return frame_summary(arg)
    if isinstance(arg, str):
        return redact_tokens(arg)
    return arg


class RedactSecrets(logging.Filter):
    """Rewrites a record so that it holds no token, key or credential header."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            if (record.msg in _HEADER_LINES and len(args) == 2
                    and str(args[0]).lower() in _CREDENTIAL_HEADERS):
                record.args = (args[0], "<redacted>")
            else:
                record.args = tuple(_redact_arg(a) for a in args)
        elif isinstance(args, dict):
            record.args = {k: _redact_arg(v) for k, v in args.items()}
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        if record.exc_info and not record.exc_text:
            # formatted here, once, so a handler prints the redacted text
            record.exc_text = redact_tokens(_formatter.formatException(record.exc_info))
        return True


_filter = RedactSecrets()


def protect(logger: logging.Logger) -> logging.Logger:
    """Install the filter on logger (once)."""
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(_filter)
    return logger


def websocket_logger(side: str) -> logging.Logger:
    """websockets' logger for `side` ("client" or "server"), with secrets redacted on both sides."""
    for s in ("client", "server"):
        protect(logging.getLogger(f"websockets.{s}"))
    return logging.getLogger(f"websockets.{side}")
