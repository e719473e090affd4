"""A real livekit-server per session, and the official SDK as the far side.

Live tests run inside host_tools/isolated.sh: a private network namespace with
loopback and a veth pair, so WebRTC finds host addresses and nothing leaves.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import numpy as np
import pytest
from livekit import rtc

from lkdevice.host_tools.livekit_server import DEV_API_KEY, DEV_API_SECRET, LocalServer, ServerConfig
from lkdevice.host_tools.tokens import mint_token


def server_config() -> ServerConfig:
    node_ip = os.environ.get("LKDEVICE_NODE_IP", "127.0.0.1")
    ips = [node_ip] + (["127.0.0.1"] if node_ip != "127.0.0.1" else [])
    return ServerConfig(node_ip=node_ip, candidate_ips=ips)


@pytest.fixture(scope="session")
def server():
    if os.environ.get("LKDEVICE_ISOLATED") != "1":
        pytest.fail("live tests run inside a private network namespace: "
                    "host_tools/isolated.sh python -m pytest tests (or `make test`)")
    srv = LocalServer(server_config()).start()
    yield srv
    srv.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name in ("server", "own_server"):
            srv = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(srv, LocalServer):
                report.sections.append((f"livekit-server log ({name}, tail)", srv.log_tail(80)))


@pytest.fixture
def room_name(request) -> str:
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"


def sine(freq: float, seconds: float, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@pytest.fixture
async def gateway(server):
    """A gateway in this process for the session's server, on a free port."""
    from lkdevice.gateway import Gateway, GatewayConfig

    gw = await Gateway(GatewayConfig(livekit_url=server.url, port=0, grace=15.0)).start()
    yield gw
    await gw.close()


def token(identity: str, room: str, **kwargs) -> str:
    return mint_token(DEV_API_KEY, DEV_API_SECRET, identity=identity, room=room, **kwargs)


class Peer:
    """An official-SDK participant that records what it sees."""

    def __init__(self, identity: str):
        self.identity = identity
        self.room = rtc.Room()
        self.events: asyncio.Queue = asyncio.Queue()
        self.log: list[tuple] = []
        for name in ("participant_connected", "participant_disconnected", "track_subscribed", "track_muted",
                     "track_unmuted", "data_received", "participant_attributes_changed"):
            self.room.on(name, self._recorder(name))

    def _recorder(self, name):
        def record(*args):
            self.log.append((name, *args))
            self.events.put_nowait((name, *args))
        return record

    async def connect(self, url: str, room: str, **token_kwargs) -> "Peer":
        await self.room.connect(url, token(self.identity, room, **token_kwargs))
        return self

    async def expect(self, name: str, predicate=lambda *a: True, timeout: float = 10.0):
        """Wait for the next event `name` matching `predicate`; earlier ones are kept."""
        for entry in self.log:
            if entry[0] == name and predicate(*entry[1:]):
                self.log.remove(entry)
                return entry[1:]
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"{self.identity}: no {name} within {timeout}s; saw {[e[0] for e in self.log]}")
            try:
                entry = await asyncio.wait_for(self.events.get(), remaining)
            except asyncio.TimeoutError:
                continue
            if entry[0] == name and predicate(*entry[1:]) and entry in self.log:
                self.log.remove(entry)
                return entry[1:]

    def saw(self, name: str, predicate=lambda *a: True) -> bool:
        return any(e[0] == name and predicate(*e[1:]) for e in self.log)

    async def publish_tone(self, frequency: float, name: str = "agent-voice") -> asyncio.Task:
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track(name, source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

        async def play():
            n, phase = 480, 0
            while True:
                t = (phase + np.arange(n)) / 48000
                frame = rtc.AudioFrame.create(48000, 1, n)
                np.copyto(np.frombuffer(frame.data, dtype=np.int16),
                          (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16))
                await source.capture_frame(frame)
                phase += n

        return asyncio.ensure_future(play())

    async def record(self, track, seconds: float, frame_ms: int = 20, wait_audible: float = 5.0) -> list[np.ndarray]:
        """Frames of `frame_ms` for `seconds` of wall time, from the first audible one."""
        n = 48000 * frame_ms // 1000
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1, frame_size_ms=frame_ms)
        frames: list[np.ndarray] = []
        loop = asyncio.get_running_loop()
        start = None
        give_up = loop.time() + wait_audible + seconds
        try:
            async for ev in stream:
                pcm = np.frombuffer(ev.frame.data, dtype=np.int16).copy()
                if start is None:
                    if np.abs(pcm).max() < 1000:
                        if loop.time() > give_up:
                            break
                        continue
                    start = loop.time()
                frames.extend(pcm[i:i + n] for i in range(0, len(pcm) - n + 1, n))
                if loop.time() - start >= seconds:
                    break
        finally:
            await stream.aclose()
        return frames

    async def close(self):
        await self.room.disconnect()


@pytest.fixture
async def peers():
    made: list[Peer] = []

    async def make(identity: str, url: str, room: str, **kw) -> Peer:
        p = await Peer(identity).connect(url, room, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        try:
            await asyncio.wait_for(p.close(), 5)
        except Exception:
            pass


@pytest.fixture
async def devices():
    """Our own client rooms, closed after the test."""
    import lkdevice
    made = []

    async def make(url: str, room: str, identity: str = "device", options=None, **token_kwargs):
        r = await lkdevice.connect(url, token(identity, room, **token_kwargs), options)
        made.append(r)
        return r

    yield make
    for r in made:
        try:
            await asyncio.wait_for(r.disconnect(), 5)
        except Exception:
            pass
