"""Choose which local addresses aiortc offers as ICE host candidates.

aioice offers every interface address except 127.0.0.1. A device that talks to
a LiveKit server on the same machine (a laptop demo, the Pi gateway next to its
server) wants the opposite: loopback only, so media never leaves the host.

aioice asks one module-level function for the addresses. We replace it once,
with a wrapper that reads a context variable: each join sets its own choice,
and the tasks aiortc starts to gather copy the context of the join that
started them, so concurrent joins (a gateway's devices) never see each
other's addresses, and nothing is swapped back and forth.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

import aioice.ice

_chosen: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("lkdevice_ice_host_addresses",
                                                                          default=None)


def _install() -> None:
    current = aioice.ice.get_host_addresses
    if getattr(current, "_lkdevice", False):
        return  # already installed (e.g. this module was reloaded)
    aioice_own: Callable[[bool, bool], list[str]] = current

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = _chosen.get()
        if addresses is None:
            return aioice_own(use_ipv4, use_ipv6)
        return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    get_host_addresses._lkdevice = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses


_install()


@contextlib.contextmanager
def host_addresses(addresses: list[str] | None) -> Iterator[None]:
    """While gathering in this context, offer exactly `addresses` (None keeps aioice's own choice)."""
    token = _chosen.set(list(addresses) if addresses is not None else None)
    try:
        yield
    finally:
        _chosen.reset(token)


def is_loopback_url(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")
