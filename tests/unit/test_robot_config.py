"""The robot's TOML config: what it reads, and one line naming the key when it is wrong."""

from __future__ import annotations

import argparse

import pytest

from lkdevice.cli import build_parser
from lkdevice.robot.config import ConfigError, apply_flags, load, parse
from lkdevice.robot.options import VideoOptions

FULL = """
[server]
url = "wss://robots.example.com"
token_url = "https://tokens.example.com/token"
device_id = "b827eb4c1e01"
device_key_file = "/etc/lkdevice/device_key"
room = "lab"

[audio]
backend = "sounddevice"
input_device = "USB"
output_device = 3
output_rate = 44100
half_duplex = true

[camera]
source = "v4l2:/dev/video0"
codec = "h264"
size = "1280x720"
fps = 15
bitrate_kbps = 2500

[plugins]
load = ["sim", "mybot.arm:Arm"]
watchdog_s = 0.25
[plugins.sim]
battery = 0.8

[service]
log_json = true
"""


def test_a_full_file():
    cfg = parse(FULL)
    assert cfg.url == "wss://robots.example.com" and cfg.room == "lab"
    assert cfg.tokens.token_url == "https://tokens.example.com/token" and cfg.tokens.device_id == "b827eb4c1e01"
    assert cfg.audio.backend == "sounddevice" and cfg.audio.input_device == "USB" and cfg.audio.output_device == 3
    assert cfg.audio.output_rate == 44100 and cfg.audio.input_rate is None and cfg.audio.half_duplex
    assert cfg.video == VideoOptions(camera="v4l2:/dev/video0", codec="h264", width=1280, height=720, fps=15,
                                     bitrate_kbps=2500)
    assert cfg.plugins == ["sim", "mybot.arm:Arm"] and cfg.plugin_settings == {"sim": {"battery": 0.8}}
    assert cfg.watchdog_s == 0.25 and cfg.log_json


def test_an_empty_file_is_the_defaults():
    cfg = parse("")
    assert cfg.url is None and cfg.video.camera == "none" and cfg.audio.backend == "none"
    assert cfg.plugins == [] and cfg.watchdog_s == 0.5


@pytest.mark.parametrize("text,message", [
    ("[audio]\nbackend = \"alsa\"", "robot.toml: audio.backend: 'alsa' is not one of sounddevice, wav, none"),
    ("[audio]\nbackned = \"wav\"", "robot.toml: audio.backned: unknown key"),
    ("[camera]\nfps = \"30\"", "robot.toml: camera.fps: must be an integer, not '30'"),
    ("[camera]\nfps = true", "robot.toml: camera.fps: must be an integer, not True"),
    ("[camera]\nsize = \"640*480\"", "robot.toml: camera.size: '640*480' is not WIDTHxHEIGHT (e.g. 640x480)"),
    ("[camera]\nsource = \"usb\"", "robot.toml: camera.source: 'usb' is not one of test, picamera2, "
                                   "v4l2:/dev/videoN, none"),
    ("[camera]\ncodec = \"av1\"", "robot.toml: camera.codec: 'av1' is not one of vp8, h264, passthrough, auto"),
    ("[server]\nurl = \"ws://x\"\ntoken = \"a\"\ntoken_file = \"/t\"",
     "robot.toml: server.token_file: give one token source, not token and token_file"),
    ("[server]\nurl = \"ws://x\"", "robot.toml: server.url: needs a token source: token, token_file or token_url"),
    ("[server]\nurl = \"x.example.com\"\ntoken = \"t\"",
     "robot.toml: server.url: must be a ws://, wss://, http:// or https:// URL, not 'x.example.com'"),
    ("[server]\ntoken_url = \"https://t/token\"\ndevice_key = \"k\"",
     "robot.toml: server.device_id: token_url needs the device_id it sends as X-Device-Id"),
    ("[plugins]\nload = \"sim\"", "robot.toml: plugins.load: must be a list, not 'sim'"),
    ("[plugins]\nwatchdog_s = 0", "robot.toml: plugins.watchdog_s: 0 is not between 0.05 and 60 seconds"),
    ("[plugins]\nbattery = 1", "robot.toml: plugins.battery: unknown key (plugin settings go in a table: "
                               "[plugins.NAME])"),
    ("[camra]\nfps = 30", "robot.toml: camra: unknown key"),
    ("audio = 3", "robot.toml: audio: must be a table"),
    ("[audio\nbackend = 1", "robot.toml: not valid TOML: Expected ']' at the end of a table declaration "
                            "(at line 1, column 7)"),
])
def test_a_mistake_is_one_line_naming_the_key(text, message):
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_an_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere.toml: No such file or directory$"):
        load(str(tmp_path / "nowhere.toml"))


def robot_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["robot", *argv])


def test_flags_override_the_file(tmp_path):
    cfg = parse(FULL)
    out = apply_flags(cfg, robot_args("--url", "ws://127.0.0.1:7880", "--token", "tok", "--camera", "test",
                                      "--size", "320x240", "--fps", "10", "--bitrate", "300", "--audio", "wav",
                                      "--play", "tone:440", "--plugin", "sim", "--duration", "3", "--watchdog", "1"))
    assert out.url == "ws://127.0.0.1:7880" and out.tokens.token == "tok" and out.tokens.token_url is None
    assert out.video == VideoOptions(camera="test", codec="h264", width=320, height=240, fps=10, bitrate_kbps=300)
    assert out.audio.backend == "wav" and out.audio.play == "tone:440" and out.audio.half_duplex  # kept
    assert out.plugins == ["sim"] and out.duration == 3 and out.watchdog_s == 1
    assert cfg.video.camera == "v4l2:/dev/video0"  # the file's config is not changed


def test_flags_left_out_keep_the_file():
    out = apply_flags(parse(FULL), robot_args())
    assert out == parse(FULL)


def test_play_or_record_alone_mean_the_wav_backend():
    assert apply_flags(parse(""), robot_args("--record", "x.wav")).audio.backend == "wav"
    assert apply_flags(parse(""), robot_args("--play", "tone:440", "--audio", "none")).audio.backend == "none"


@pytest.mark.parametrize("flag,value,message", [
    ("--size", "big", "--size: 'big' is not WIDTHxHEIGHT (e.g. 640x480)"),
    ("--camera", "usb", "--camera: 'usb' is not one of test, picamera2, v4l2:/dev/videoN, none"),
])
def test_a_bad_flag_value_names_the_flag(flag, value, message):
    with pytest.raises(ValueError) as err:
        apply_flags(parse(""), robot_args(flag, value))
    assert str(err.value) == message
