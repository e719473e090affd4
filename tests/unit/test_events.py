"""device/rtc/events.py: async handlers run to the end, and their failures are logged."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref

import pytest

from lkdevice.rtc.events import EventEmitter


async def _collect() -> None:
    for _ in range(3):
        gc.collect()
        await asyncio.sleep(0)


async def test_async_handler_is_not_garbage_collected_mid_flight():
    """The handler waits on a future only it holds: nothing but the emitter keeps its task alive."""
    emitter = EventEmitter()
    waiting: list[weakref.ref] = []
    finished: list[str] = []

    async def handler(value: str) -> None:
        fut = asyncio.get_running_loop().create_future()
        waiting.append(weakref.ref(fut))
        await fut
        finished.append(value)

    emitter.on("ping", handler)
    emitter.emit("ping", "a")
    await asyncio.sleep(0)
    assert waiting, "the handler did not start"
    await _collect()
    fut = waiting[0]()
    assert fut is not None, "the handler's task was garbage-collected while it waited"
    fut.set_result(None)
    await asyncio.sleep(0.01)
    assert finished == ["a"]


async def test_async_handler_failure_is_logged_with_the_event(caplog):
    emitter = EventEmitter()

    async def handler() -> None:
        await asyncio.sleep(0)
        raise ValueError("broken handler")

    emitter.on("track_subscribed", handler)
    with caplog.at_level(logging.ERROR, logger="lkdevice.rtc.events"):
        emitter.emit("track_subscribed")
        await asyncio.sleep(0.01)
    failed = [r for r in caplog.records if r.name == "lkdevice.rtc.events" and r.exc_info]
    assert failed, caplog.text
    assert "track_subscribed" in failed[0].getMessage() and isinstance(failed[0].exc_info[1], ValueError)


async def test_sync_handler_failure_is_logged_and_others_still_run(caplog):
    emitter = EventEmitter()
    seen: list[int] = []
    emitter.on("e", lambda: 1 / 0)
    emitter.on("e", lambda: seen.append(1))
    with caplog.at_level(logging.ERROR, logger="lkdevice.rtc.events"):
        emitter.emit("e")
    assert seen == [1] and "ZeroDivisionError" in caplog.text


async def test_cancel_handlers_stops_running_handlers():
    emitter = EventEmitter()
    cancelled = asyncio.Event()

    async def handler() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    emitter.on("e", handler)
    emitter.emit("e")
    await asyncio.sleep(0)
    await emitter.cancel_handlers()
    assert cancelled.is_set()


async def test_handlers_in_flight_are_bounded(caplog):
    emitter = EventEmitter(max_handler_tasks=4)
    release = asyncio.Event()
    started: list[int] = []

    async def handler(i: int) -> None:
        started.append(i)
        await release.wait()

    emitter.on("e", handler)
    with caplog.at_level(logging.ERROR, logger="lkdevice.rtc.events"):
        for i in range(6):
            emitter.emit("e", i)
        await asyncio.sleep(0)
    assert started == [0, 1, 2, 3]
    assert "not started" in caplog.text
    release.set()
    await asyncio.sleep(0.01)
    emitter.emit("e", 9)  # room again once they finish
    await asyncio.sleep(0)
    assert started[-1] == 9


@pytest.mark.parametrize("decorator", [True, False])
def test_on_and_off(decorator):
    emitter = EventEmitter()
    seen: list[str] = []
    if decorator:
        @emitter.on("x")
        def handler(v):
            seen.append(v)
    else:
        def handler(v):
            seen.append(v)
        emitter.on("x", handler)
    emitter.emit("x", "1")
    emitter.off("x", handler)
    emitter.emit("x", "2")
    assert seen == ["1"]
