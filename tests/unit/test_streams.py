"""device/streams.py: text streams assembled from header, chunks and trailer."""

from __future__ import annotations

import asyncio

import pytest
from livekit.protocol import models

from lkdevice.rtc.errors import ProtocolError
from lkdevice.rtc.streams import (MAX_OPEN_STREAMS, MAX_STREAM_BYTES, TRANSCRIPTION_TOPIC, TextStreamAssembler,
                              TextStreamReader)

DS = models.DataStream


def header(stream_id: str, topic: str = TRANSCRIPTION_TOPIC, attributes: dict[str, str] | None = None) -> DS.Header:
    h = DS.Header(stream_id=stream_id, topic=topic, mime_type="text/plain", timestamp=1,
                  text_header=DS.TextHeader(operation_type=DS.OperationType.CREATE))
    h.attributes.update(attributes or {})
    return h


def chunk(stream_id: str, index: int, text: str | bytes) -> DS.Chunk:
    content = text.encode() if isinstance(text, str) else text
    return DS.Chunk(stream_id=stream_id, chunk_index=index, content=content)


def trailer(stream_id: str, reason: str = "", attributes: dict[str, str] | None = None) -> DS.Trailer:
    t = DS.Trailer(stream_id=stream_id, reason=reason)
    t.attributes.update(attributes or {})
    return t


def wire(msg):
    """Serialize and parse back, as the data channel would."""
    return type(msg).FromString(msg.SerializeToString())


async def test_header_chunks_trailer_assemble_text():
    asm = TextStreamAssembler()
    reader = asm.on_header(wire(header("s1", attributes={"lk.segment_id": "seg1"})), "agent")
    assert isinstance(reader, TextStreamReader)
    info = reader.info
    assert (info.stream_id, info.topic, info.participant_identity, info.mime_type) == \
        ("s1", TRANSCRIPTION_TOPIC, "agent", "text/plain")
    assert info.attributes == {"lk.segment_id": "seg1"}
    for i, part in enumerate(["Hello", ", ", "wörld 👋"]):
        asm.on_chunk(wire(chunk("s1", i, part)))
    assert not reader.done
    assert reader.text == "Hello, wörld 👋"
    closed = asm.on_trailer(wire(trailer("s1", attributes={"lk.transcription_final": "true"})))
    assert closed is reader
    assert reader.done and reader.error is None
    assert reader.info.attributes == {"lk.segment_id": "seg1", "lk.transcription_final": "true"}
    assert await asyncio.wait_for(reader.read_all(), 1.0) == "Hello, wörld 👋"
    assert reader.size == len("Hello, wörld 👋".encode())


async def test_reader_yields_chunks_as_they_arrive():
    asm = TextStreamAssembler()
    reader = asm.on_header(header("s1"), "agent")
    received: list[str] = []

    async def consume():
        async for part in reader:
            received.append(part)

    task = asyncio.ensure_future(consume())
    asm.on_chunk(chunk("s1", 0, "one "))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert received == ["one "]
    asm.on_chunk(chunk("s1", 1, "two"))
    asm.on_trailer(trailer("s1"))
    await asyncio.wait_for(task, 1.0)
    assert received == ["one ", "two"]
    # iterating again after the end stops at once
    assert [p async for p in reader] == []


async def test_interleaved_streams():
    asm = TextStreamAssembler()
    a = asm.on_header(header("a", topic="lk.chat"), "alice")
    b = asm.on_header(header("b"), "agent")
    asm.on_chunk(chunk("a", 0, "A1"))
    asm.on_chunk(chunk("b", 0, "B1"))
    asm.on_chunk(chunk("a", 1, "A2"))
    assert asm.on_trailer(trailer("b")) is b
    asm.on_chunk(chunk("b", 1, "late"))  # after its trailer: ignored
    asm.on_chunk(chunk("a", 2, "A3"))
    assert asm.on_trailer(trailer("a")) is a
    assert await asyncio.wait_for(a.read_all(), 1.0) == "A1A2A3"
    assert await asyncio.wait_for(b.read_all(), 1.0) == "B1"
    assert (a.info.participant_identity, a.info.topic) == ("alice", "lk.chat")


