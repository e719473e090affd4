"""A minimal synchronous event emitter; handlers may be plain or async functions."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, Callable

log = logging.getLogger(__name__)


class EventEmitter:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable[..., Any]]] = defaultdict(list)

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
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result)
            except Exception:  # a broken handler must not break the room
                log.exception("handler for %r failed", event)
