"""device/rtc/logs.py: what websockets (and we) log holds no token, key or credential header."""

from __future__ import annotations

import json
import logging

import pytest
from websockets.frames import Frame, Opcode

from lkdevice.rtc.logs import RedactSecrets, frame_summary, websocket_logger
from tests.jwt_shapes import unsigned_jwt

TOKEN = unsigned_jwt({"sub": "esp32", "video": {"room": "r"}}, b"signature-that-must-never-be-logged")
SIGNATURE = TOKEN.rsplit(".", 1)[1]
KEY = "resume-key-0123456789abcdefghij"


def formatted(msg: str, *args, exc_info=None) -> str:
    record = logging.LogRecord("websockets.client", logging.DEBUG, __file__, 1, msg, args, exc_info)
    assert RedactSecrets().filter(record) is True  # rewritten, never dropped
    return logging.Formatter("%(message)s").format(record)


@pytest.mark.parametrize("name", ["Authorization", "authorization", "Proxy-Authorization", "Cookie", "Set-Cookie"])
@pytest.mark.parametrize("direction", [">", "<"])
def test_credential_headers_lose_their_value(name, direction):
    line = formatted(f"{direction} %s: %s", name, f"Bearer {TOKEN}")
    assert line == f"{direction} {name}: <redacted>"


def test_other_headers_are_kept():
    assert formatted("> %s: %s", "User-Agent", "websockets/17") == "> User-Agent: websockets/17"


@pytest.mark.parametrize("msg", [{"t": "hello", "v": 1, "token": TOKEN, "codec": "ulaw"},
                                 {"t": "welcome", "session": "s", "key": KEY, "participants": []},
                                 {"t": "resume", "v": 1, "session": "s", "key": KEY},
                                 {"t": "token", "token": TOKEN}])
def test_text_frames_show_their_type_and_length_only(msg, monkeypatch):
    monkeypatch.setattr(Frame, "MAX_LOG_SIZE", 100000)  # websockets would log the whole payload
    data = json.dumps(msg).encode()
    line = formatted("> %s", Frame(Opcode.TEXT, data))
    assert line == f"> TEXT t={msg['t']} [{len(data)} bytes]"


def test_binary_frames_show_their_length_only():
    data = b"\x12\x80\x03" + TOKEN.encode()  # a protobuf refresh_token: mostly UTF-8
    assert formatted("< %s", Frame(Opcode.BINARY, data)) == f"< BINARY [{len(data)} bytes]"
    assert frame_summary(Frame(Opcode.TEXT, b"not json", fin=False)) == "TEXT [8 bytes, continued]"


def test_control_frames_keep_websockets_own_text():
    close = Frame(Opcode.CLOSE, b"\x03\xe8bye")
    assert formatted("> %s", close) == f"> {close}"


def test_a_jwt_anywhere_becomes_a_placeholder():
    assert TOKEN not in formatted("joining with %s", TOKEN)
    assert TOKEN not in formatted(f"joining with {TOKEN}")
    assert formatted("%(t)s", {"t": TOKEN}) == "<token>"


def test_a_traceback_is_redacted():
    try:
        raise ValueError(f"refused: {TOKEN}")
    except ValueError as exc:
        line = formatted("failed", exc_info=(type(exc), exc, exc.__traceback__))
    assert "ValueError: refused: <token>" in line and SIGNATURE not in line


def test_websocket_logger_protects_both_sides_once():
    for _ in range(3):
        client = websocket_logger("client")
    server = logging.getLogger("websockets.server")
    assert client is logging.getLogger("websockets.client")
    assert sum(isinstance(f, RedactSecrets) for f in client.filters) == 1
    assert sum(isinstance(f, RedactSecrets) for f in server.filters) == 1
