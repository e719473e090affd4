"""The firmware's watchdog is fed on progress, not on a timer: a stalled or
dead task resets the board, a connection attempt within its deadline does not,
and Wi-Fi is rejoined after the access point goes away. Faults are made on
purpose in the simulated hardware (hil/sim: the LKD_HIL_PINS control file); the firmware runs
on the MicroPython unix port. No gateway here: the board keeps trying to reach
one that refuses, as a board whose gateway is down would (with a gateway and a
far-side peer: test_firmware_sim.py)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import os
import time
from pathlib import Path
import pytest

from lkdevice.host_tools.simulator import SimulatedDevice

MP = shutil.which("micropython")
pytestmark = pytest.mark.skipif(MP is None or shutil.which("mpy-cross") is None,
                                reason="needs the micropython unix port and mpy-cross")

NOWHERE = "ws://127.0.0.1:9/v1/device"  # discard port: nothing listens, connections are refused
WDT_MS = 1500


@pytest.fixture
def board():
    made: list[SimulatedDevice] = []

    def make(**kw) -> SimulatedDevice:
        kw.setdefault("wdt_ms", WDT_MS)
        kw.setdefault("play", "tone:440:60")
        dev = SimulatedDevice(kw.pop("gateway", NOWHERE), kw.pop("token", "not-a-real-token"), **kw).start()
        made.append(dev)
        return dev

    yield make
    for d in made:
        d.stop()
        d.cleanup()


def resets(dev: SimulatedDevice) -> list[str]:
    return [l for l in dev.lines() if "[hil] watchdog reset" in l]


def healthy_for(dev: SimulatedDevice, seconds: float) -> None:
    """Seconds pass with the board up, no fault and no reset."""
    time.sleep(seconds)
    tail = "\n".join(dev.lines()[-20:])
    assert dev.running and not resets(dev), tail
    assert dev.find(r"\[lkd\] fault ") is None, tail


@pytest.mark.parametrize("part", ["mic", "speaker"])
def test_a_stalled_i2s_task_resets_the_board(board, part):
    dev = board()
    dev.wait_for_line(r"\[lkd\] wifi up ", 10)
    healthy_for(dev, 2.5)  # longer than the watchdog: it is fed while audio moves
    mark = dev.mark()
    t0 = time.monotonic()
    dev.set_fault(part, "stop")  # the DMA stops: reads (writes) never complete
    dev.wait_for_line(r"\[lkd\] fault task=%s reason=stalled ms=\d+" % part, 6, since=mark)
    dev.wait_for_line(r"\[lkd\] watchdog not fed", 2, since=mark)
    dev.wait_for_line(r"\[hil\] watchdog reset", WDT_MS / 1000 + 2, since=mark)
    assert time.monotonic() - t0 < 2 + WDT_MS / 1000 + 3  # 2 s without frames, then the watchdog
    dev.proc.wait(5)
    assert not dev.running


def test_a_dead_microphone_task_is_named_and_resets_the_board(board):
    dev = board()
    dev.wait_for_line(r"\[lkd\] wifi up ", 10)
    healthy_for(dev, 1.0)
    mark = dev.mark()
    dev.set_fault("mic", "error")  # I2S reads raise OSError(EIO): the mic task ends
    dev.wait_for_line(r"\[lkd\] fault task=mic reason=died error=OSError\(5", 3, since=mark)
    dev.wait_for_line(r"\[hil\] watchdog reset", WDT_MS / 1000 + 2, since=mark)


class SilentServer:
    """Accepts TCP connections and never answers (a hung token_url)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(c)

    def close(self):
        self.sock.close()
        for c in self.accepted:
            c.close()


def test_a_hung_token_url_is_not_reset_while_within_its_deadline(board):
    srv = SilentServer()
    try:
        dev = board(token=None, token_url=f"http://127.0.0.1:{srv.port}/token")
        dev.wait_for_line(r"\[lkd\] wifi up ", 10)
        deadline = time.monotonic() + 10
        while not srv.accepted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert srv.accepted, "the board never asked the token server"
        # many watchdog periods with the fetch hanging: the attempt has a deadline
        # (30 s), audio keeps moving, so the board is fed
        healthy_for(dev, 6 * WDT_MS / 1000)
        assert dev.find(r"\[lkd\] welcome ") is None
    finally:
        srv.close()


