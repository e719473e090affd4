"""`lkdevice robot` as the service runs it: a subprocess against the real server, the official SDK as the agent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys

import numpy as np
import pytest
from livekit import rtc

from lkdevice.host_tools.livekit_server import LocalServer
from lkdevice.rtc.wavfile import read_wav
from tests.audio_checks import tone_frames

from .conftest import server_config, token


class Robot:
    """`lkdevice robot` as a subprocess whose output is read as it comes (as journald does):
    a pipe nobody reads would stall it."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.out = bytearray()
        self.err = bytearray()
        self._readers = [asyncio.ensure_future(self._drain(proc.stdout, self.out)),
                         asyncio.ensure_future(self._drain(proc.stderr, self.err))]

    @staticmethod
    async def _drain(stream, into: bytearray) -> None:
        while chunk := await stream.read(65536):
            into += chunk

    @property
    def returncode(self):
        return self.proc.returncode

    def send_signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def finish(self, timeout: float = 20) -> tuple[str, str]:
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.send_signal(signal.SIGABRT)  # -X faulthandler: every thread's stack, to stderr
            try:
                await asyncio.wait_for(self.proc.wait(), 3)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
            await asyncio.gather(*self._readers)
            raise AssertionError(f"still running after {timeout}s; stdout:\n{self.out.decode()[-3000:]}\n"
                                 f"stderr:\n{self.err.decode()[-8000:]}") from None
        await asyncio.gather(*self._readers)
        return self.out.decode(), self.err.decode()


async def robot(*argv: str, env: dict | None = None) -> Robot:
    global_flags = [a for a in argv if a == "-v"]
    rest = [a for a in argv if a != "-v"]
    return Robot(await asyncio.create_subprocess_exec(
        sys.executable, "-X", "faulthandler", "-m", "lkdevice.cli", *global_flags, "robot", *rest, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE))


