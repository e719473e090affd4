"""What a deploy does to a Pi, as data: remote paths, the probe's verdict, the unit file, the commands.

No I/O here: `remote.py` runs these commands over SSH and feeds the answers back.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 on the host: the file is checked on the Pi only
    tomllib = None

SERVICE = "lkdevice-robot"
UNIT_PATH = f"/etc/systemd/system/{SERVICE}.service"
SUPPORTED_ARCHES = ("aarch64", "armv7l")
MIN_PYTHON = (3, 11)
# Pi OS names piwheels in /etc/pip.conf already; armv7 needs it (PyPI has few armv7 wheels)
PIWHEELS = "https://www.piwheels.org/simple"

# One shell line that tells us everything we check before touching the Pi.
# `python` is substituted; each answer is `key=value` on its own line.
PROBE = r"""
echo "arch=$(uname -m)"
echo "uid=$(id -u)"
echo "user=${USER:-$(id -un)}"
echo "home=$HOME"
( . /etc/os-release 2>/dev/null && echo "os=$ID" && echo "os_version=$VERSION_ID" && echo "codename=$VERSION_CODENAME" )
if command -v {python} >/dev/null 2>&1; then
  echo "python=$({python} -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)"
  echo "venv=$({python} -c 'import venv, ensurepip; print(1)' 2>/dev/null || echo 0)"
  echo "picamera2=$({python} -c 'import picamera2; print(1)' 2>/dev/null || echo 0)"
  echo "sounddevice=$({python} -c 'import sounddevice; print(1)' 2>/dev/null || echo 0)"
else
  echo "python="
fi
echo "portaudio=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p) | grep -q 'libportaudio\.so\.2' && echo 1 || echo 0)"
echo "systemctl=$(command -v systemctl >/dev/null 2>&1 && echo 1 || echo 0)"
echo "sudo=$( [ "$(id -u)" = 0 ] && echo root || (sudo -n true >/dev/null 2>&1 && echo 1 || echo 0))"
echo "pip_extra_index=$(grep -hs -E '^\s*extra-index-url' /etc/pip.conf ~/.config/pip/pip.conf ~/.pip/pip.conf \
  | head -1 | sed 's/.*=\s*//')"
