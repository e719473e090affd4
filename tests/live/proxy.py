"""A TCP relay in front of the server's signal port, so a test can cut the socket."""

from __future__ import annotations

import asyncio
from typing import Callable


class TcpRelay:
    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.host = host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._frozen: set[asyncio.StreamWriter] = set()
        self.connections = 0
        # Given a connection's first request bytes, True: end that connection as
        # soon as the server's first WebSocket message has passed (a flapping link).
        self.cut_after_first_message: Callable[[bytes], bool] | None = None

    async def start(self) -> "TcpRelay":
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        cut_check = self.cut_after_first_message
        cut_here: list[bool] = []

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if dst in self._frozen:
                        continue  # a link that went silent: bytes vanish, TCP stays up
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                if dst not in self._frozen:  # behind a dead router the far end hears no FIN, no RST
                    dst.transport.abort()

        async def upstream() -> None:
            head = await reader.read(65536)
            if head:
                cut_here.append(bool(cut_check and cut_check(head)))
                up_writer.write(head)
            await pipe(reader, up_writer)

        async def downstream() -> None:
            while not cut_here:
                await asyncio.sleep(0.001)
            if cut_here[0]:
                await self._forward_first_message(up_reader, writer)
                writer.close()  # a FIN after the message, so the client reads it first
                up_writer.transport.abort()
                return
            await pipe(up_reader, writer)

        await asyncio.gather(upstream(), downstream())
        self._links -= {writer, up_writer}

    @staticmethod
    async def _forward_first_message(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """The HTTP upgrade response, then exactly one (unmasked) WebSocket frame."""
        dst.write(await src.readuntil(b"\r\n\r\n"))
        head = await src.readexactly(2)
        size = head[1] & 0x7F
        ext = b""
        if size == 126:
            ext = await src.readexactly(2)
            size = int.from_bytes(ext, "big")
        elif size == 127:
            ext = await src.readexactly(8)
            size = int.from_bytes(ext, "big")
        dst.write(head + ext + await src.readexactly(size))
        await dst.drain()

    def freeze(self) -> None:
        """Existing connections stay open but carry nothing, as behind a dead router."""
        self._frozen |= self._links

    def cut(self) -> None:
        """Abort every relayed connection, with no close handshake, as a dead link would."""
        for w in list(self._links | self._frozen):
            w.transport.abort()
        self._links.clear()
        self._frozen.clear()

    async def close(self) -> None:
        self.cut()
        if self._server:
            self._server.close()
            await self._server.wait_closed()
