"""The board's link to the gateway, through the harness: a TCP relay it can cut for a while.

A real board's Wi-Fi cannot be switched off from here, but its connection to
the gateway can: the board is provisioned with the relay's address, the relay
forwards to the gateway. `cut(seconds)` closes every open connection both ways
and refuses new ones until the time is up, as an access point gone away does
(the board sees its link lost and reconnects with backoff; the gateway sees
the device go and, past its grace, leaves the room). The gateway process stays
up throughout, so its memory is measured across the cuts.
"""

from __future__ import annotations

import asyncio
import time

CHUNK = 16384
MAX_CONNECTIONS = 8  # one board needs one (two while it reconnects); more are refused


class LinkRelay:
    def __init__(self, listen: str, upstream: str):
        self.listen = listen
        self.upstream = upstream
        self._server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()  # both ends of every forwarded connection
        self._tasks: set[asyncio.Task] = set()  # one per forwarded connection
        self._down_until = 0.0
        self.connections = 0  # accepted and forwarded, over the relay's life
        self.refused = 0

    async def start(self) -> "LinkRelay":
        host, _, port = self.listen.rpartition(":")
        self._server = await asyncio.start_server(self._accept, host, int(port), reuse_address=True)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._drop_all()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=2)
            await self._server.wait_closed()
            self._server = None

    def cut(self, seconds: float) -> None:
        """Every connection closed now, new ones refused for `seconds`."""
        self._down_until = time.monotonic() + seconds
        self._drop_all()

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def _drop_all(self) -> None:
        for w in list(self._open):
            w.transport.abort()  # a reset, not a goodbye: nothing more gets through
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down or len(self._tasks) >= MAX_CONNECTIONS:
            self.refused += 1
            writer.transport.abort()
            return
        host, _, port = self.upstream.rpartition(":")
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
        except (OSError, asyncio.TimeoutError):
            self.refused += 1  # the gateway is away (restarting): the board sees a refusal, as without us
            writer.transport.abort()
            return
        self.connections += 1
        self._open |= {writer, up_w}
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        finally:
            self._open -= {writer, up_w}
            self._tasks.discard(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(CHUNK):
                dst.write(data)
                await dst.drain()  # the slow side holds the fast one back: no unbounded buffer here
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not dst.transport.is_closing():
                dst.close()
