"""Choose which local addresses aiortc offers as ICE host candidates.

aioice offers every interface address except 127.0.0.1. A device that talks to
a LiveKit server on the same machine (a laptop demo, the Pi gateway next to its
server) wants the opposite: loopback only, so media never leaves the host.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import aioice.ice


@contextlib.contextmanager
def host_addresses(addresses: list[str] | None) -> Iterator[None]:
    """While gathering, offer exactly `addresses` (None keeps aioice's own choice)."""
    if addresses is None:
        yield
        return
    original = aioice.ice.get_host_addresses

    def chosen(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = chosen
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


def is_loopback_url(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")
