"""host_tools.livekit_server.LocalServer.stop(): quick, and clean. livekit-server's first
SIGTERM only drains (it waits, without end, for its rooms to empty), and one that comes
within ~100 ms of its HTTP port answering is dropped (its Stop() returns before the
server counts as running): stop() forces its shutdown (rooms closed, then exit) with a second signal."""

from __future__ import annotations

import asyncio
import signal
import time

from livekit import rtc

from lkdevice.host_tools.livekit_server import LocalServer

from .conftest import server_config, token


def timed_stop(srv: LocalServer) -> tuple[float, int]:
    proc = srv.proc
    assert proc is not None
    start = time.monotonic()
    srv.stop()
    return time.monotonic() - start, proc.returncode


async def test_stop_with_a_participant_in_a_room_is_quick_and_it_finds_out(room_name):
    srv = LocalServer(server_config()).start()
    room = rtc.Room()
    gone = asyncio.Event()  # told (leave, SERVER_SHUTDOWN) or its signal link closed under it
    room.on("disconnected", lambda *_: gone.set())
    room.on("reconnecting", lambda *_: gone.set())
    try:
        await room.connect(srv.url, token("peer", room_name))
        took, code = await asyncio.to_thread(timed_stop, srv)
        assert took < 6.0, f"stop() took {took:.1f} s with a participant in a room"
        assert code != -signal.SIGKILL, "killed, not stopped"
        # the server sends each a leave; if it exits before that is written, the socket's close tells
        await asyncio.wait_for(gone.wait(), 5)
    finally:
        srv.stop()
        await room.disconnect()


def test_stop_right_after_start_is_not_ignored():
    srv = LocalServer(server_config()).start()
    took, code = timed_stop(srv)
    assert took < 6.0 and code != -signal.SIGKILL, f"stop() took {took:.1f} s, exit {code}"
