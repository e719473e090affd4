"""Robot commands: plugins that answer the agent's RPCs and data topics, and a watchdog on the motors.

A plugin (a `Plugin` subclass) registers RPC methods and data-topic handlers in
`setup(api)`; each handler gets a `Command` and returns something JSON-encodable
(or a string, sent as it is). A handler that starts the motors calls
`command.moving(duration_s)`: the router's watchdog then stops them when no
motion command has come for `watchdog_s`, or when the duration is over,
whichever is first. `stop_all(reason)` stops them at once.

The timing (`Watchdog`) and the payload checks are pure; `CommandRouter` is the
thin asyncio layer between them and a `Room`.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Union

from ..rtc.data import DataMessage
from ..rtc.errors import RpcError
from ..rtc.rpc import RpcInvocation
from ..rtc.tasks import TaskSet

ENTRY_POINT_GROUP = "lkdevice.robot_plugins"
DEFAULT_WATCHDOG_S = 0.5
DEFAULT_HANDLER_TIMEOUT_S = 2.0
# handlers running at once, RPCs and data messages together; beyond it RPCs get "busy", data is dropped
MAX_CONCURRENT_COMMANDS = 8
# a plugin's stop() is a safety action: it gets its own short bound
STOP_TIMEOUT_S = 1.0
MAX_PLUGINS = 32
MAX_ERROR_MESSAGE = 256

Clock = Callable[[], float]
Result = Any
Handler = Callable[["Command"], Union[Result, Awaitable[Result]]]


class PluginError(Exception):
    """A plugin spec that cannot be loaded, or plugins that cannot be attached together."""


class PayloadError(ValueError):
    """A command's payload is not what the method takes; the message says what is wrong."""


# -- pure parts ----------------------------------------------------------------------------------------

def parse_params(payload: str | bytes, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A command's JSON object (empty payload: {}); unknown keys refused when `allowed` is given."""
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = bytes(payload).decode()
        except UnicodeDecodeError:
            raise PayloadError("payload is not UTF-8 text") from None
    if not payload.strip():
        return {}
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise PayloadError(f"payload is not JSON: {exc.msg} at character {exc.pos}") from None
    if value is None:  # some tool-calling agents send null for "no arguments"
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"payload must be a JSON object, got {type(value).__name__}")
    if allowed is not None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise PayloadError(f"unknown field {unknown[0]!r} (expected {', '.join(allowed)})")
    return value


