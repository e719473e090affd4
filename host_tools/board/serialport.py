"""Which serial port the board is on, and a clear sentence when there is none.

For install, provision and monitor: `find_port` picks the port (the one
given, else $LKD_PORT, else the one USB serial port that looks like an ESP32
board, by flash.py's list of USB ids), `open_port` opens it with pyserial and
turns its errors into `NoBoard` messages.
"""

from __future__ import annotations

import errno
import os

from . import BoardToolError


class NoBoard(BoardToolError):
    pass


def _serial():
    try:
        import serial  # noqa: F401
        import serial.tools.list_ports  # noqa: F401
    except ImportError:
        raise BoardToolError("the board tools need pyserial and mpremote: pip install 'lkdevice[board]'") from None
    return serial


def describe_ports() -> str:
    serial = _serial()
    ports = serial.tools.list_ports.comports()
    if not ports:
        return "no serial ports at all"
    return "ports seen: " + ", ".join(f"{p.device} ({p.description})" for p in ports)


def find_port(port: str | None = None) -> str:
    """The port to use: `port`, else $LKD_PORT, else the one port that looks like an ESP32 board."""
    port = port or os.environ.get("LKD_PORT") or None
    if port:
        if "://" not in port and not os.path.exists(port):
            raise NoBoard(f"no board on {port}: no such port ({describe_ports()})")
        return port
    from .flash import FlashError, list_ports, pick_port
    try:
        return pick_port(list_ports())
    except FlashError as e:
        raise NoBoard(str(e)) from None


def open_port(port: str, baudrate: int = 115200, timeout: float | None = 1.0):
    """pyserial's Serial on `port`, or NoBoard saying why it cannot be opened."""
    serial = _serial()
    try:
        return serial.serial_for_url(port, baudrate=baudrate, timeout=timeout, exclusive=True)
    except (serial.SerialException, OSError) as e:
        raise NoBoard(why_not(port, e)) from None


def why_not(port: str, e: Exception) -> str:
    code = getattr(e, "errno", None)
    text = str(e)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text:
        return f"no board on {port}: the port went away or never was ({describe_ports()})"
    if code == errno.EACCES or "Permission denied" in text:
        return (f"cannot open {port}: permission denied (on Linux, add yourself to the group that owns it, "
                f"e.g. `sudo usermod -aG dialout $USER`, then log in again)")
    if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text or "busy" in text.lower():
        return f"{port} is in use by another program (a serial monitor, mpremote, an IDE?): close it first"
    return f"cannot open {port}: {text}"
