"""device/rtc/tasks.py: background tasks are kept, logged, bounded and cancelled."""

from __future__ import annotations

import asyncio
import logging

from lkdevice.rtc.tasks import TaskSet

log = logging.getLogger("lkdevice.test.tasks")


async def test_failure_is_logged_under_the_owners_logger_with_what_it_was(caplog):
    tasks = TaskSet(log)

    async def boom() -> None:
        raise KeyError("k")

    with caplog.at_level(logging.ERROR, logger=log.name):
        tasks.spawn(boom(), "closing device esp32's old link")
        await asyncio.sleep(0.01)
    (record,) = [r for r in caplog.records if r.name == log.name]
    assert record.getMessage() == "closing device esp32's old link failed"
    assert isinstance(record.exc_info[1], KeyError)
    assert len(tasks) == 0


async def test_cancel_spares_the_task_that_asks():
    """A session's close may run in one of its own tasks: it cancels the others, and finishes."""
    tasks = TaskSet(log)
    sleeper = tasks.spawn(asyncio.sleep(60), "sleeper")

    async def closer() -> str:
        await tasks.aclose()
        await asyncio.sleep(0)
        return "closed"

    me = tasks.spawn(closer(), "close")
    assert await me == "closed"
    assert sleeper.cancelled()


async def test_limit_refuses_and_does_not_leak_a_coroutine(caplog):
    tasks = TaskSet(log, limit=2)
    gate = asyncio.Event()
    assert tasks.spawn(gate.wait(), "a") and tasks.spawn(gate.wait(), "b")
    extra = gate.wait()
    with caplog.at_level(logging.ERROR, logger=log.name):
        assert tasks.spawn(extra, "c") is None
    assert tasks.refused == 1 and "c not started" in caplog.text
    assert extra.cr_frame is None  # closed, so no "never awaited" warning
    assert tasks.spawn(gate.wait(), "a close that must happen", force=True) is not None
    gate.set()
    await asyncio.sleep(0.01)
    assert len(tasks) == 0
