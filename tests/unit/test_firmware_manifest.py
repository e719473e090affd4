"""firmware/manifest.py (MicroPython's FROZEN_MANIFEST) and the flash layouts the
simulator makes for a stock and a frozen build.

The manifest runs here against a recording stand-in for MicroPython's manifest
API (tools/manifestfile.py: include, package, module), with the path variables
an esp32 or a unix build passes; bench/firmware_frozen_heap.py builds real
images with it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "firmware" / "manifest.py"


def run_manifest(tmp_path: Path, port: str, board_manifest: bool = False) -> dict:
    """Execute the manifest as makemanifest.py does (cwd: its folder; path variables on argv)."""
    mpy = tmp_path / "micropython"
    port_dir = mpy / "ports" / port
    board_dir = port_dir / "boards" / "ESP32_GENERIC"
    board_dir.mkdir(parents=True)
    (port_dir / "boards" / "manifest.py").write_text("")
    if board_manifest:
        (board_dir / "manifest.py").write_text("")
    calls: dict = {"include": [], "files": []}

    def resolve(path: str) -> str:
        for name, value in (("MPY_DIR", mpy), ("PORT_DIR", port_dir), ("BOARD_DIR", board_dir)):
            path = path.replace(f"$({name})", str(value))
        return os.path.abspath(path)

    def include(path, **kw):
        calls["include"].append(resolve(path))

    def package(name, files=None, base_path=".", opt=None):
        base = Path(resolve(base_path))
        for p in sorted((base / name).rglob("*.py")):
            calls["files"].append((str(p.relative_to(base)), p, opt))

    def module(name, base_path=".", opt=None):
        p = Path(resolve(base_path)) / name
        assert p.is_file(), p
        calls["files"].append((name, p, opt))

    argv = ["makemanifest.py", "-o", "frozen_content.c", "-v", f"MPY_DIR={mpy}", "-v", f"PORT_DIR={port_dir}",
            "-v", f"BOARD_DIR={board_dir if port == 'esp32' else ''}", "-v", f"MPY_LIB_DIR={mpy}/lib/micropython-lib",
            str(MANIFEST)]
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = argv
    os.chdir(MANIFEST.parent)
    try:
        exec(compile(MANIFEST.read_text(), str(MANIFEST), "exec"),
             {"include": include, "package": package, "module": module, "require": None, "freeze": None,
              "options": None})
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    calls["mpy"], calls["port_dir"], calls["board_dir"] = mpy, port_dir, board_dir
    return calls


@pytest.mark.parametrize("port", ["esp32", "unix"])
def test_manifest_freezes_every_firmware_module_and_the_shared_codec_but_not_main(tmp_path, port):
    calls = run_manifest(tmp_path, port)
    frozen = {name: path for name, path, _ in calls["files"]}
    expected = {f"lkd/{p.name}" for p in (ROOT / "firmware" / "lkd").glob("*.py")} | {"device_protocol.py"}
    assert set(frozen) == expected
    # the gateway's own module, not a copy
    assert frozen["device_protocol.py"].resolve() == (ROOT / "device" / "device_protocol.py").resolve()
    assert all(opt == 1 for _, _, opt in calls["files"])  # as `lkdevice sim` compiles them
    assert os.path.join(str(calls["mpy"]), "extmod", "asyncio") in calls["include"]


def test_on_esp32_the_image_keeps_the_ports_own_frozen_modules(tmp_path):
    # ports/esp32/boards/manifest.py brings _boot.py, which mounts the flash where main.py
    # and config.json live: an image without it would not find them
    calls = run_manifest(tmp_path, "esp32")
    assert calls["include"][0] == str(calls["port_dir"] / "boards" / "manifest.py")
    # a board with a manifest of its own gets that one
    calls = run_manifest(tmp_path / "b", "esp32", board_manifest=True)
    assert calls["include"][0] == str(calls["board_dir"] / "manifest.py")


def test_on_unix_the_image_keeps_the_standard_variants_modules(tmp_path):
    calls = run_manifest(tmp_path, "unix")
    assert calls["include"][0] == str(calls["port_dir"] / "variants" / "standard" / "manifest.py")


needs_mpy_cross = pytest.mark.skipif(shutil.which("mpy-cross") is None or shutil.which("micropython") is None,
                                     reason="needs micropython and mpy-cross")


@needs_mpy_cross
def test_the_simulated_flash_holds_the_firmware_but_not_the_build_manifest(tmp_path):
    from lkdevice.host_tools.simulator import SimulatedDevice
    dev = SimulatedDevice("ws://127.0.0.1:9/v1/device", "t", workdir=str(tmp_path))
    dev._make_flash()
    names = {str(p.relative_to(dev.flash)) for p in dev.flash.rglob("*") if p.is_file()}
    assert {"main.py", "config.json", "board.json", "device_protocol.mpy", "lkd/device.mpy"} <= names
    assert not any(n.startswith("manifest") for n in names), names


@needs_mpy_cross
def test_a_frozen_build_gets_a_flash_with_only_main_and_the_settings(tmp_path):
    # anything of lkd/ or device_protocol left there would be imported instead of the
    # frozen module ("" is before ".frozen" on sys.path) and put the code back on the heap
    from lkdevice.host_tools.simulator import SimulatedDevice
    dev = SimulatedDevice("ws://127.0.0.1:9/v1/device", "t", workdir=str(tmp_path), frozen_firmware=True,
                          frozen_hil=True)
    dev._make_flash()
    names = {str(p.relative_to(dev.flash)) for p in dev.flash.rglob("*") if p.is_file()}
    assert names == {"main.py", "config.json", "board.json"}
    assert not dev.hil.exists()
