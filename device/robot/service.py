"""Running as a service: JSON logs, systemd's notify protocol and its watchdog.

sd_notify is a datagram of ``KEY=VALUE`` lines to the unix socket named by
$NOTIFY_SOCKET (a leading ``@`` is the abstract namespace); written here by hand,
no dependency. With ``WatchdogSec=`` systemd sets $WATCHDOG_USEC and kills the
service when no ``WATCHDOG=1`` came for that long; we ping at half of it, and
only while the app says it makes progress (`WatchdogClock`), so a robot stuck
in a way the event loop survives is restarted too.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import sys
from typing import TextIO

from ..rtc.errors import redact_tokens
from ..rtc.logs import RedactSecrets, protect

# LogRecord's own attributes: anything else on a record is an `extra=` field
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the record's extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_tokens(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = redact_tokens(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = record.exc_text or redact_tokens(self.formatException(record.exc_info))
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(json_lines: bool, verbose: bool = False, stream: TextIO | None = None) -> logging.Logger:
    """The robot's logging: JSON lines on stdout, or text on stderr; secrets redacted either way."""
    handler = logging.StreamHandler(stream or (sys.stdout if json_lines else sys.stderr))
    handler.addFilter(RedactSecrets())  # every record, whichever library logged it
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log = logging.getLogger("lkdevice.robot")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    protect(log)
    return log


class Notifier:
    """sd_notify(3) by hand; does nothing when not started by systemd."""

    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self.sent = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str) -> bool:
        if self.address is None:
            return False
        data = "\n".join(f"{k}={v}".replace("\n", " ") for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                # non-blocking: a full queue (systemd busy, a reader that does not read)
                # must drop one ping, not stall the event loop with the robot on it
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                                           | socket.SOCK_NONBLOCK)
            self._sock.sendto(data, self.address)
        except OSError:
            self.errors += 1  # systemd gone, restarting or behind: the next one may go through
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.notify(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG="1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify(STOPPING="1", STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WatchdogClock:
    """When to send WATCHDOG=1: every half period, if progress was seen since the last one.

    Sans-I/O: `progress(now)` when the app moved on (media flowed, an attempt
    to reconnect was made); `due(now)` says whether to ping now."""

    def __init__(self, period_s: float):
        self.interval = period_s / 2
        self._last_ping = float("-inf")
        self._progress = float("-inf")
        self._pinged_progress = float("-inf")

    def progress(self, now: float) -> None:
        self._progress = now

    def due(self, now: float) -> bool:
        if now - self._last_ping < self.interval or self._progress <= self._pinged_progress:
            return False
        self._last_ping = now
        self._pinged_progress = self._progress
        return True
