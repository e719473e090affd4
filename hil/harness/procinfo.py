"""Resident memory and open handles of a local process, from /proc (Linux)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def open_handles(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def git_commit(root: Path) -> str | None:
    """HEAD of the tree the harness runs from, with "+dirty" when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def firmware_hash() -> str:
    """This checkout's firmware and device protocol, as sim-esp32's identity hashes them (16 hex digits):
    what `lkdevice install` compiles and copies."""
    import hashlib

    from lkdevice.host_tools.simulator import repo_paths
    paths = repo_paths()
    digest = hashlib.sha256()
    for p in sorted(paths["firmware"].rglob("*.py")) + [paths["device_protocol"]]:
        digest.update(p.name.encode() + b"\0" + p.read_bytes())
    return digest.hexdigest()[:16]
