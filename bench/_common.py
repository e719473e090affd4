"""Shared plumbing for the bench scripts: isolation check, local server, stats.

Not a benchmark itself. The scripts in this folder import it as `_common`
(Python puts the script's own folder first on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import sys
import threading
import time
import uuid
from typing import Iterator

import numpy as np

from lkdevice.host_tools.livekit_server import DEV_API_KEY, DEV_API_SECRET, LocalServer, ServerConfig
from lkdevice.host_tools.tokens import mint_token

log = logging.getLogger("bench")


def require_isolation() -> None:
    """Live runs happen only inside the private network namespace of host_tools/isolated.sh."""
    if os.environ.get("LKDEVICE_ISOLATED") != "1":
        script = os.path.relpath(sys.argv[0])
        print(
            f"refusing to run: LKDEVICE_ISOLATED is not 1.\n"
            f"Run this inside the private network namespace:\n"
            f"    host_tools/isolated.sh python {script} ...",
            file=sys.stderr,
        )
        sys.exit(2)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # The libraries are chatty at INFO; the bench's own lines are what matter.
        for name in ("livekit", "lkdevice", "aiortc", "aioice", "websockets"):
            logging.getLogger(name).setLevel(logging.WARNING)


def node_ip() -> str:
    return os.environ.get("LKDEVICE_NODE_IP") or "127.0.0.1"


# every server a run started, for the watchdog to stop
_servers: list = []


def start_server(ip: str | None = None, loopback: bool = True) -> LocalServer:
    """A server advertising `ip` (default the namespace's node IP), and loopback unless told not to."""
    ip = ip or node_ip()
    candidates = list(dict.fromkeys([ip] + (["127.0.0.1"] if loopback else [])))
    server = LocalServer(ServerConfig(node_ip=ip, candidate_ips=candidates))
    _servers.append(server)
    server.start()
    log.info("livekit-server at %s (node_ip %s, log %s)", server.url, ip, server.log_path)
    return server


def stop_server(server: LocalServer, keep_workdir: bool) -> None:
    """Stop the server; drop its temporary config/log folder unless asked to keep it (failures)."""
    server.stop()
    if keep_workdir:
        log.info("server log kept at %s", server.log_path)
    else:
        shutil.rmtree(server.workdir, ignore_errors=True)


def token(identity: str, room: str) -> str:
    return mint_token(DEV_API_KEY, DEV_API_SECRET, identity=identity, room=room)


def fresh_room(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def summary_ms(values_s: list[float]) -> dict:
    """median, p90, min, max (and n) of durations given in seconds, in milliseconds."""
    if not values_s:
        return {"n": 0, "median_ms": None, "p90_ms": None, "min_ms": None, "max_ms": None}
    a = np.asarray(values_s, dtype=float) * 1000.0
    return {
        "n": int(a.size),
        "median_ms": round(float(np.median(a)), 2),
        "p90_ms": round(float(np.percentile(a, 90)), 2),
        "min_ms": round(float(a.min()), 2),
        "max_ms": round(float(a.max()), 2),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def environment() -> dict:
    import aiortc
    import livekit.rtc

    import lkdevice
    from lkdevice.host_tools.livekit_server import SERVER_VERSION

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "lkdevice": lkdevice.__version__,
        "aiortc": aiortc.__version__,
        "livekit_rtc": livekit.rtc.__version__,
        "livekit_server": SERVER_VERSION,
        "node_ip": node_ip(),
    }


@contextlib.contextmanager
def watchdog(seconds: float, server_ref: list) -> Iterator[None]:
    """Hard stop: if the run hangs past `seconds`, stop the server and exit 3.

    asyncio timeouts cover the normal paths; this covers a native-library hang
    (or a hang at interpreter exit) that no coroutine can interrupt.
    """

    def fire() -> None:
        print(f"bench watchdog: no result after {seconds:.0f}s, aborting", file=sys.stderr, flush=True)
        for server in server_ref:
            with contextlib.suppress(Exception):
                server.stop()
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def run_live(benchmark: str, run, args, *, with_server: bool = False) -> int:
    """Start the server, run `run(args, url)` under the deadline, stop the server, print the JSON.

    `with_server`: `run(args, server)` gets the LocalServer itself (its ports, for netimpair).

    Exit status: 0 when both clients produced numbers and nothing failed, 1 otherwise.
    """
    with watchdog(args.deadline, _servers):
        server = start_server()
        ok = False
        try:
            target = server if with_server else server.url
            result = asyncio.run(asyncio.wait_for(run(args, target), args.deadline - 10))
            ok = result["ours"]["n"] > 0 and result["official"]["n"] > 0 and not result["errors"]
        except Exception as exc:  # still print a JSON object saying what went wrong
            log.exception("%s failed", benchmark)
            result = {"benchmark": benchmark, "error": repr(exc), "server_log": str(server.log_path)}
        finally:
            stop_server(server, keep_workdir=not ok)
    result["environment"] = environment()
    emit(result)
    return 0 if ok else 1


def emit(result: dict) -> None:
    print(json.dumps(result, indent=2), flush=True)


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
