"""Incoming text streams (`lk.chat`, `lk.transcription`, ...) assembled from data packets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Union

from livekit.protocol import models

from .errors import ProtocolError

MAX_OPEN_STREAMS = 64
MAX_STREAM_BYTES = 1 << 20

TRANSCRIPTION_TOPIC = "lk.transcription"
CHAT_TOPIC = "lk.chat"


@dataclass
class TextStreamInfo:
    stream_id: str
    topic: str
    participant_identity: str
    mime_type: str
    attributes: dict[str, str] = field(default_factory=dict)


class TextStreamReader:
    """Async iterable over the chunks of one stream, as they arrive."""

    def __init__(self, info: TextStreamInfo):
        self.info = info
        # the chunks are kept anyway (for `text`); readers walk them, so nothing else queues
        self._parts: list[str] = []
        self._read = 0
        self._changed = asyncio.Event()
        self.size = 0
        self.done = False
        self.error: str | None = None

    def _push(self, text: str) -> None:
        self._parts.append(text)
        self._changed.set()

    def _close(self, error: str | None = None) -> None:
        self.done = True
        self.error = error
        self._changed.set()

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        while self._read >= len(self._parts):
            if self.done:
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()
        self._read += 1
        return self._parts[self._read - 1]

    async def read_all(self) -> str:
        async for _ in self:
            pass
        return self.text


StreamHandler = Callable[[TextStreamReader, str], Union[None, Awaitable[None]]]


class TextStreamAssembler:
    """Tracks open streams by id; returns readers as they open and close."""

    def __init__(self) -> None:
        self._open: dict[str, TextStreamReader] = {}

    def on_header(self, header: models.DataStream.Header, sender: str) -> TextStreamReader | None:
        if header.WhichOneof("content_header") != "text_header":
            return None  # byte streams are not for us yet
        if len(self._open) >= MAX_OPEN_STREAMS:
            raise ProtocolError(f"more than {MAX_OPEN_STREAMS} text streams open at once")
        info = TextStreamInfo(header.stream_id, header.topic, sender, header.mime_type, dict(header.attributes))
        reader = TextStreamReader(info)
        if header.inline_content:  # small streams come whole in the header, with no trailer
            if len(header.inline_content) > MAX_STREAM_BYTES:
                raise ProtocolError(f"inline stream exceeds {MAX_STREAM_BYTES} bytes")
            reader._push(header.inline_content.decode("utf-8", errors="replace"))
            reader._close()
            return reader
        self._open[header.stream_id] = reader
        return reader

    def on_chunk(self, chunk: models.DataStream.Chunk) -> None:
        reader = self._open.get(chunk.stream_id)
        if reader is None:
            return
        reader.size += len(chunk.content)
        if reader.size > MAX_STREAM_BYTES:
            self._open.pop(chunk.stream_id)._close(f"stream exceeds {MAX_STREAM_BYTES} bytes")
            return
        reader._push(chunk.content.decode("utf-8", errors="replace"))

    def on_trailer(self, trailer: models.DataStream.Trailer) -> TextStreamReader | None:
        reader = self._open.pop(trailer.stream_id, None)
        if reader is not None:
            reader.info.attributes.update(trailer.attributes)
            reader._close(trailer.reason or None)
        return reader

    def sender_left(self, identity: str) -> None:
        for sid, reader in list(self._open.items()):
            if reader.info.participant_identity == identity:
                self._open.pop(sid)._close("sender disconnected")
