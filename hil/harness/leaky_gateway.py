"""Broken on purpose, for the harness's own tests: a gateway that leaks a buffer per device session.

    python -m lkdevice.hil.leaky_gateway gateway --livekit-url ws://... --listen 127.0.0.1:8765

is `lkdevice gateway` with one change: every DeviceSession keeps LEAK_BYTES in a module-level list that
nothing ever empties, the shape of a real leak (a per-session cache never pruned). The bytes are random, so
every page is written and counts in RSS. `cycles` must catch it and state about LEAK_BYTES a cycle: target
`sim-esp32-leaky-gateway`, or `SimEsp32(gateway="leaky")`.
"""

from __future__ import annotations

import os
import sys

LEAK_BYTES = 512 * 1024
KEPT: list[bytes] = []  # the leak: never emptied


def install(leak: int = LEAK_BYTES) -> None:
    from lkdevice.gateway.session import DeviceSession

    init = DeviceSession.__init__

    def leaky_init(self, *a, **kw):
        init(self, *a, **kw)
        KEPT.append(os.urandom(leak))

    DeviceSession.__init__ = leaky_init


def main(argv: list[str] | None = None) -> int:
    install(int(os.environ.get("LKDEVICE_LEAK_BYTES", LEAK_BYTES)))
    from lkdevice.cli import main as cli
    return cli(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
