"""The command line as a user runs it: subprocesses against the real server."""

from __future__ import annotations

import asyncio
import sys

import pytest

from lkdevice.rtc.wavfile import read_wav
from tests.audio_checks import tone_frames

from .conftest import token


async def test_join_publishes_records_and_prints_events(server, room_name, peers, tmp_path):
    agent = await peers("agent", server.url, room_name)
    player = await agent.publish_tone(1000)
    out = tmp_path / "heard.wav"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkdevice.cli", "join", "--url", server.url,
        "--token", token("cli-device", room_name), "--room", room_name,
        "--play", "tone:440", "--record", str(out), "--duration", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        track, pub, who = await agent.expect("track_subscribed")
        assert who.identity == "cli-device"
        frames = await agent.record(track, 1.5)
        assert tone_frames(frames, 48000, 440) >= 0.95 * 75
        await agent.room.local_participant.set_attributes({"lk.agent.state": "thinking"})
        stdout, _ = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        player.cancel()
        if proc.returncode is None:
            proc.kill()
    text = stdout.decode()
    assert proc.returncode == 0, text
    assert f"joined room '{room_name}' as 'cli-device'" in text
    assert "agent_state_changed participant=agent thinking" in text
    assert "loudest tone in the recording: 1000 Hz" in text
    pcm, rate = read_wav(str(out))
    frames = [pcm[i:i + 960] for i in range(0, len(pcm) - 960, 960)]
    assert rate == 48000 and len(frames) > 150  # about 4 s of the 5 s session
    assert tone_frames(frames, 48000, 1000) >= 0.9 * len(frames) - 10


async def test_join_reports_a_refused_token(server, room_name):
    bad = token("cli-device", room_name)[:-4] + "AAAA"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkdevice.cli", "join", "--url", server.url, "--token", bad, "--duration", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    stdout, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert "token rejected by server (HTTP 401)" in stdout.decode()


async def test_gateway_and_simulated_esp32_as_a_user_runs_them(server, room_name, peers, tmp_path):
    """`lkdevice gateway` and `lkdevice sim esp32`, each its own process."""
    import socket

    from lkdevice.rtc.wavfile import WavWriter, dominant_frequency

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gateway = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkdevice.cli", "gateway", "--livekit-url", server.url,
        "--listen", f"127.0.0.1:{port}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    sim = None
    try:
        first = await asyncio.wait_for(gateway.stdout.readline(), 20)
        assert f"ws://127.0.0.1:{port}/v1/device" in first.decode()
        agent = await peers("agent", server.url, room_name)
        player = await agent.publish_tone(1000)
        mic = tmp_path / "mic.wav"
        import numpy as np
        w = WavWriter(str(mic), 16000)
        w.write((0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(16000 * 10) / 16000)).astype(np.int16))
        w.close()
        out = tmp_path / "speaker.wav"
        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lkdevice.cli", "sim", "esp32", "--gateway", f"ws://127.0.0.1:{port}/v1/device",
            "--token", token("esp32", room_name), "--codec", "ulaw", "--play", str(mic), "--record", str(out),
            "--duration", "8", "--heap", "128K", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        track, _, who = await agent.expect("track_subscribed", timeout=20)
        assert who.identity == "esp32"
        frames = await agent.record(track, 2.0)
        heard = tone_frames(frames, 48000, 440)
        stdout, _ = await asyncio.wait_for(sim.communicate(), 30)
        player.cancel()
        # the board's console says why, when the tone fell short (heap, reconnects)
        assert heard >= 0.9 * 100, stdout.decode()
    finally:
        for p in (sim, gateway):
            if p is not None and p.returncode is None:
                p.terminate()
        await asyncio.wait_for(gateway.wait(), 10)
    text = stdout.decode()
    assert sim.returncode == 0, text
    assert f"[lkd] welcome room={room_name} identity=esp32" in text
    assert "[sim] loudest tone in the recording: 1000 Hz" in text, text
    assert dominant_frequency(*read_wav(str(out))) == pytest.approx(1000, abs=5)


async def test_sigterm_to_lkdevice_server_stops_its_livekit_server(tmp_path):
    """A service manager stops `lkdevice server` with SIGTERM: the livekit-server it
    started must go with it, not linger on the port as an orphan."""
    import signal
    import socket

    from lkdevice.host_tools.livekit_server import free_port

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkdevice.cli", "server", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"livekit-server on" in line, line
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", port)) != 0, "livekit-server still listens after SIGTERM"