def test_wifi_lost_and_rejoined_without_a_reset(board):
    dev = board()
    dev.wait_for_line(r"\[lkd\] wifi up ", 10)
    dev.wait_for_line(r"\[lkd\] link lost; reconnecting \(OSError\(111", 5)  # refused: the gateway is down
    mark = dev.mark()
    dev.set_fault("ap", False)
    dev.wait_for_line(r"\[lkd\] wifi lost status=", 3, since=mark)
    # while the AP is away, a new connection has no route
    dev.wait_for_line(r"\[lkd\] link lost; reconnecting \(OSError\(113", 10, since=mark)
    healthy_for(dev, 2 * WDT_MS / 1000)
    back = dev.mark()
    dev.set_fault("ap", None)
    dev.wait_for_line(r"\[lkd\] wifi up ", 5, since=back)
    # the board reconnects at once (no end of a backoff to wait for): refused again by the dead gateway
    dev.wait_for_line(r"\[lkd\] link lost; reconnecting \(OSError\(111", 3, since=back)
    assert dev.running and not resets(dev)


def test_wifi_that_the_driver_does_not_restore_is_joined_afresh_with_backoff(board):
    # an access point away longer than the join timeout (15 s): disconnect, back off, connect again
    dev = board(wdt_ms=3000)
    dev.wait_for_line(r"\[lkd\] wifi up ", 10)
    mark = dev.mark()
    dev.set_fault("ap", False)
    dev.wait_for_line(r"\[lkd\] wifi lost ", 3, since=mark)
    dev.wait_for_line(r"\[lkd\] wifi failed status=201", 18, since=mark)  # NO_AP_FOUND
    dev.wait_for_line(r"\[lkd\] wifi connecting ssid=lkdevice-sim attempt=1", 3, since=mark)
    dev.set_fault("ap", None)
    dev.wait_for_line(r"\[lkd\] wifi up ", 5, since=mark)
    assert dev.running and not resets(dev)


# --- with a gateway, a real livekit-server and an official-SDK peer

from .test_firmware_sim import mic_reaches_peer, sims  # noqa: E402,F401 (a fixture)
from ..audio_checks import tone_frames  # noqa: E402
from .conftest import sine  # noqa: E402
from .proxy import TcpRelay  # noqa: E402


async def test_a_healthy_session_is_never_reset(server, gateway, sims, peers, room_name):  # noqa: F811
    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, room_name, play=sine(440, 60), wdt_ms=2000)
    await dev.wait_line(r"\[lkd\] welcome ", 20)
    assert await mic_reaches_peer(peer, 440, 2.0) >= 90
    playing = await peer.publish_tone(1000)
    try:
        await asyncio.sleep(20)  # ten watchdog periods and more, audio both ways
    finally:
        playing.cancel()
    assert dev.running and not resets(dev) and dev.find(r"\[lkd\] (fault|watchdog)") is None
    pubs = [p for p in peer.room.remote_participants["esp32"].track_publications.values() if p.track]
    assert tone_frames(await peer.record(pubs[0].track, 2.0), 48000, 440) >= 90


async def test_access_point_away_ten_seconds_then_audio_flows_again(server, gateway, sims, peers,  # noqa: F811
                                                                    room_name):
    peer = await peers("agent", server.url, room_name)
    dev = sims(gateway.url, room_name, play=sine(440, 90), wdt_ms=3000)
    await dev.wait_line(r"\[lkd\] welcome .* grace=(\d+)", 20)
    assert await mic_reaches_peer(peer, 440, 1.0) >= 40
    mark = dev.mark()
    dev.set_fault("ap", False)
    await dev.wait_line(r"\[lkd\] wifi lost status=", 3, since=mark)
    await dev.wait_line(r"\[lkd\] link lost; resuming \(wifi connection lost\)", 3, since=mark)
    await asyncio.sleep(10)
    assert dev.find(r"\[lkd\] (resumed|welcome) ", since=mark) is None  # no link without Wi-Fi
    back = dev.mark()
    dev.set_fault("ap", None)
    await dev.wait_line(r"\[lkd\] wifi up ", 5, since=back)
    await dev.wait_line(r"\[lkd\] resumed session=", 5, since=back)  # within the gateway's grace period
    assert not resets(dev)
    # frames from the board reach the far side again
    await asyncio.sleep(1)
    pubs = [p for p in peer.room.remote_participants["esp32"].track_publications.values() if p.track]
    frames = await peer.record(pubs[0].track, 2.0)
    assert tone_frames(frames, 48000, 440) >= 0.9 * 100
    assert not peer.saw("participant_disconnected", lambda p: p.identity == "esp32")