"""


class DeployError(Exception):
    """A mistake the user can fix: printed as one line, no traceback."""


@dataclass(frozen=True)
class Target:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, text: str) -> "Target":
        user, at, rest = text.rpartition("@")
        if not at or not user or not rest:
            raise DeployError(f"target {text!r}: give it as USER@HOST (e.g. pi@raspberrypi.local)")
        host, port = rest, 22
        if rest.count(":") == 1:
            host, p = rest.split(":")
            if not p.isdigit():
                raise DeployError(f"target {text!r}: the port after ':' must be a number")
            port = int(p)
        return cls(user, host.strip("[]"), port)

    def __str__(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")


@dataclass(frozen=True)
class Probe:
    arch: str
    uid: int
    user: str
    home: str
    python: str
    has_venv: bool
    has_picamera2: bool
    has_systemctl: bool
    sudo: str  # "root", "1" (passwordless), "0"
    os: str = ""
    os_version: str = ""
    codename: str = ""
    pip_extra_index: str = ""
    has_sounddevice: bool = False
    has_portaudio: bool = True

    @classmethod
    def parse(cls, text: str) -> "Probe":
        kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        return cls(arch=kv.get("arch", "?"), uid=int(kv.get("uid", "-1") or -1), user=kv.get("user", ""),
                   home=kv.get("home", ""), python=kv.get("python", ""), has_venv=kv.get("venv") == "1",
                   has_picamera2=kv.get("picamera2") == "1", has_systemctl=kv.get("systemctl") == "1",
                   sudo=kv.get("sudo", "0"), os=kv.get("os", ""), os_version=kv.get("os_version", ""),
                   codename=kv.get("codename", ""), pip_extra_index=kv.get("pip_extra_index", ""),
                   has_sounddevice=kv.get("sounddevice") == "1", has_portaudio=kv.get("portaudio") != "0")

    @property
    def root(self) -> bool:
        return self.uid == 0


def check(probe: Probe, target: Target, python: str, *, any_arch: bool = False) -> list[str]:
    """Raise DeployError for what stops a deploy; return warnings for what only might."""
    warnings = []
    if probe.arch not in SUPPORTED_ARCHES:
        if probe.arch in ("armv6l",):
            raise DeployError(f"{target.host} is {probe.arch} (a Pi Zero or Pi 1): lkdevice needs armv7l or aarch64 "
                              "(a Pi 2 or newer, a Zero 2): aiortc's native dependencies have no armv6 wheels")
        if not any_arch:
            raise DeployError(f"{target.host} is {probe.arch}, not a Raspberry Pi (armv7l or aarch64); "
                              "--any-arch deploys to it anyway")
        warnings.append(f"{target.host} is {probe.arch}, not a Pi: deploying anyway (--any-arch)")
    if not probe.has_systemctl:
        raise DeployError(f"no systemctl on {target.host}: the robot runs as a systemd service "
                          "(Raspberry Pi OS has systemd)")
    if probe.sudo == "0":
        raise DeployError(f"{probe.user} cannot sudo without a password on {target.host}: the unit goes in "
                          f"{UNIT_PATH} (Raspberry Pi OS's first user can; or deploy as root)")
    if not probe.python:
        raise DeployError(f"no {python} on {target.host}: lkdevice needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ "
                          "(Raspberry Pi OS Bookworm or later has it)")
    version = tuple(int(x) for x in probe.python.split(".")[:2])
    if version < MIN_PYTHON:
        raise DeployError(f"{python} on {target.host} is {probe.python}: lkdevice needs "
                          f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer (Raspberry Pi OS Bookworm or later)")
    if not probe.has_venv:
        raise DeployError(f"{python} on {target.host} cannot make a venv: install it with "
                          "sudo apt install python3-venv")
    if probe.os in ("raspbian", "debian") and probe.os_version.isdigit() and int(probe.os_version) < 12:
        warnings.append(f"{target.host} runs {probe.os} {probe.os_version} ({probe.codename}): "
                        "Bookworm (12) or later is what lkdevice is tested on")
    if probe.arch == "armv7l" and not probe.pip_extra_index:
        warnings.append("armv7 with no extra pip index: av, numpy, aiortc's cryptography and opuslib's "
                        f"deps have few armv7 wheels on PyPI; add --extra-index-url {PIWHEELS} (or --offline)")
    return warnings


def check_devices(probe: Probe, config: dict, *, offline: bool) -> list[str]:
    """Warnings for what the config asks of the Pi's hardware libraries (the robot would stop at start)."""
    warnings = []
    camera = str((config.get("camera") or {}).get("source", ""))
    if camera == "picamera2" and not probe.has_picamera2:
        warnings.append("the config's camera is picamera2, which the Pi's Python lacks: "
                        "sudo apt install python3-picamera2")
    audio = str((config.get("audio") or {}).get("backend", "sounddevice"))
    if audio == "sounddevice":
        if not probe.has_portaudio:
            warnings.append("the config's audio is sounddevice, and the Pi has no libportaudio2: "
                            "sudo apt install libportaudio2")
        if offline and not probe.has_sounddevice:
            warnings.append("offline, sounddevice is not installed (the Pi has none): "
                            "sudo apt install python3-sounddevice, or deploy without --offline")
    return warnings


def config_tables(text: str) -> dict:
    if tomllib is None:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}


@dataclass(frozen=True)
class Layout:
    """Where things go on the Pi: all under the user's home but the unit."""
    home: str
    service: str = SERVICE

    @property
    def root(self) -> str:
        return f"{self.home}/lkdevice-robot"

    @property
    def venv(self) -> str:
        return f"{self.root}/venv"

    @property
    def wheels(self) -> str:
        return f"{self.root}/wheels"

    @property
    def config_dir(self) -> str:
        return f"{self.home}/.config/lkdevice"

    @property
    def config(self) -> str:
        return f"{self.config_dir}/robot.toml"

    @property
    def unit(self) -> str:
        return f"/etc/systemd/system/{self.service}.service"

    @property
    def command(self) -> list[str]:
        return [f"{self.venv}/bin/lkdevice", "robot", "--config", self.config]


