"""The target's console: expect a line (from a mark on), with a timeout that shows the tail."""

from __future__ import annotations

import threading
import time

import pytest

from lkdevice.hil.target import Console


def test_expect_finds_a_later_line_and_its_arrival_time():
    c = Console()
    c.feed("[lkd] boot firmware=x")
    mark = c.mark()
    threading.Timer(0.1, c.feed, ("[lkd] welcome room=r identity=esp32",)).start()
    t0 = time.monotonic()
    ts, m = c.wait(r"welcome room=(\S+)", 2, since=mark)
    assert m.group(1) == "r" and ts >= t0
    assert c.find(r"boot", since=mark) is None and c.find(r"boot") is not None


def test_a_timeout_names_the_pattern_and_shows_the_last_lines():
    c = Console()
    c.feed("MemoryError: memory allocation failed, allocating 1024 bytes")
    with pytest.raises(TimeoutError, match=r"welcome.*\n.*MemoryError"):
        c.wait(r"welcome", 0.2)


def test_a_stopped_device_ends_the_wait_at_once():
    c = Console()
    c.close()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="the device stopped"):
        c.wait("welcome", 10)
    assert time.monotonic() - t0 < 1


def test_the_console_is_bounded_and_marks_stay_valid():
    c = Console(limit=100)
    for i in range(250):
        c.feed(f"line {i}")
    assert len(c.lines()) <= 100
    mark = c.mark()
    c.feed("after")
    assert c.lines(mark) == ["after"]
    assert c.find("after", since=mark) is not None
