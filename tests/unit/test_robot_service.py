"""The service side: sd_notify over a real unix datagram socket, the watchdog's clock, JSON logs."""

from __future__ import annotations

import io
import json
import logging
import os
import socket

from lkdevice.robot.service import JsonFormatter, Notifier, WatchdogClock, setup_logging
from lkdevice.robot.tokens import StaticToken  # noqa: F401  (imports without a sound card or camera)
from tests.jwt_shapes import unsigned_jwt

TOKEN = unsigned_jwt({"sub": "robot"}, b"signature-signature")


def test_notify_reaches_a_socket_by_path(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.enabled and n.watchdog_s == 2.0
        assert n.ready("connected to room lab")
        assert sock.recv(4096) == b"READY=1\nSTATUS=connected to room lab"
        n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        n.stopping("stopping: SIGTERM")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping: SIGTERM"
        n.close()


def test_notify_reaches_an_abstract_socket():
    name = f"lkdevice-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        n.status("reconnecting:\nserver gone")  # one datagram line per field, whatever the text holds
        assert sock.recv(4096) == b"STATUS=reconnecting: server gone"


def test_no_notify_socket_is_no_systemd():
    n = Notifier({})
    assert not n.enabled and n.watchdog_s is None and not n.ready("x")


def test_a_watchdog_meant_for_another_process_is_not_ours():
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_s is None


def test_a_gone_socket_is_counted_not_raised(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert not n.watchdog() and n.errors == 1


def test_the_watchdog_pings_at_half_its_period_and_only_after_progress():
    w = WatchdogClock(2.0)
    assert not w.due(0.0)  # nothing has happened yet
    w.progress(0.1)
    assert w.due(0.1)
    w.progress(0.5)
    assert not w.due(0.9)  # too soon
    assert w.due(1.1)
    assert not w.due(2.2)  # no progress since the last ping: systemd will restart us
    assert not w.due(5.0)
    w.progress(5.1)
    assert w.due(5.1)


def test_json_logs_are_one_object_a_line_and_hold_no_token():
    out = io.StringIO()
    setup_logging(True, stream=out)
    log = logging.getLogger("lkdevice.robot")
    log.info("joining with %s", TOKEN)
    log.warning("refused: token %s", TOKEN, extra={"room": "lab", "token_hint": TOKEN})
    try:
        raise RuntimeError(f"server said no to {TOKEN}")
    except RuntimeError:
        log.exception("failed")
    logging.getLogger("websockets.client").warning("> %s: %s", "Authorization", f"Bearer {TOKEN}")
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    assert all(TOKEN not in line and "c2lnbmF0dXJl" not in line for line in lines)
    assert records[0]["msg"] == "joining with <token>" and records[0]["level"] == "info"
    assert records[1]["room"] == "lab" and records[1]["token_hint"] == "<token>"
    assert "RuntimeError: server said no to <token>" in records[2]["exc"]
    assert records[3]["msg"] == "> Authorization: <redacted>"
    logging.getLogger().handlers.clear()


def test_json_formatter_fields():
    rec = logging.LogRecord("lkdevice.robot", logging.ERROR, __file__, 1, "x %d", (3,), None)
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "x 3" and out["level"] == "error" and out["logger"] == "lkdevice.robot"
    assert out["ts"].endswith("+00:00")


def test_a_reader_that_does_not_read_never_blocks_the_app(tmp_path):
    """A unix datagram queue holds a few messages (net.unix.max_dgram_qlen); a blocking
    send past that stalls the whole event loop: the robot froze in its live test."""
    import threading

    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        n = Notifier({"NOTIFY_SOCKET": path})
        results = []
        sender = threading.Thread(target=lambda: results.extend(n.watchdog() for _ in range(500)), daemon=True)
        sender.start()
        sender.join(5)
        assert not sender.is_alive(), "sd_notify blocked"
        assert results[0] and not results[-1] and n.errors > 0  # dropped, counted
        n.close()
