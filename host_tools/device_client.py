"""A device-protocol client in CPython: the load generator and a test device.

It speaks the same protocol as the firmware (through the same codec module), so
the gateway can be exercised from tests and benches without a MicroPython
process per device.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from lkdevice import device_protocol as dp
from lkdevice.gateway.codecs import FrameCodec


LOG_LIMIT = 4096


class DeviceClient:
    def __init__(self, url: str, *, codec: str = "pcm16", max_text: int = dp.DEFAULT_DEVICE_TEXT):
        self.url = url
        self.codec_name = codec
        self.codec = dp.codec_id(codec)
        self.max_text = max_text
        self.ws: ClientConnection | None = None
        # the newest LOG_LIMIT control messages; `expect` looks through them
        self.log: list[dict[str, Any]] = []
        self._trimmed = 0
        self._arrived = asyncio.Event()
        self.audio: asyncio.Queue[tuple[int, int, np.ndarray, float]] = asyncio.Queue(maxsize=3000)
        self.welcome: dict[str, Any] | None = None
        self.encoder = FrameCodec(self.codec)
        self.decoder = FrameCodec(self.codec)
        self._reader: asyncio.Task | None = None
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.token: str | None = None

    async def open(self, **kwargs) -> "DeviceClient":
        self.closed.clear()
        self.close_code = None
        self.ws = await connect(self.url, max_size=2 ** 20, compression=None, **kwargs)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def hello(self, token: str, timeout: float = 15.0, **fields) -> dict[str, Any]:
        """Join; returns the welcome (or the fatal error message)."""
        self.token = token
        await self.send({"t": "hello", "v": dp.PROTOCOL_VERSION, "token": token, "codec": self.codec_name,
                         "max_text": self.max_text, **fields})
        msg = await self.expect(lambda m: m["t"] in ("welcome", "error"), timeout)
        if msg["t"] == "welcome":
            self.welcome = msg
        return msg

    async def resume(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.welcome is not None
        await self.send({"t": "resume", "v": dp.PROTOCOL_VERSION, "session": self.welcome["session"],
                         "key": self.welcome["key"]})
        return await self.expect(lambda m: m["t"] in ("resumed", "error"), timeout)

    async def send(self, msg: dict[str, Any] | str) -> None:
        await self.ws.send(msg if isinstance(msg, str) else json.dumps(msg))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    def encode(self, pcm: np.ndarray) -> bytes:
        return self.encoder.encode(pcm)

    async def send_pcm(self, pcm: np.ndarray) -> None:
        await self.ws.send(self.encode(pcm))

    async def stream(self, samples: np.ndarray, *, realtime: bool = True) -> None:
        """Send 16 kHz samples as 20 ms frames, paced at real time."""
        start = time.monotonic()
        n = dp.FRAME_SAMPLES
        for i in range(len(samples) // n):
            if realtime:
                delay = start + i * dp.FRAME_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_pcm(samples[i * n:(i + 1) * n])

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    self._on_audio(frame)
                else:
                    msg = json.loads(frame)
                    dp.validate(msg, dp.GATEWAY_MESSAGES)
                    if msg["t"] == "token":
                        self.token = msg["token"]
                    self.log.append(msg)
                    if len(self.log) > LOG_LIMIT:
                        cut = len(self.log) - LOG_LIMIT // 2
                        del self.log[:cut]
                        self._trimmed += cut
                    self._arrived.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()

    def _on_audio(self, frame: bytes) -> None:
        seq = dp.check_frame(frame, self.codec)
        pcm = self.decoder.decode(frame)
        if self.audio.full():
            self.audio.get_nowait()
        self.audio.put_nowait((seq, dp.frame_timestamp(frame), pcm, time.monotonic()))

    async def expect(self, predicate, timeout: float = 10.0) -> dict[str, Any]:
        """The first message (seen before or arriving) matching predicate."""
        deadline = time.monotonic() + timeout
        seen = self._trimmed  # counted over the whole connection, so trimming loses no place
        while True:
            for msg in self.log[max(0, seen - self._trimmed):]:
                if predicate(msg):
                    return msg
            seen = self._trimmed + len(self.log)
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError(f"no matching message within {timeout:.0f}s; saw {self.log[-5:]}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def record(self, seconds: float) -> np.ndarray:
        """Received audio for `seconds` of wall time, frames concatenated in arrival order."""
        frames = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                _, _, pcm, _ = await asyncio.wait_for(self.audio.get(), left)
                frames.append(pcm)
            except asyncio.TimeoutError:
                break
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)

    def drain_audio(self) -> None:
        while not self.audio.empty():
            self.audio.get_nowait()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader:
            await asyncio.gather(self._reader, return_exceptions=True)
