"""Board tools: what puts the firmware on a real ESP32 and checks it (`lkdevice flash`, `install`, `provision`, `monitor`, `doctor`).

`install` (firmware.py, install.py), `provision` (provision.py) and `monitor`
(monitor.py) talk to MicroPython's raw REPL through mpremote's serial
transport (repl.py); serialport.py finds the port and words its failures.
"""


class BoardToolError(RuntimeError):
    """A user-facing failure: the message is one line, said as is, with no traceback."""

    exit_code = 1


class UsageError(BoardToolError):
    """A mistake in what the user asked for (exit code 2, as argparse uses)."""

    exit_code = 2