async def test_access_point_gone_past_the_grace_the_room_sees_the_board_leave_in_time(server, sims, peers,  # noqa: F811
                                                                                      room_name):
    """The access point vanishes: no FIN, no RST reaches the gateway, the board's socket is half-open. The
    gateway judges the link lost after its silence timeout, and the grace runs from then: the room sees the
    board leave within silence + grace (+ a margin), not whenever closing the dead socket gives up. Back
    after that, the board joins afresh (hello, a new session), not a resume."""
    from lkdevice.gateway import Gateway, GatewayConfig

    silence, grace = 5.0, 5.0
    bound = silence + grace + 4.0  # generous: a busy 2-core machine; the bug took 10 s more at least
    async with Gateway(GatewayConfig(livekit_url=server.url, port=0, grace=grace, idle_timeout=silence)) as gw:
        # the sim's socket close would send a FIN: the relay, frozen with the AP, keeps it from the gateway
        relay = await TcpRelay(gw.port).start()
        peer = await peers("agent", server.url, room_name)
        dev = sims(relay.url + "/v1/device", room_name, play=sine(440, 120), wdt_ms=3000)
        await dev.wait_line(r"\[lkd\] welcome .* grace=5 ", 20)
        await peer.expect("participant_connected", lambda p: p.identity == "esp32", timeout=10)
        playing = await peer.publish_tone(1000)  # the agent talks on: the dead socket's buffers fill
        try:
            await dev.wait_line(r"\[lkd\] joined identity=agent|participants=1", 10)
            await asyncio.sleep(2)
            loop = asyncio.get_running_loop()
            mark = dev.mark()
            dropped = loop.time()
            relay.freeze()
            dev.set_fault("ap", False)
            await dev.wait_line(r"\[lkd\] link lost; resuming", 3, since=mark)
            await peer.expect("participant_disconnected", lambda p: p.identity == "esp32", timeout=bound)
            left_after = loop.time() - dropped
            assert left_after >= silence + grace - 1.0, f"the room saw the board leave {left_after:.1f} s " \
                                                        "after the drop: sooner than silence + grace"
            assert not gw.sessions  # and the session is gone: nothing to resume
            await asyncio.sleep(max(0.0, bound + 4.0 - (loop.time() - dropped)))  # the AP still gone
            back = dev.mark()
            dev.set_fault("ap", None)
            await dev.wait_line(r"\[lkd\] welcome room=", 20, since=back)
            assert dev.find(r"\[lkd\] resumed ", since=mark) is None
            await peer.expect("participant_connected", lambda p: p.identity == "esp32", timeout=10)
            assert not resets(dev)
        finally:
            playing.cancel()
            await asyncio.to_thread(dev.stop)  # before the relay goes, so the board sees no last drop
            await relay.close()


def open_sockets(pid: int) -> int:
    """The process's open sockets (an fd each on the unix port; on an ESP32 one of lwIP's ~10)."""
    fds = Path(f"/proc/{pid}/fd")
    n = 0
    for fd in fds.iterdir():
        try:
            n += os.readlink(fd).startswith("socket:")
        except OSError:
            pass  # closed between listing and reading
    return n


async def test_link_drops_do_not_leak_sockets(server, gateway, sims, peers, room_name):  # noqa: F811
    """Each drop of the access point ends the board's link; the socket must be closed for real, or after a
    handful of drops a real board has no lwIP socket left to reconnect with."""
    dev = sims(gateway.url, room_name, play=sine(440, 120), wdt_ms=3000)
    await dev.wait_line(r"\[lkd\] (welcome|resumed) ", 20)
    assert dev.proc is not None
    before = open_sockets(dev.proc.pid)
    for _ in range(5):
        await asyncio.sleep(1)  # settled on the link before the next drop
        mark = dev.mark()
        dev.set_fault("ap", False)
        await dev.wait_line(r"\[lkd\] link lost; ", 10, since=mark)
        back = dev.mark()
        dev.set_fault("ap", None)
        await dev.wait_line(r"\[lkd\] (resumed|welcome) ", 20, since=back)
    after = open_sockets(dev.proc.pid)
    assert after <= before + 1, f"the firmware holds {after} sockets after 5 link drops, {before} before"
    assert not resets(dev)
