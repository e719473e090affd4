"""A small `token_url` server: mints a LiveKit token for each board that proves who it is.

A board with `token_url` in its config.json asks (firmware/lkd/token.py)::

    GET /token HTTP/1.0
    X-Device-Id: 246f284c4b44          (machine.unique_id() in hex)
    Authorization: Bearer <device_key> (config.json's device_key)

and gets ``{"token": "<JWT>"}`` for the identity and room this server keeps
for that device. No credential: 401 (with ``WWW-Authenticate: Bearer``); a
device it does not know, or the wrong key: 403. Keys are compared in
constant time and never logged, nor are tokens.

Devices come from a JSON file ``{"<device id>": {"key": "...", "identity":
"...", "room": "..."}}`` (identity and room optional), or one shared key for
every device (identity ``device-<id>``). The API secret stays here, on the
host: boards only ever hold tokens.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import ssl
from dataclasses import dataclass, field

from .tokens import mint_token

log = logging.getLogger(__name__)

MAX_REQUEST = 8192
_ID = re.compile(r"[0-9a-fA-F]{4,64}")


@dataclass
class DeviceEntry:
    key: str
    identity: str | None = None
    room: str | None = None


@dataclass
class TokenServerConfig:
    api_key: str
    api_secret: str
    room: str
    devices: dict[str, DeviceEntry] = field(default_factory=dict)
    shared_key: str | None = None  # any device id, with this key
    ttl: float = 6 * 3600
    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/token"
    ssl_context: "ssl.SSLContext | None" = None  # https, for boards with the CA in their config's `ca`


def load_devices(path: str) -> dict[str, DeviceEntry]:
    """The devices file; raises ValueError with a one-line reason."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must be an object of device id -> {{\"key\": ...}}")
    out = {}
    for dev_id, entry in raw.items():
        if not _ID.fullmatch(dev_id):
            raise ValueError(f"{path}: {dev_id!r} is not a device id (machine.unique_id() in hex)")
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not entry["key"]:
            raise ValueError(f"{path}: device {dev_id} needs a \"key\"")
        out[dev_id.lower()] = DeviceEntry(entry["key"], entry.get("identity"), entry.get("room"))
    return out


class TokenServer:
    """asyncio HTTP/1.0 server for token_url. `requests` counts answers by status, for tests."""

    def __init__(self, config: TokenServerConfig):
        self.config = config
        self.requests: dict[int, int] = {}
        self.hang = False  # tests: accept and never answer
        self.token_override: str | None = None  # tests: answer this token instead of minting
        self._server: asyncio.Server | None = None
        self._hung: list[asyncio.StreamWriter] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        scheme = "https" if self.config.ssl_context else "http"
        return f"{scheme}://{self.config.host}:{self.port}{self.config.path}"

    async def start(self) -> "TokenServer":
        self._server = await asyncio.start_server(self._serve, self.config.host, self.config.port,
                                                  ssl=self.config.ssl_context)
        return self

    async def close(self) -> None:
        for w in self._hung:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> "TokenServer":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def authorize(self, path: str, headers: dict[str, str]) -> tuple[int, str, str | None]:
        """(status, message, token) for a request: the pure decision, without sockets."""
        if path.split("?", 1)[0] != self.config.path:
            return 404, f"tokens are served at {self.config.path}", None
        dev_id = headers.get("x-device-id", "").strip().lower()
        auth = headers.get("authorization", "")
        if not dev_id or not auth.lower().startswith("bearer "):
            return 401, "send X-Device-Id and Authorization: Bearer <device_key>", None
        if not _ID.fullmatch(dev_id):
            return 403, "X-Device-Id is not a device id", None
        given = auth[7:].strip().encode()
        entry = self.config.devices.get(dev_id)
        if entry is not None:
            want = entry.key
        elif self.config.shared_key is not None:
            want = self.config.shared_key
        else:
            return 403, f"device {dev_id} is not known here", None
        if not hmac.compare_digest(given, want.encode()):
            return 403, f"wrong device_key for device {dev_id}", None
        identity = (entry.identity if entry else None) or f"device-{dev_id}"
        room = (entry.room if entry else None) or self.config.room
        token = self.token_override or mint_token(self.config.api_key, self.config.api_secret,
                                                  identity=identity, room=room, ttl=self.config.ttl)
        return 200, f"token for {identity} in {room}", token

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, OSError):
            writer.close()
            return
        if self.hang:
            self._hung.append(writer)
            return
        lines = head[:MAX_REQUEST].decode("latin-1").split("\r\n")
        parts = lines[0].split()
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        if len(parts) < 2 or parts[0] != "GET":
            status, message, token = 405, "GET only", None
        else:
            status, message, token = self.authorize(parts[1], headers)
        self.requests[status] = self.requests.get(status, 0) + 1
        log.info("token_url %s device %s: %d %s", parts[1].split("?", 1)[0] if len(parts) > 1 else "?",
                 headers.get("x-device-id", "-")[:64], status, message)
        if token is not None:
            body = json.dumps({"token": token}).encode()
            ctype = "application/json"
        else:
            body = (message + "\n").encode()
            ctype = "text/plain"
        reason = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}.get(status, "Error")
        extra = "WWW-Authenticate: Bearer\r\n" if status == 401 else ""
        writer.write(f"HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"Cache-Control: no-store\r\n{extra}\r\n".encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()


async def run_token_server(config: TokenServerConfig, stop: asyncio.Event | None = None) -> None:
    async with TokenServer(config) as srv:
        print(f"token server: {srv.url} (room {config.room}; {len(config.devices)} devices"
              f"{', any device with the shared key' if config.shared_key else ''}); Ctrl-C to stop", flush=True)
        await (stop.wait() if stop else asyncio.Future())
