# Keeping the board alive. The watchdog is fed only while every long-lived
# task makes progress (a counter moving: audio frames, received messages) or
# is inside an attempt that has a deadline (a token fetch, a WebSocket
# connect + hello, a backoff). A task that dies or stalls is logged once;
# feeding stops and the watchdog resets the board.
#
# Few functions and names already in use: on a board without frozen modules
# this code lives on the heap, and each new name is a qstr (firmware/README.md).

import time
from micropython import const

# an entry: [name, ms without progress allowed, last progress, last counter value,
#            attempt deadline (ticks_ms) or None, attempt name, its asyncio task]
_LAST = const(2)
_SEEN = const(3)
_UNTIL = const(4)
_WHAT = const(5)
_TASK = const(6)


class Supervisor:
    def __init__(self):
        self.names = []  # the entries
        self.failed = None  # why the board must reset; set once

    def add(self, name, timeout_ms, task=None):
        """Watch a task that may go timeout_ms without progress (and must not
        end, if task is given); returns its index."""
        self.names.append([name, timeout_ms, time.ticks_ms(), None, None, None, task])
        return len(self.names) - 1

    def count(self, i, v):
        """Progress if the task's counter v moved since the last look."""
        e = self.names[i]
        if v != e[_SEEN]:
            e[_SEEN] = v
            e[_LAST] = time.ticks_ms()

    def expect(self, i, timeout_ms, what):
        """Task i starts an attempt that may show no progress for timeout_ms
        (0: it is over, progress is expected again; -1: no deadline, the task
        waits on purpose, e.g. told by the gateway not to rejoin)."""
        e = self.names[i]
        e[_LAST] = now = time.ticks_ms()
        e[_UNTIL] = None if timeout_ms == 0 else True if timeout_ms < 0 else time.ticks_add(now, timeout_ms)
        e[_WHAT] = what

    def poll(self):
        """True while every task is healthy: feed the watchdog."""
        if self.failed is None:
            now = time.ticks_ms()
            for e in self.names:
                late = time.ticks_diff(now, e[_LAST])
                t = e[_TASK]
                if t is not None and t.done():
                    # a finished Task keeps what ended it in .data (asyncio prints
                    # its traceback too: "Task exception wasn't retrieved")
                    why = "reason=died error=" + repr(t.data)
                elif e[_UNTIL] is not None:
                    if e[_UNTIL] is True or time.ticks_diff(now, e[_UNTIL]) <= 0:
                        continue
                    why = "reason=deadline what=" + e[_WHAT]
                elif late > e[1]:
                    why = "reason=stalled ms=%d" % late
                else:
                    continue
                self.failed = "fault task=%s %s" % (e[0], why)
                print("[lkd] " + self.failed)
                break
        return self.failed is None
