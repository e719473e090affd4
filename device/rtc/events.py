"""A minimal synchronous event emitter; handlers may be plain or async functions."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, Callable

from .tasks import TaskSet

log = logging.getLogger(__name__)

# async handlers still running; past this a handler that never ends is a bug, not load
MAX_HANDLER_TASKS = 1024


class EventEmitter:
    def __init__(self, *, max_handler_tasks: int = MAX_HANDLER_TASKS) -> None:
        self._handlers: dict[str, list[Callable[..., Any]]] = defaultdict(list)
        self._handler_tasks = TaskSet(log, max_handler_tasks)

    def on(self, event: str, handler: Callable[..., Any] | None = None):
        """Register a handler; usable as a decorator."""
        if handler is None:
            def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
                self._handlers[event].append(fn)
                return fn
            return deco
        self._handlers[event].append(handler)
        return handler

    def off(self, event: str, handler: Callable[..., Any]) -> None:
        if handler in self._handlers.get(event, []):
            self._handlers[event].remove(handler)

    def emit(self, event: str, *args: Any) -> None:
        for handler in list(self._handlers.get(event, [])):
            try:
                result = handler(*args)
            except Exception:  # a broken handler must not break the room
                log.exception("handler for %r failed", event)
                continue
            if asyncio.iscoroutine(result):
                self._handler_tasks.spawn(result, f"async handler for {event!r}")

    async def cancel_handlers(self, timeout: float = 5.0) -> None:
        """Cancel the async handlers still running and wait for them (the owner is closing)."""
        await self._handler_tasks.aclose(timeout)