def render_unit(layout: Layout, user: str, *, watchdog_s: int = 30) -> str:
    """The systemd unit: Type=notify (READY when in the room), a watchdog, restarted for ever."""
    exec_start = " ".join(_unit_quote(a) for a in layout.command)
    return f"""\
# written by `lkdevice deploy`; `lkdevice deploy --uninstall` removes it
[Unit]
Description=lkdevice robot (LiveKit agent client: camera, microphone, speaker, commands)
Wants=network-online.target
After=network-online.target sound.target
# a robot keeps trying to come back, however often it fails
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
User={user}
WorkingDirectory={layout.root}
Environment=PYTHONUNBUFFERED=1
ExecStart={exec_start}
WatchdogSec={watchdog_s}
Restart=always
RestartSec=5
TimeoutStartSec=90
TimeoutStopSec=15

[Install]
WantedBy=multi-user.target
"""


def _unit_quote(arg: str) -> str:
    if any(c in arg for c in " \t\"'\\$%;"):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'
    return arg


def pip_install(layout: Layout, wheel_name: str, *, offline: bool, extra_index: list[str]) -> list[list[str]]:
    """pip commands: the wheel with its dependencies, then the wheel itself again (same version, new code)."""
    pip = [f"{layout.venv}/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    wheel = f"{layout.wheels}/{wheel_name}"
    if offline:
        # no registry: every dependency must already be in the Pi's system site-packages (apt's python3-*)
        index = ["--no-index"]
        extras = []
    else:
        index = [a for url in extra_index for a in ("--extra-index-url", url)]
        # sounddevice is pure Python (cffi + apt's libportaudio2); picamera2 comes from apt
        # (python3-picamera2), seen through --system-site-packages: its PyPI build needs libcap-dev
        extras = ["sounddevice"]
    return [pip + index + [wheel] + extras,
            pip + ["--no-index", "--no-deps", "--force-reinstall", wheel]]


def check_config(text: str, source: str) -> None:
    """Check a robot config before it is sent: a broken file is caught here, not in the Pi's journal.

    With the robot app in this checkout, its own parser (lkdevice.robot.config) judges the file;
    without it, TOML and a [server] url are all we can check.
    """
    try:
        from ...robot.config import ConfigError, parse
    except ImportError:
        parse = None
    if parse is not None:
        try:
            parse(text, source)
        except ConfigError as exc:
            raise DeployError(str(exc)) from None
        return
    if tomllib is None:
        return
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeployError(f"{source}: not valid TOML: {exc}") from None
    if not isinstance(data.get("server"), dict) or not data["server"].get("url"):
        raise DeployError(f"{source}: no [server] url (the LiveKit server the robot joins)")


def render_config(*, url: str, token: str | None = None, token_file: str | None = None,
                  token_url: str | None = None, device_id: str | None = None, device_key: str | None = None,
                  camera: str = "test", audio: str = "sounddevice", plugins: list[str] | None = None) -> str:
    """A starter config for `deploy` without --config, in the keys `lkdevice robot --config` reads."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["# lkdevice robot config (written by `lkdevice deploy`; mode 0600: it may hold a token)",
             "[server]", f"url = {q(url)}"]
    for key, value in (("token", token), ("token_file", token_file), ("token_url", token_url),
                       ("device_id", device_id), ("device_key", device_key)):
        if value:
            lines.append(f"{key} = {q(value)}")
    lines += ["", "[audio]", f"backend = {q(audio)}", "", "[camera]", f"source = {q(camera)}", "codec = \"auto\"",
              "", "[plugins]", "load = [" + ", ".join(q(p) for p in (plugins or ["sim"])) + "]", ""]
    return "\n".join(lines)


def sh(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)
