"""Background tasks that are kept, logged and cancelled.

asyncio holds only a weak reference to a task: one that nobody else holds can
be garbage-collected while it waits, and its exception surfaces, if ever, as
"Task exception was never retrieved", far from its cause. A `TaskSet` keeps
each task until it ends, logs its failure under the owner's logger, bounds
how many run at once, and cancels the rest when its owner closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine


class TaskSet:
    def __init__(self, log: logging.Logger, limit: int = 1024):
        self._log = log
        self._tasks: set[asyncio.Task] = set()
        self.limit = limit
        self.refused = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str, *, force: bool = False) -> asyncio.Task | None:
        """Run coro as a task; None (and an error logged) when `limit` tasks are running already,
        unless `force` (a close that must happen whatever else is running)."""
        if len(self._tasks) >= self.limit and not force:
            coro.close()  # never started: no "coroutine was never awaited" warning either
            self.refused += 1
            self._log.error("%s not started: %d tasks of this kind are still running", what, len(self._tasks))
            return None
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what))
        return task

    def _done(self, task: asyncio.Task, what: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("%s failed", what, exc_info=exc)

    def cancel(self) -> list[asyncio.Task]:
        """Cancel every task but the caller's own (a close that runs in one of them must finish)."""
        me = asyncio.current_task()
        cancelled = [t for t in self._tasks if t is not me and not t.done()]
        for t in cancelled:
            t.cancel()
        return cancelled

    async def aclose(self, timeout: float = 5.0) -> None:
        """Cancel and wait (at most `timeout` seconds) for the tasks to end."""
        cancelled = self.cancel()
        if cancelled:
            await asyncio.wait(cancelled, timeout=timeout)
