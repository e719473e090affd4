"""The simulated board's flash is compiled for the binary that runs it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from lkdevice.host_tools.simulator import compile_flash, micropython_binary, mpy_cross_binary, native_arch

pytestmark = pytest.mark.skipif(not shutil.which("micropython") or not mpy_cross_binary(),
                                reason="needs the MicroPython unix port and mpy-cross")


def test_viper_code_is_compiled_for_the_binarys_architecture(tmp_path):
    exe = micropython_binary()
    assert native_arch(exe) == "x64"  # the pip port; a 32-bit build from source says x86
    (tmp_path / "fast.py").write_text(
        "import micropython\n@micropython.viper\ndef add(a: int, b: int) -> int:\n    return a + b\n")
    compile_flash(tmp_path, mpy_cross_binary(), native_arch(exe))
    assert not (tmp_path / "fast.py").exists()
    r = subprocess.run([exe, "-c", "import fast; print(fast.add(2, 40))"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=10, env={"MICROPYPATH": ""})
    assert r.stdout.strip() == "42", r.stderr


def test_compiled_for_another_architecture_the_binary_refuses_it(tmp_path):
    (tmp_path / "fast.py").write_text(
        "import micropython\n@micropython.viper\ndef add(a: int, b: int) -> int:\n    return a + b\n")
    compile_flash(tmp_path, mpy_cross_binary(), "x86")
    r = subprocess.run([micropython_binary(), "-c", "import fast"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=10, env={"MICROPYPATH": ""})
    assert "incompatible .mpy" in (r.stdout + r.stderr)
