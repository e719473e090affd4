"""Where the robot's access token comes from: given, a file, or a token URL.

A token URL speaks what `lkdevice token-server` (host_tools/token_server.py)
and the firmware speak: ``GET`` with ``X-Device-Id`` and ``Authorization:
Bearer <device key>``, answered with ``{"token": "<JWT>"}``; 401/403 means this
device is not welcome (no retry helps). `renewable` says whether asking again
can give another token, which decides what a refused token means: the end,
or one more try with a fresh one.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from .config import TokenConfig

MAX_RESPONSE = 64 * 1024


class TokenError(Exception):
    """No token to be had; `fatal`: asking again will not help."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


class TokenSource:
    renewable = False

    async def get(self) -> str:
        raise NotImplementedError


class StaticToken(TokenSource):
    def __init__(self, token: str):
        self._token = token

    async def get(self) -> str:
        return self._token


class FileToken(TokenSource):
    """Read again at every connect: whoever provisions the robot may have replaced it."""

    renewable = True

    def __init__(self, path: str):
        self.path = path

    async def get(self) -> str:
        try:
            with open(self.path) as f:
                token = f.read().strip()
        except OSError as exc:
            raise TokenError(f"token file {self.path}: {exc.strerror}") from None
        if not token:
            raise TokenError(f"token file {self.path} is empty")
        return token


class UrlToken(TokenSource):
    renewable = True

    def __init__(self, url: str, device_id: str, device_key: str, timeout: float = 10.0):
        self.url, self.device_id, self._key, self.timeout = url, device_id, device_key, timeout

    def _fetch(self) -> str:
        req = urllib.request.Request(self.url, headers={"X-Device-Id": self.device_id,
                                                        "Authorization": f"Bearer {self._key}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise TokenError(f"token server {self.url} refused device {self.device_id!r} "
                                 f"(HTTP {exc.code}): check device_id and device_key", fatal=True) from None
            raise TokenError(f"token server {self.url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise TokenError(f"token server {self.url}: {getattr(exc, 'reason', exc)}") from None
        if len(body) > MAX_RESPONSE:
            raise TokenError(f"token server {self.url}: response larger than {MAX_RESPONSE} bytes")
        try:
            token = json.loads(body)["token"]
        except (ValueError, KeyError, TypeError):
            raise TokenError(f"token server {self.url}: no {{\"token\": ...}} in its answer") from None
        if not isinstance(token, str) or not token:
            raise TokenError(f"token server {self.url}: empty token")
        return token

    async def get(self) -> str:
        return await asyncio.to_thread(self._fetch)


def token_source(cfg: TokenConfig) -> TokenSource:
    if cfg.token:
        return StaticToken(cfg.token)
    if cfg.token_file:
        return FileToken(cfg.token_file)
    if cfg.token_url:
        key = cfg.device_key
        if key is None and cfg.device_key_file:
            try:
                with open(cfg.device_key_file) as f:
                    key = f.read().strip()
            except OSError as exc:
                raise TokenError(f"device_key_file {cfg.device_key_file}: {exc.strerror}", fatal=True) from None
        return UrlToken(cfg.token_url, cfg.device_id or "", key or "")
    raise TokenError("no token source: give --token, or token / token_file / token_url in [server]", fatal=True)