def test_chunks_and_trailers_of_unknown_streams_are_ignored():
    asm = TextStreamAssembler()
    reader = asm.on_header(header("known"), "agent")
    asm.on_chunk(chunk("unknown", 0, "x"))
    assert asm.on_trailer(trailer("unknown")) is None
    assert reader.text == "" and not reader.done


def test_byte_streams_are_not_text_streams():
    asm = TextStreamAssembler()
    h = DS.Header(stream_id="f1", topic="files", mime_type="image/jpeg", byte_header=DS.ByteHeader(name="a.jpg"))
    assert asm.on_header(h, "alice") is None
    asm.on_chunk(chunk("f1", 0, b"\xff\xd8"))  # no error
    assert asm.on_trailer(trailer("f1")) is None


def test_trailer_reason_closes_with_error():
    asm = TextStreamAssembler()
    reader = asm.on_header(header("s1"), "agent")
    asm.on_chunk(chunk("s1", 0, "partial"))
    asm.on_trailer(trailer("s1", reason="interrupted"))
    assert reader.done and reader.error == "interrupted"
    assert reader.text == "partial"


def test_stream_size_is_capped():
    asm = TextStreamAssembler()
    reader = asm.on_header(header("big"), "agent")
    half = b"a" * (MAX_STREAM_BYTES // 2)
    asm.on_chunk(chunk("big", 0, half))
    asm.on_chunk(chunk("big", 1, half))
    assert not reader.done  # exactly at the limit is fine
    asm.on_chunk(chunk("big", 2, b"b"))
    assert reader.done
    assert reader.error and "exceeds" in reader.error
    assert len(reader.text) == MAX_STREAM_BYTES  # the oversize chunk was not kept
    asm.on_chunk(chunk("big", 3, b"more"))  # the stream is forgotten
    assert asm.on_trailer(trailer("big")) is None
    assert len(reader.text) == MAX_STREAM_BYTES


def test_open_stream_count_is_capped():
    asm = TextStreamAssembler()
    readers = [asm.on_header(header(f"s{i}"), "agent") for i in range(MAX_OPEN_STREAMS)]
    with pytest.raises(ProtocolError, match=str(MAX_OPEN_STREAMS)):
        asm.on_header(header("one-too-many"), "agent")
    # closing one makes room again
    asm.on_trailer(trailer("s0"))
    assert readers[0].done
    assert asm.on_header(header("now-fits"), "agent") is not None


async def test_sender_left_closes_its_streams_with_error():
    asm = TextStreamAssembler()
    gone = asm.on_header(header("g"), "agent")
    stays = asm.on_header(header("s"), "alice")
    asm.on_chunk(chunk("g", 0, "half a sent"))
    asm.sender_left("agent")
    assert gone.done and gone.error == "sender disconnected"
    assert await asyncio.wait_for(gone.read_all(), 1.0) == "half a sent"
    assert not stays.done
    asm.on_chunk(chunk("g", 1, "ence"))  # forgotten
    assert gone.text == "half a sent"
    asm.on_chunk(chunk("s", 0, "fine"))
    assert stays.text == "fine"


def test_invalid_utf8_is_replaced_not_raised():
    asm = TextStreamAssembler()
    reader = asm.on_header(header("s"), "agent")
    asm.on_chunk(chunk("s", 0, b"ok\xff"))
    assert reader.text == "ok\ufffd"


async def test_inline_stream_arrives_whole_in_the_header():
    asm = TextStreamAssembler()
    h = header("small", topic="lk.chat")
    h.inline_content = "hi there ✓".encode()
    reader = asm.on_header(wire(h), "alice")
    assert reader is not None
    assert reader.done and reader.error is None
    assert await asyncio.wait_for(reader.read_all(), 1.0) == "hi there ✓"
    assert reader.info.topic == "lk.chat"
    # it takes no slot among the open streams and expects no trailer
    assert asm.on_trailer(trailer("small")) is None
    for i in range(MAX_OPEN_STREAMS):
        asm.on_header(header(f"s{i}"), "agent")


def test_oversize_inline_stream_is_protocol_error():
    asm = TextStreamAssembler()
    h = header("huge")
    h.inline_content = b"a" * (MAX_STREAM_BYTES + 1)
    with pytest.raises(ProtocolError, match="exceeds"):
        asm.on_header(h, "agent")
