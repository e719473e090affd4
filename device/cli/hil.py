"""`lkdevice hil run`: the hardware-in-the-loop scenarios on a target, with a report a person can read."""

from __future__ import annotations

import sys

# kept here: the parser loads no harness; the last is broken on purpose (a self-test of the harness)
TARGET_NAMES = ("sim-esp32", "sim-pi", "esp32:PORT", "pi:USER@HOST", "sim-esp32-leaky-gateway")
# the options of the real-hardware targets: (flag, argparse keywords); hil.make_target checks who takes which
TARGET_OPTIONS = (
    ("--board", dict(metavar="B", help="sim-esp32, esp32: the board file (a name from boards/ or a JSON file)")),
    ("--gateway-listen", dict(metavar="HOST:PORT", help="esp32: run the harness's own `lkdevice gateway` here, "
                                                        "on an address the board reaches (default 127.0.0.1 and "
                                                        "a free port)")),
    ("--gateway-url", dict(metavar="URL", help="esp32: the URL the board is provisioned with (default "
                                               "ws://GATEWAY-LISTEN/v1/device); alone: a gateway the lab runs")),
    ("--wifi", dict(metavar="SSID", help="esp32: the Wi-Fi the board joins (password from $LKD_WIFI_PASSWORD)")),
    ("--sound-card", dict(metavar="NAME", help="esp32: the USB sound card wired to the board's mic and speaker")),
    ("--ssh-key", dict(metavar="KEY", help="pi: SSH private key (default: ssh-agent and ~/.ssh)")),
    ("--known-hosts", dict(metavar="FILE", help="pi: known_hosts file (default ~/.ssh/known_hosts)")),
    ("--pi-python", dict(metavar="PY", help="pi: the Pi's Python for the venv (default python3)")),
    ("--pi-offline", dict(action="store_true", help="pi: install with the Pi's own packages only")),
    ("--pi-any-arch", dict(action="store_true", help="pi: deploy to a machine that is not armv7l/aarch64")),
)


def target_options(args) -> dict:
    return {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, _ in TARGET_OPTIONS}


def _run(args) -> int:
    try:
        from ..hil import make_target
        from ..hil.scenario import PROFILES
        from ..hil.scenarios import SCENARIOS
    except ImportError as e:
        print(f"error: the harness needs the test extras (pip install 'lkdevice[hil]'): {e}", file=sys.stderr)
        return 2
    unknown = [s for s in args.scenario or [] if s not in SCENARIOS]
    if unknown:
        print(f"error: unknown scenario {unknown[0]!r}; scenarios: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("error: --repeat wants 1 or more", file=sys.stderr)
        return 2
    try:
        target = make_target(args.target, **target_options(args))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    chosen = [SCENARIOS[s] for s in (args.scenario or SCENARIOS)]
    import asyncio
    import logging
    import os
    # the far side's SDK warns about handles it drops at the end of each room: not the device's news
    logging.getLogger("livekit").setLevel(logging.ERROR)
    code = asyncio.run(_main(target, chosen, PROFILES[args.profile], args))
    # the official SDK's FFI (the far side) can abort the process in its atexit teardown (a tokio
    # worker panics); the report is written and every child stopped, so leave without that teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _main(target, chosen, profile, args) -> int:
    from ..hil import report
    from ..hil.lab import Lab
    from ..hil.runner import Runner

    try:
        lab = Lab().start()
    except Exception as e:  # no livekit-server, or it would not start: say so and stop
        print(f"error: cannot start a local livekit-server: {e}", file=sys.stderr)
        return 2
    try:
        run = await Runner(target, lab, profile, repeat=args.repeat).run(chosen)
        out = report.write(run, args.report, lab.secrets())
    finally:
        lab.stop()
    print((out / "report.md").read_text(), end="")
    print(f"report: {out}/report.html (and report.json, junit.xml)")
    return 1 if run.failed else 0


def add_parsers(sub) -> None:
    h = sub.add_parser("hil", help="hardware-in-the-loop scenarios against a local LiveKit server",
                       epilog="example: lkdevice hil run --target sim-esp32 --scenario join --scenario talk "
                              "--repeat 3 --report hil-report")
    hs = h.add_subparsers(dest="hil_command", required=True)
    r = hs.add_parser("run", help="run scenarios on a target and write a report",
                      epilog="example: host_tools/isolated.sh lkdevice hil run --target sim-pi --profile ci")
    r.add_argument("--target", default="sim-esp32", metavar="T",
                   help=f"the device under test: {', '.join(TARGET_NAMES)} (default sim-esp32); "
                        "e.g. esp32:/dev/ttyUSB0 --board esp32-s3-box-3, pi:pi@raspberrypi.local")
    r.add_argument("--scenario", action="append", metavar="NAME",
                   help="a scenario to run (repeatable; default: all): join, talk, data-rpc-in, data-rpc-out, "
                        "agent-state, long-call, cycles, talk-lossy, long-call-lossy, link-drop-5s, "
                        "link-drop-30s, server-restart, gateway-restart, fuzz")
    r.add_argument("--repeat", type=int, default=1, metavar="N", help="run each scenario N times (default 1)")
    r.add_argument("--profile", choices=("ci", "full"), default="ci",
                   help="ci: a 1-minute call, 20 cycles; full: 10 minutes, 100 cycles (default ci)")
    r.add_argument("--report", default="hil-report", metavar="DIR", help="where the report goes (default hil-report)")
    g = r.add_argument_group("real-hardware targets (hil/README.md, \"Wiring a board or a Pi\")")
    for flag, kw in TARGET_OPTIONS:
        g.add_argument(flag, **kw)
    r.set_defaults(run=_run)
