"""What `lkdevice deploy` decides before it touches a Pi: the target, the probe's verdict, pip's command lines."""

from __future__ import annotations

import pytest

from lkdevice.host_tools.deploy.plan import (DeployError, Layout, Probe, Target, check, check_devices, pip_install,
                                             render_unit)

PI = Target("pi", "robot.local")


def probe(**kw) -> Probe:
    base = dict(arch="aarch64", uid=1000, user="pi", home="/home/pi", python="3.11.2", has_venv=True,
                has_picamera2=True, has_systemctl=True, sudo="1", os="debian", os_version="12",
                codename="bookworm", pip_extra_index="https://www.piwheels.org/simple")
    base.update(kw)
    return Probe(**base)


@pytest.mark.parametrize("text, expected", [
    ("pi@robot.local", Target("pi", "robot.local", 22)),
    ("pi@10.0.0.5:2222", Target("pi", "10.0.0.5", 2222)),
    ("me@host@jump", Target("me@host", "jump", 22)),
])
def test_targets(text, expected):
    assert Target.parse(text) == expected


@pytest.mark.parametrize("text", ["robot.local", "@robot", "pi@", "pi@host:ssh"])
def test_a_bad_target_is_one_line(text):
    with pytest.raises(DeployError, match="USER@HOST|port"):
        Target.parse(text)


def test_a_bookworm_pi_passes_on_both_arches():
    assert check(probe(), PI, "python3") == []
    assert check(probe(arch="armv7l"), PI, "python3") == []


@pytest.mark.parametrize("fields, message", [
    (dict(arch="armv6l"), "armv6l (a Pi Zero or Pi 1)"),
    (dict(arch="x86_64"), "x86_64, not a Raspberry Pi"),
    (dict(python="3.9.2"), "is 3.9.2: lkdevice needs 3.11 or newer"),
    (dict(python=""), "no python3 on robot.local"),
    (dict(has_venv=False), "sudo apt install python3-venv"),
    (dict(has_systemctl=False), "no systemctl"),
    (dict(sudo="0"), "pi cannot sudo without a password"),
])
def test_what_stops_a_deploy_is_named(fields, message):
    with pytest.raises(DeployError) as err:
        check(probe(**fields), PI, "python3")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_warnings_for_an_old_os_and_armv7_without_piwheels():
    assert "Bookworm" in check(probe(os_version="11", codename="bullseye"), PI, "python3")[0]
    assert "piwheels" in check(probe(arch="armv7l", pip_extra_index=""), PI, "python3")[0]
    assert "--any-arch" in check(probe(arch="x86_64"), PI, "python3", any_arch=True)[0]


def test_offline_installs_from_the_system_packages_only():
    layout = Layout("/home/pi")
    deps, own = pip_install(layout, "lkdevice-0.1.0-py3-none-any.whl", offline=True, extra_index=["https://x"])
    assert "--no-index" in deps and "https://x" not in deps and "sounddevice" not in deps
    assert own[-1] == "/home/pi/lkdevice-robot/wheels/lkdevice-0.1.0-py3-none-any.whl"
    assert {"--no-deps", "--force-reinstall", "--no-index"} <= set(own)
    deps, _ = pip_install(layout, "w.whl", offline=False, extra_index=["https://x"])
    assert deps[deps.index("--extra-index-url") + 1] == "https://x" and "--no-index" not in deps


def test_the_unit_quotes_a_home_with_a_space():
    unit = render_unit(Layout("/home/my pi"), "my pi")
    assert 'ExecStart="/home/my pi/lkdevice-robot/venv/bin/lkdevice" robot --config ' \
           '"/home/my pi/.config/lkdevice/robot.toml"' in unit


def test_what_the_config_asks_of_the_pi_is_warned_about():
    cfg = {"camera": {"source": "picamera2"}, "audio": {"backend": "sounddevice"}}
    assert check_devices(probe(), cfg, offline=False) == []
    warned = check_devices(probe(has_picamera2=False, has_portaudio=False), cfg, offline=True)
    assert [w.split(": ")[-1] for w in warned] == [
        "sudo apt install python3-picamera2", "sudo apt install libportaudio2",
        "sudo apt install python3-sounddevice, or deploy without --offline"]
    assert check_devices(probe(has_picamera2=False, has_portaudio=False),
                         {"camera": {"source": "none"}, "audio": {"backend": "none"}}, offline=True) == []


def test_the_wheel_is_built_from_every_folder_pyproject_maps_a_package_from():
    """A package folder left out of the clean copy fails the build on the user's machine (it did: hil/harness)."""
    from pathlib import Path

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from lkdevice.host_tools.deploy.remote import SOURCE_DIRS

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert set(pyproject["tool"]["setuptools"]["package-dir"].values()) == set(SOURCE_DIRS)
