"""`lkdevice`: one command line for the device side of LiveKit agents.

One module per subcommand group: `join` (join, echo), `server` (server, token,
token-server), `gateway`, `sim` (the simulated ESP32, from the host tools),
`board` (install, provision, monitor), `flash` and `doctor`: the board tools,
from host_tools.board; `deploy` (the robot onto a Pi as a service, from host_tools.deploy);
`robot`, the Pi robot app (device/robot/); `agent`, the offline voice agent
(host_tools.agent); `up` and `demo`, the local stack (host_tools.stack, demo); `hil`,
the hardware-in-the-loop harness (hil/harness, installed as lkdevice.hil).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from .. import __version__
from . import agent, board, deploy, doctor, flash, gateway, hil, join, robot, server, sim, up


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lkdevice", description="Device side of LiveKit voice and vision agents.")
    p.add_argument("--version", action="version", version=f"lkdevice {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    join.add_parsers(sub)
    server.add_parsers(sub)
    gateway.add_parsers(sub)
    sim.add_parsers(sub)
    flash.add_parsers(sub)
    doctor.add_parsers(sub)
    board.add_parsers(sub)
    deploy.add_parsers(sub)
    robot.add_parsers(sub)
    agent.add_parsers(sub)
    up.add_parsers(sub)
    hil.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser = parser
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM (systemd, docker, kill) stops a command as Ctrl-C does, so its
    # cleanup runs: the servers, gateways and boards it started go with it
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        return 130


def _interrupt(signum, frame):
    # delivered again as SIGINT: whoever handles Ctrl-C (asyncio.run cancels
    # its main task; plain code gets KeyboardInterrupt) handles this too
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
