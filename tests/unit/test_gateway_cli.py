"""`lkdevice gateway`: a user's mistake in its flags is one line and exit 2, before it listens."""

from __future__ import annotations

import subprocess
import sys


def test_negative_stats_every_is_one_line():
    r = subprocess.run([sys.executable, "-m", "lkdevice.cli", "gateway", "--livekit-url", "ws://127.0.0.1:7880",
                        "--listen", "127.0.0.1:0", "--stats-every", "-1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["error: --stats-every wants seconds >= 0"]