class NotifySocket:
    """What systemd listens on: a unix datagram socket, read as datagrams arrive."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.got: list[str] = []
        asyncio.get_running_loop().add_reader(self.sock, self._read)

    def _read(self) -> None:
        while True:
            try:
                self.got.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock)
        self._read()
        self.sock.close()


def leading_tone(pcm: np.ndarray, rate: int, freq: float) -> tuple[int, int]:
    """(frames holding `freq`, frames) from the first audible 20 ms frame on."""
    n = rate // 50
    frames = [pcm[i:i + n] for i in range(0, len(pcm) - n, n)]
    first = next(i for i, f in enumerate(frames) if np.abs(f).max() > 1000)
    return tone_frames(frames[first:], rate, freq), len(frames) - first


async def test_the_robot_hears_the_agent_and_the_agent_hears_the_robot(server, room_name, peers, tmp_path):
    """Speaker and microphone through the WAV backend, with the JSON log and systemd's notify socket."""
    notify = NotifySocket(str(tmp_path / "notify"))
    agent = await peers("agent", server.url, room_name)
    player = await agent.publish_tone(1000)
    heard = tmp_path / "speaker.wav"
    secret = token("robot", room_name)
    proc = await robot("-v", "--url", server.url, "--token", secret, "--room", room_name, "--audio", "wav",
                       "--play", "tone:440", "--record", str(heard), "--duration", "7", "--log-json",
                       env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"})
    try:
        track, _, who = await agent.expect("track_subscribed", timeout=15)
        assert who.identity == "robot"
        frames = await agent.record(track, 1.5)
        assert tone_frames(frames, 48000, 440) >= 0.9 * 75  # the robot's microphone
        await agent.room.local_participant.set_attributes({"lk.agent.state": "speaking"})
        await agent.room.local_participant.send_text("turn left please", topic="lk.transcription")
        out, err = await proc.finish()
    finally:
        player.cancel()
        proc.kill()
        notify.close()
    assert proc.returncode == 0, err[-3000:]
    lines = out.splitlines()
    records = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    assert secret not in out and secret not in err
    assert secret.split(".")[2] not in out + err  # nor its signature alone
    messages = [r["msg"] for r in records]
    assert "agent agent: speaking" in messages, messages
    assert "agent said: turn left please" in messages, messages
    assert any(m.startswith("left the room (duration elapsed)") for m in messages)
    pcm, rate = read_wav(str(heard))
    good, total = leading_tone(pcm, rate, 1000)  # the speaker played the agent
    assert rate == 48000 and total > 200 and good >= 0.9 * total - 5, (good, total)
    sent = notify.got
    ready = next(i for i, m in enumerate(sent) if m.startswith("READY=1"))
    assert sent[ready] == f"READY=1\nSTATUS=connected to room {room_name} as robot"
    assert "WATCHDOG=1" not in sent[:ready]  # systemd watches from READY=1 on
    assert sent.count("WATCHDOG=1") >= 5  # every 0.5 s for about 7 s
    assert sent[-1].startswith("STOPPING=1")


async def test_sigterm_stops_leaves_the_room_and_exits_0(server, room_name, peers):
    agent = await peers("agent", server.url, room_name)
    proc = await robot("--url", server.url, "--token", token("robot", room_name), "--play", "tone:440")
    try:
        await agent.expect("track_subscribed", lambda t, pub, p: p.identity == "robot", timeout=15)
        proc.send_signal(signal.SIGTERM)
        (who,) = await agent.expect("participant_disconnected", timeout=10)
        out, err = await proc.finish(10)
    finally:
        proc.kill()
    assert who.identity == "robot" and who.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
    assert proc.returncode == 0, err[-3000:]
    assert "left the room (SIGTERM)" in out


async def test_sigterm_stops_the_motors_and_the_plugins_hear_the_agent(server, room_name, peers):
    pytest.importorskip("lkdevice.robot.commands")  # COMMANDS' module: this runs once it is in the tree
    agent = await peers("agent", server.url, room_name)
    lp = agent.room.local_participant
    proc = await robot("--url", server.url, "--token", token("robot", room_name), "--plugin", "sim",
                       "--watchdog", "10")
    try:
        await agent.expect("participant_connected", lambda p: p.identity == "robot", timeout=15)
        await lp.set_attributes({"lk.agent.state": "thinking"})
        move = {"direction": "forward", "speed": 0.5, "duration_ms": 8000}
        answer = json.loads(await lp.perform_rpc(destination_identity="robot", method="move",
                                                 payload=json.dumps(move)))
        assert answer["moving"] is True
        for _ in range(50):  # the attribute and the RPC travel separately
            state = json.loads(await lp.perform_rpc(destination_identity="robot", method="get_state", payload="{}"))
            if state["agent_state"] == "thinking":
                break
            await asyncio.sleep(0.1)
        assert state["agent_state"] == "thinking" and state["moving"]
        proc.send_signal(signal.SIGTERM)
        out, err = await proc.finish(10)
        (who,) = await agent.expect("participant_disconnected", timeout=5)
    finally:
        proc.kill()
    assert who.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED and proc.returncode == 0, err[-3000:]
    stops = [line for line in err.splitlines() if "drive: stop (SIGTERM)" in line]
    assert len(stops) == 1 and "was not moving" not in stops[0], err[-3000:]


async def test_the_camera_is_published_and_closed_with_the_robot(server, room_name, peers):
    pytest.importorskip("lkdevice.robot.video")  # VIDEO's module: this runs once it is in the tree
    agent = await peers("agent", server.url, room_name)
    proc = await robot("--url", server.url, "--token", token("robot", room_name), "--camera", "test",
                       "--video-codec", "vp8", "--size", "320x240", "--fps", "15", "--audio", "none")
    try:
        track, _, _ = await agent.expect("track_subscribed", lambda t, pub, p: p.identity == "robot", timeout=15)
        assert track.kind == rtc.TrackKind.KIND_VIDEO
        stream = rtc.VideoStream(track)
        try:
            event = await asyncio.wait_for(stream.__anext__(), 10)
        finally:
            await stream.aclose()
        assert (event.frame.width, event.frame.height) == (320, 240)
        proc.send_signal(signal.SIGTERM)
        out, err = await proc.finish(10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "video: test 320x240@15 as vp8" in out


async def test_removed_by_the_server_the_robot_joins_again_past_its_tokens_expiry(server, room_name, peers):
    """A new session after the Room gave up (PARTICIPANT_REMOVED) uses the server's refreshed token:
    the one given on the command line has expired by then."""
    from livekit import api

    agent = await peers("agent", server.url, room_name)
    # expired 55 s ago: the server's 60 s leeway lets it join for another 5 s
    proc = await robot("--url", server.url, "--token", token("robot", room_name, ttl=-55), "--play", "tone:440")
    try:
        await agent.expect("participant_connected", lambda p: p.identity == "robot", timeout=5)
        await asyncio.sleep(6)  # the command line's token is dead now
        async with api.LiveKitAPI(server.http_url, "devkey", "secret") as lk:
            await lk.room.remove_participant(api.RoomParticipantIdentity(room=room_name, identity="robot"))
        await agent.expect("participant_disconnected", lambda p: p.identity == "robot", timeout=10)
        await agent.expect("participant_connected", lambda p: p.identity == "robot", timeout=15)
        proc.send_signal(signal.SIGTERM)
        out, err = await proc.finish(10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "left the room: PARTICIPANT_REMOVED" in err and out.count("joined room") == 2


@pytest.fixture
async def own_server():
    srv = LocalServer(server_config()).start()
    yield srv
    srv.stop()


async def test_the_robot_comes_back_after_the_server_restarts(own_server, room_name, peers):
    proc = await robot("--url", own_server.url, "--token", token("robot", room_name), "--play", "tone:440")
    try:
        agent = await peers("agent", own_server.url, room_name)
        await agent.expect("participant_connected", lambda p: p.identity == "robot", timeout=15)
        await asyncio.to_thread(own_server.restart)
        again = await peers("agent-2", own_server.url, room_name)
        track, _, who = await again.expect("track_subscribed", lambda t, pub, p: p.identity == "robot", timeout=30)
        frames = await again.record(track, 1.0)
        assert tone_frames(frames, 48000, 440) >= 0.9 * 50
        proc.send_signal(signal.SIGTERM)
        out, err = await proc.finish(10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert out.count("joined room") == 1  # the Room got back by itself: one session, rejoined


async def test_a_bad_config_file_is_one_line(tmp_path):
    cfg = tmp_path / "robot.toml"
    cfg.write_text('[server]\nurl = "ws://127.0.0.1:1"\ntoken = "t"\n\n[camera]\nfps = "fast"\n')
    out, err = await (await robot("--config", str(cfg))).finish()
    assert err == f"error: {cfg}: camera.fps: must be an integer, not 'fast'\n" and out == ""


async def test_a_refused_static_token_stops_with_a_clear_message(server, room_name):
    bad = token("robot", room_name)[:-4] + "AAAA"
    out, err = await (await robot("--url", server.url, "--token", bad, "--duration", "20")).finish()
    assert "token rejected by server (HTTP 401)" in out and "cannot give another, stopping" in out
    assert bad not in out + err


async def test_a_refused_token_from_a_file_is_read_again_until_one_works(server, room_name, peers, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(token("robot", room_name)[:-4] + "AAAA")  # refused: a bad signature
    cfg = tmp_path / "robot.toml"
    cfg.write_text(f'[server]\nurl = "{server.url}"\ntoken_file = "{token_file}"\n')
    agent = await peers("agent", server.url, room_name)
    proc = await robot("--config", str(cfg), "--play", "tone:440")
    try:
        await asyncio.sleep(1.5)
        assert not agent.saw("participant_connected")
        token_file.write_text(token("robot", room_name))  # the provisioning tool put a good one there
        await agent.expect("participant_connected", lambda p: p.identity == "robot", timeout=20)
        proc.send_signal(signal.SIGTERM)
        out, err = await proc.finish(10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "token rejected by server (HTTP 401)" in err and "asking the token source for a new one" in err


async def test_half_duplex_mutes_the_mic_while_the_agent_speaks(server, room_name, peers, tmp_path):
    agent = await peers("agent", server.url, room_name)
    player = await agent.publish_tone(1000)
    proc = await robot("--url", server.url, "--token", token("robot", room_name), "--play", "tone:440",
                       "--record", str(tmp_path / "speaker.wav"), "--half-duplex")
    try:
        track, _, _ = await agent.expect("track_subscribed", lambda t, pub, p: p.identity == "robot", timeout=15)
        await asyncio.sleep(0.5)
        while_speaking = await agent.record(track, 1.0, wait_audible=1.5)
        player.cancel()  # the agent stops talking: the robot's mic opens after the hangover
        after = await agent.record(track, 1.0, wait_audible=3.0)
        proc.send_signal(signal.SIGTERM)
        await proc.finish(10)
    finally:
        player.cancel()
        proc.kill()
    assert tone_frames(while_speaking, 48000, 440) <= 5, tone_frames(while_speaking, 48000, 440)
    assert tone_frames(after, 48000, 440) >= 0.9 * 50
