"""Where a module sits says who may import it (DESIGN.md's layout), checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "device"


def module_name(path: Path) -> str:
    if path.is_relative_to(ROOT / "host_tools"):
        parts = ("lkdevice", "host_tools") + path.relative_to(ROOT / "host_tools").with_suffix("").parts
    else:
        parts = ("lkdevice",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def imports_of(path: Path) -> set[str]:
    """Every lkdevice module a file imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in found if m == "lkdevice" or m.startswith("lkdevice.")}


def sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


FORBIDDEN = {
    "rtc": ("lkdevice.gateway", "lkdevice.robot", "lkdevice.cli", "lkdevice.host_tools"),
    "gateway": ("lkdevice.robot", "lkdevice.cli", "lkdevice.host_tools"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer):
    bad = []
    for path in sources(PACKAGE / layer):
        for mod in imports_of(path):
            if mod.startswith(FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_shared_codec_imports_nothing_of_lkdevice():
    # but, on CPython only, the names only the host side uses (_protocol_names.py,
    # kept off the board's heap), which imports nothing itself
    assert imports_of(PACKAGE / "device_protocol.py") <= {"lkdevice._protocol_names", "lkdevice._protocol_names.*"}
    assert imports_of(PACKAGE / "_protocol_names.py") == set()
    src = (PACKAGE / "_protocol_names.py").read_text()
    assert "import" not in src.split('"""')[-1]


def test_the_firmware_imports_only_the_shared_codec_from_the_package():
    # on the board, device_protocol.py sits on flash beside main.py and lkd/
    for path in sources(ROOT / "firmware"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert not n.startswith(("lkdevice", "device.", "host_tools", "hil")), f"{path}: {n}"


def test_the_runtime_package_never_loads_the_host_tools():
    """A Pi or a gateway host runs `lkdevice` (API, gateway, CLI) with no dev tool loaded."""
    code = ("import sys, lkdevice, lkdevice.gateway, lkdevice.cli\n"
            "lkdevice.cli.build_parser()\n"
            "print(sorted(m for m in sys.modules if m.startswith('lkdevice.host_tools')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_public_api_is_importable_from_the_package():
    import lkdevice
    for name in ("connect", "Room", "RoomOptions", "tone", "LiveKitError", "TokenRejected", "ServerUnreachable",
                 "ConnectError", "Disconnected", "DataTooLarge", "RpcError", "AudioStream", "MicrophoneTrack"):
        assert hasattr(lkdevice, name), name
