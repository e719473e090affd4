"""One process's network gone, everyone else's untouched: a Wi-Fi drop for a device that is a local process.

A device under test (the robot app) is started with its own group id,
`LINK_GID` (`subprocess.Popen(..., group=LINK_GID)`; it stays root otherwise).
`LinkCut` then owns one nft table in the private namespace (host_tools/
isolated.sh) that marks each connection a socket of that process sends on (a
conntrack mark, on the way out) and drops every packet of a marked connection
where it arrives, both ways, TCP and UDP. Everything in the namespace is local,
so every packet arrives: dropping there, not on the way out, keeps the sender
free of EPERM, as a dead link would. A far-side peer in another process, on
the same addresses and ports of the same server, keeps its link. New
connections the process tries while cut go nowhere.

Bounded like netimpair: the table goes on `close()` (the link is back) and, whatever
happens, by a timer after `max_seconds`; it refuses to run outside the namespace.

    with LinkCut(max_seconds=40):
        time.sleep(5)
"""

from __future__ import annotations

import itertools
import os
import threading

from .netimpair import _nft, require_namespace

LINK_GID = 47474  # the group the device process runs as; nothing else in the namespace uses it
LINK_MARK = 0x4C4C  # the conntrack mark of that process's connections while it is cut
_tables = itertools.count()


def can_cut() -> str | None:
    """None if a LinkCut can work here, else why not (for a skip reason)."""
    try:
        require_namespace()
    except RuntimeError as e:
        return str(e)
    if os.geteuid() != 0:
        return "starting the device with its own group id needs root (isolated.sh runs it as root when it can)"
    return None


class LinkCut:
    """The network of every process of group `gid` gone until close()."""

    def __init__(self, gid: int = LINK_GID, *, max_seconds: float = 120.0):
        require_namespace()
        self.table = f"lkdcut{os.getpid()}x{next(_tables)}"
        self._closed = False
        t, m = self.table, LINK_MARK
        _nft(f"add table inet {t}",
             f"add chain inet {t} out {{ type filter hook output priority 0; policy accept; }}",
             f"add chain inet {t} in {{ type filter hook input priority 0; policy accept; }}",
             f"add rule inet {t} out meta skgid {int(gid)} ct mark set {m}",
             # what it sends, and what the server sends it: both belong to a marked connection
             f"add rule inet {t} in ct mark {m} counter drop")
        self._timer = threading.Timer(max_seconds, self.close)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> "LinkCut":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._timer.cancel()
        try:
            _nft(f"delete table inet {self.table}")
        except RuntimeError:
            pass
