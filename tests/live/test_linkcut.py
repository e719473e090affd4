"""LinkCut: a process of LINK_GID loses its network both ways; this process, same addresses, keeps its own."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from lkdevice.host_tools.linkcut import LINK_GID, LinkCut
from lkdevice.host_tools.netimpair import NotIsolated

# a child that sends one datagram a second to PORT and prints what comes back (or "-")
CHILD = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for i in range(int(sys.argv[2])):
    s.sendto(b"%d" % i, ("127.0.0.1", int(sys.argv[1])))
    try:
        print(s.recv(64).decode(), flush=True)
    except socket.timeout:
        print("-", flush=True)
    time.sleep(0.5)
"""


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def test_refuses_outside_the_namespace(monkeypatch):
    monkeypatch.delenv("LKDEVICE_ISOLATED", raising=False)
    with pytest.raises(NotIsolated):
        LinkCut()


def test_only_the_group_loses_its_link_and_gets_it_back():
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.settimeout(0.05)
    port = echo.getsockname()[1]
    mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mine.settimeout(1.0)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(port), "12"], stdout=subprocess.PIPE, text=True,
                             group=LINK_GID)

    child_at: list[tuple] = []

    def serve(seconds: float, push: bool = False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data, addr = echo.recvfrom(64)
                child_at[:] = [addr] if data != b"me" else child_at
                echo.sendto(data, addr)
            except socket.timeout:
                pass
            if push and child_at:  # unasked datagrams to the child: the cut must drop what comes in too
                echo.sendto(b"x", child_at[0])

    try:
        serve(1.6)  # the child's flow exists before the cut: its replies must be dropped too
        with LinkCut(max_seconds=20) as cut:
            serve(0.2)
            mine.sendto(b"me", ("127.0.0.1", port))  # the harness, same server port: not cut
            serve(0.2)
            assert mine.recv(64) == b"me"
            serve(2.5, push=True)
            table = cut.table
            assert table in _tables()
        serve(3.5)
        out = child.communicate(timeout=10)[0].split()
    finally:
        child.kill()
        echo.close()
        mine.close()
    assert table not in _tables()
    # answered, then nothing through the cut (about 3 s: ~4 sends), then answered again
    assert out[:3] == ["0", "1", "2"], out
    assert "x" not in out, out
    lost = [i for i, x in enumerate(out) if x == "-"]
    assert 3 <= len(lost) <= 7 and lost == list(range(lost[0], lost[-1] + 1)), out
    assert out[-1] != "-", out
