"""From an empty simulated board to a participant in the room, with the board tools
only: `lkdevice install`, `provision`, then `monitor --json` showing the running
firmware join through a real gateway and livekit-server, an official-SDK peer
seeing it (and sending it an RPC the monitor shows)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("mpremote")

from lkdevice.host_tools.sim_pty import PtyBoard  # noqa: E402

from .conftest import token  # noqa: E402


def run_cli(*argv, env=None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "lkdevice.cli", *argv], capture_output=True, text=True, env=e,
                          stdin=subprocess.DEVNULL, timeout=60)


class JsonLines:
    """`lkdevice monitor --json` as a subprocess, its lines collected as they come."""

    def __init__(self, port: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "lkdevice.cli", "monitor", "--json", "--reset",
                                      "--port", port], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.lines: list[dict] = []
        self._buf = b""

    def _pump(self) -> None:
        try:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        self._buf += chunk
        *whole, self._buf = self._buf.split(b"\n")
        self.lines += [json.loads(x) for x in whole if x.strip()]

    async def event(self, name: str, timeout: float = 30.0, **fields) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self._pump()
            for ev in self.lines[seen:]:
                if ev.get("event") == name and all(ev.get(k) == v for k, v in fields.items()):
                    return ev
            seen = len(self.lines)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {name} {fields} within {timeout}s; monitor saw: "
                             + "\n".join(x["raw"] for x in self.lines[-40:]))

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err.decode(errors="replace")


async def test_install_provision_monitor_a_board_into_a_room(server, gateway, peers, room_name):
    board = PtyBoard().start()
    monitor = None
    try:
        r = await asyncio.to_thread(run_cli, "install", "--board", "sim", "--port", board.port, "--no-reset")
        assert r.returncode == 0, r.stdout + r.stderr
        secret = token("kitchen", room_name, ttl=600)
        r = await asyncio.to_thread(run_cli, "provision", "--port", board.port, "--wifi", "lkdevice-sim",
                                    "--gateway", gateway.url, "--token", "--no-reset",
                                    env={"LKD_WIFI_PASSWORD": "simulated-wifi", "LKD_TOKEN": secret})
        assert r.returncode == 0, r.stdout + r.stderr
        peer = await peers("agent", server.url, room_name)

        monitor = JsonLines(board.port)
        boot = await monitor.event("boot", board="sim", chip="sim")
        assert boot["kind"] == "boot"
        welcome = await monitor.event("welcome", room=room_name, identity="kitchen")
        assert welcome["kind"] == "joined" and isinstance(welcome["grace"], int)
        await peer.expect("participant_connected", lambda p: p.identity == "kitchen", timeout=20)

        # something the agent does shows up on the board's console, parsed
        perform = peer.room.local_participant.perform_rpc
        answer = asyncio.ensure_future(perform(destination_identity="kitchen", method="lkdevice.info", payload="",
                                               response_timeout=10))
        rpc = await monitor.event("rpc", method="lkdevice.info", timeout=20)
        assert rpc["from"] == "agent" and rpc["kind"] == "data"
        assert json.loads(await asyncio.wait_for(answer, 15))["board"] == "sim"
        await monitor.event("rpc_result", id=rpc["id"])

        code, err = monitor.stop()
        lines, monitor = monitor.lines, None
        assert code == 0 and "Traceback" not in err
        shown = "\n".join(x["raw"] for x in lines) + board.output().decode(errors="replace") + err
        assert secret not in shown and "simulated-wifi" not in shown
    finally:
        if monitor is not None:
            monitor.stop()
        board.stop()
        board.cleanup()