def number(params: dict[str, Any], key: str, low: float, high: float, default: float | None = None) -> float | None:
    """params[key] as a finite number in [low, high]; `default` when absent."""
    if key not in params or params[key] is None:
        return default
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PayloadError(f"{key} must be a number, got {json.dumps(value)[:40]}")
    if not low <= value <= high:
        raise PayloadError(f"{key} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


def encode_result(result: Result) -> str:
    if result is None:
        return ""
    if isinstance(result, str):
        return result
    return json.dumps(result, separators=(",", ":"))


class Watchdog:
    """When the motors must stop: no motion command for `timeout_s` (0: never), or a move's duration over."""

    def __init__(self, timeout_s: float = DEFAULT_WATCHDOG_S):
        if timeout_s < 0:
            raise ValueError("watchdog timeout must be >= 0")
        self.timeout_s = timeout_s
        self._fed: float | None = None
        self._until: float | None = None
        self._duration: float | None = None

    @property
    def armed(self) -> bool:
        return self._fed is not None

    def moving(self, now: float, duration_s: float | None = None) -> None:
        """A motion command came: feed the dog; a duration replaces the previous move's end."""
        self._fed = now
        self._duration = duration_s
        self._until = None if duration_s is None else now + duration_s

    def stopped(self) -> None:
        self._fed = self._until = self._duration = None

    def deadline(self) -> float | None:
        if self._fed is None:
            return None
        ends = [t for t in (self._fed + self.timeout_s if self.timeout_s > 0 else None, self._until) if t is not None]
        return min(ends) if ends else None

    def expired(self, now: float) -> str | None:
        """The reason to stop now, once (the dog is disarmed by it); None while nothing is due."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        if self._until is not None and self._until <= deadline:
            reason = f"duration {self._duration * 1000:.0f} ms elapsed"
        else:
            reason = f"watchdog: no command for {self.timeout_s * 1000:.0f} ms"
        self.stopped()
        return reason


# -- the plugin API ------------------------------------------------------------------------------------

@dataclass
class Command:
    """One RPC call or data message, as a handler sees it."""

    method: str  # the RPC method, or the data topic
    caller: str
    payload: str | bytes
    _router: "CommandRouter | None" = field(default=None, repr=False)
    _plugin: "Plugin | None" = field(default=None, repr=False)

    def params(self, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        return parse_params(self.payload, allowed)

    def moving(self, duration_s: float | None = None) -> None:
        """The motors run: arm (feed) the watchdog; it stops them after `duration_s` at the latest."""
        if self._router is not None and self._plugin is not None:
            self._router._moving(self._plugin, duration_s)

    def stopped(self) -> None:
        """The motors stopped on this command (e.g. `stop`): nothing left for the watchdog."""
        if self._router is not None and self._plugin is not None:
            self._router._stopped(self._plugin)


class PluginAPI:
    """What `Plugin.setup` registers its handlers with."""

    def __init__(self, plugin: "Plugin", log: logging.Logger):
        self.plugin = plugin
        self.log = log
        self.methods: dict[str, Handler] = {}
        self.topics: dict[str, Handler] = {}

    def rpc(self, method: str, handler: Handler) -> None:
        if method in self.methods:
            raise PluginError(f"plugin {self.plugin.name!r} registers RPC method {method!r} twice")
        self.methods[method] = handler

    def topic(self, topic: str, handler: Handler) -> None:
        if topic in self.topics:
            raise PluginError(f"plugin {self.plugin.name!r} registers data topic {topic!r} twice")
        self.topics[topic] = handler


class Plugin:
    """Subclass this; `settings` is the plugin's table from the config file."""

    name = "plugin"

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = dict(settings or {})

    def setup(self, api: PluginAPI) -> None:
        """Register RPC methods and data topics: api.rpc("move", self.move), api.topic("joy", self.joy)."""

    def agent_state(self, identity: str, state: str) -> None:
        """The agent's `lk.agent.state` changed (listening, thinking, speaking, ...)."""

    def transcript(self, identity: str, text: str, final: bool) -> None:
        """A `lk.transcription` segment: `identity` is who spoke."""

    def stop(self, reason: str) -> Awaitable[None] | None:
        """Stop the motors now (watchdog, SIGTERM, disconnect). May be async; must be quick."""

    def close(self) -> Awaitable[None] | None:
        """Release the hardware. May be async."""


# -- loading ---------------------------------------------------------------------------------------------

def _instantiate(spec: str, obj: Any, settings: dict[str, Any]) -> Plugin:
    if isinstance(obj, Plugin):
        if settings:
            obj.settings.update(settings)
        return obj
    if callable(obj):
        try:
            plugin = obj(settings)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {spec!r}: {type(exc).__name__}: {exc}") from exc
        if isinstance(plugin, Plugin):
            return plugin
        raise PluginError(f"plugin {spec!r}: {getattr(obj, '__name__', obj)!s}(settings) returned "
                          f"{type(plugin).__name__}, not a lkdevice.robot.commands.Plugin")
    raise PluginError(f"plugin {spec!r} is a {type(obj).__name__}: expected a Plugin subclass, "
                      "a Plugin instance or a factory taking the settings dict")


def _load_object(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PluginError(f"plugin {spec!r}: expected 'module:object'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"plugin {spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"plugin {spec!r}: {module_name} has no {attr!r}") from None
    return obj


def _load_entry_point(spec: str) -> Any:
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for ep in found:
        if ep.name == spec:
            try:
                return ep.load()
            except Exception as exc:
                raise PluginError(f"plugin {spec!r} (entry point {ep.value}): cannot load: "
                                  f"{type(exc).__name__}: {exc}") from exc
    names = sorted({ep.name for ep in found})[:10]
    installed = f"installed: {', '.join(names)}" if names else "none installed"
    raise PluginError(f"plugin {spec!r}: not 'sim', not 'module:object', and no entry point of that name in "
                      f"group {ENTRY_POINT_GROUP} ({installed})")


def load_plugins(specs: list[str], settings: dict[str, dict] | None = None) -> list[Plugin]:
    """Plugins by spec: "sim" (the built-in drive), "module:object", or an entry point name.

    `settings[spec]` (or the plugin's name after loading, for "sim") is handed to the plugin."""
    settings = settings or {}
    if len(specs) > MAX_PLUGINS:
        raise PluginError(f"{len(specs)} plugins: at most {MAX_PLUGINS}")
    plugins: list[Plugin] = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            raise PluginError("empty plugin spec")
        own = settings.get(spec, {})
        if not isinstance(own, dict):
            raise PluginError(f"plugin {spec!r}: its settings must be a table, got {type(own).__name__}")
        if spec == "sim":
            from .drive_sim import SimDrive
            plugins.append(SimDrive(own))
        elif ":" in spec:
            plugins.append(_instantiate(spec, _load_object(spec), own))
        else:
            plugins.append(_instantiate(spec, _load_entry_point(spec), own))
    return plugins


# -- the router: plugins on a room -----------------------------------------------------------------------

class CommandRouter:
    """Registers the plugins' methods and topics on a room, bounds their handlers, runs the watchdog."""

    def __init__(self, room, plugins: list[Plugin], *, watchdog_s: float = DEFAULT_WATCHDOG_S,
                 log: logging.Logger | None = None, handler_timeout_s: float = DEFAULT_HANDLER_TIMEOUT_S,
                 max_concurrent: int = MAX_CONCURRENT_COMMANDS, clock: Clock = time.monotonic):
        self.room = room
        self.plugins = list(plugins)
        self.log = log or logging.getLogger("lkdevice.robot.commands")
        self.handler_timeout_s = handler_timeout_s
        self.max_concurrent = max_concurrent
        self.clock = clock
        self.watchdog = Watchdog(watchdog_s)
        self.methods: dict[str, tuple[Plugin, Handler]] = {}
        self.topics: dict[str, tuple[Plugin, Handler]] = {}
        for plugin in self.plugins:
            api = PluginAPI(plugin, self.log.getChild(plugin.name))
            plugin.setup(api)
            for table, mine, what in ((self.methods, api.methods, "RPC method"), (self.topics, api.topics, "data topic")):
                for name, handler in mine.items():
                    if name in table:
                        raise PluginError(f"{what} {name!r} is registered by both {table[name][0].name!r} "
                                          f"and {plugin.name!r}")
                    table[name] = (plugin, handler)
        self._moving_plugins: list[Plugin] = []
        self._running = 0
        self.busy_refused = 0
        self._tasks = TaskSet(self.log, limit=max_concurrent + len(self.plugins) + 4)
        self._changed = asyncio.Event()
        self._watch_task: asyncio.Task | None = None
        self._attached = False
        self._closed = False

    # -- wiring -----------------------------------------------------------------------------------------
    def attach(self) -> None:
        if self._attached:
            return
        self._attached = True
        for method, (plugin, handler) in self.methods.items():
            self.room.register_rpc_method(method, self._rpc_handler(method, plugin, handler))
        self.room.on("data_received", self._on_data)
        self.room.on("disconnected", self._on_disconnected)
        self._watch_task = asyncio.ensure_future(self._watch())
        self.log.info("robot commands: %s (watchdog %s)", ", ".join(sorted(self.methods)) or "no methods",
                      f"{self.watchdog.timeout_s * 1000:.0f} ms" if self.watchdog.timeout_s else "off")

    def agent_state(self, identity: str, state: str) -> None:
        self._tell("agent_state", identity, state)

    def transcript(self, identity: str, text: str, final: bool) -> None:
        self._tell("transcript", identity, text, final)

    def _tell(self, what: str, *args) -> None:
        for plugin in self.plugins:
            try:
                result = getattr(plugin, what)(*args)
            except Exception:
                self.log.exception("plugin %r: %s failed", plugin.name, what)
                continue
            if inspect.isawaitable(result):
                self._tasks.spawn(self._bounded(result, f"{plugin.name}.{what}"), f"{plugin.name}.{what}")

    async def _bounded(self, awaitable, what: str) -> None:
        task = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait({task}, timeout=self.handler_timeout_s)
        if not done:
            task.cancel()
            self.log.warning("%s timed out after %.1f s", what, self.handler_timeout_s)
        elif not task.cancelled() and task.exception() is not None:
            self.log.error("%s failed", what, exc_info=task.exception())

    # -- commands ------------------------------------------------------------------------------------------
    def _rpc_handler(self, method: str, plugin: Plugin, handler: Handler):
        async def on_rpc(inv: RpcInvocation) -> str:
            if self._closed:
                raise RpcError(RpcError.APPLICATION_ERROR, "robot is shutting down")
            if self._running >= self.max_concurrent:
                self.busy_refused += 1
                raise RpcError(RpcError.APPLICATION_ERROR, f"busy: {self.max_concurrent} commands already running")
            # answer before the caller gives up, so it hears why
            timeout = min(self.handler_timeout_s, max(inv.response_timeout - 0.2, 0.1))
            cmd = Command(method, inv.caller_identity, inv.payload, self, plugin)
            try:
                return encode_result(await self._run(handler, cmd, timeout))
            except PayloadError as exc:
                raise RpcError(RpcError.APPLICATION_ERROR, f"{method}: {exc}"[:MAX_ERROR_MESSAGE]) from None
            except asyncio.TimeoutError:
                raise RpcError(RpcError.APPLICATION_ERROR, f"{method} timed out after {timeout:.1f} s") from None
            except RpcError:
                raise
            except Exception as exc:
                self.log.error("plugin %r: %s failed", plugin.name, method, exc_info=exc)
                raise RpcError(RpcError.APPLICATION_ERROR, f"{method} failed: {type(exc).__name__}") from None
        return on_rpc

    async def _run(self, handler: Handler, cmd: Command, timeout: float) -> Result:
        """The handler's result, within `timeout`; its slot is held until it really ends."""
        self._running += 1
        try:
            result = handler(cmd)
        except BaseException:
            self._running -= 1
            raise
        if not inspect.isawaitable(result):
            self._running -= 1
            return result
        task = asyncio.ensure_future(result)
        task.add_done_callback(self._handler_done)
        # not wait_for: a handler that ignores its cancellation must not hold the caller too
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            raise asyncio.TimeoutError
        return task.result()

    def _handler_done(self, task: asyncio.Task) -> None:
        self._running -= 1
        if not task.cancelled():
            task.exception()  # read: it is reported through the caller, or was timed out

    def _on_data(self, msg: DataMessage) -> None:
        entry = self.topics.get(msg.topic or "")
        if entry is None or self._closed:
            return
        plugin, handler = entry
        if self._running >= self.max_concurrent:
            self.busy_refused += 1
            self.log.warning("dropping %r message from %s: %d commands already running", msg.topic,
                             msg.participant_identity, self.max_concurrent)
            return
        cmd = Command(msg.topic or "", msg.participant_identity, msg.payload, self, plugin)
        self._tasks.spawn(self._data_command(plugin, handler, cmd), f"data topic {msg.topic!r}")

    async def _data_command(self, plugin: Plugin, handler: Handler, cmd: Command) -> None:
        try:
            await self._run(handler, cmd, self.handler_timeout_s)
        except PayloadError as exc:
            self.log.warning("%s from %s: %s", cmd.method, cmd.caller, exc)
        except asyncio.TimeoutError:
            self.log.warning("%s from %s timed out after %.1f s", cmd.method, cmd.caller, self.handler_timeout_s)
        except Exception as exc:
            self.log.error("plugin %r: data topic %s failed", plugin.name, cmd.method, exc_info=exc)

    # -- the watchdog ------------------------------------------------------------------------------------
    def _moving(self, plugin: Plugin, duration_s: float | None) -> None:
        if self._closed:
            return
        if plugin not in self._moving_plugins:
            self._moving_plugins.append(plugin)
        self.watchdog.moving(self.clock(), duration_s)
        self._changed.set()

    def _stopped(self, plugin: Plugin) -> None:
        if plugin in self._moving_plugins:
            self._moving_plugins.remove(plugin)
        if not self._moving_plugins:
            self.watchdog.stopped()
        self._changed.set()

    @property
    def moving(self) -> bool:
        return bool(self._moving_plugins)

    async def _watch(self) -> None:
        while True:
            deadline = self.watchdog.deadline()
            self._changed.clear()
            if deadline is None:
                await self._changed.wait()
                continue
            # a timer sets the event, not asyncio.wait_for: on Python 3.11 a wait_for
            # cancelled in the turn its inner wait completes returns, and the cancel is lost
            timer = asyncio.get_running_loop().call_later(max(deadline - self.clock(), 0), self._changed.set)
            try:
                await self._changed.wait()
            finally:
                timer.cancel()
            reason = self.watchdog.expired(self.clock())
            if reason is not None:
                plugins, self._moving_plugins = self._moving_plugins, []
                await self._stop(plugins, reason)

    async def _stop(self, plugins: list[Plugin], reason: str) -> None:
        for plugin in plugins:
            try:
                result = plugin.stop(reason)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, STOP_TIMEOUT_S)
            except Exception:
                self.log.exception("plugin %r: stop (%s) failed", plugin.name, reason)

    async def stop_all(self, reason: str) -> None:
        """Every plugin stops its motors now, moving or not."""
        self._moving_plugins = []
        self.watchdog.stopped()
        self._changed.set()
        await self._stop(self.plugins, reason)

    def _on_disconnected(self, reason) -> None:
        if self._moving_plugins:
            self._tasks.spawn(self.stop_all(f"disconnected ({reason})"), "stop on disconnect", force=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._attached:
            for method in self.methods:
                self.room.unregister_rpc_method(method)
            self.room.off("data_received", self._on_data)
            self.room.off("disconnected", self._on_disconnected)
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        if self._moving_plugins:
            await self.stop_all("closing")
        await self._tasks.aclose(STOP_TIMEOUT_S)
        for plugin in self.plugins:
            try:
                result = plugin.close()
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, STOP_TIMEOUT_S)
            except Exception:
                self.log.exception("plugin %r: close failed", plugin.name)
