"""`lkdevice deploy`: the robot onto a Pi as a systemd service, and --status/--logs/--stop/--uninstall.

The parser is built without the host tools (a Pi's own `lkdevice` never loads
them); running it imports host_tools.deploy, whose asyncssh is the `deploy` extra.
"""

from __future__ import annotations

import asyncio
import os
import sys

ACTIONS = ("status", "logs", "stop", "uninstall")


def _run(args) -> int:
    from ..host_tools.deploy import DeployError, Options, Target, deploy, manage, render_config

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        opts = Options(target=Target.parse(args.target), identity=args.identity, known_hosts=args.known_hosts,
                       python=args.python, offline=args.offline, extra_index=args.extra_index_url or [],
                       any_arch=args.any_arch, log_lines=args.lines, wheel=args.wheel,
                       watchdog_s=args.watchdog)
        action = next((a for a in ACTIONS if getattr(args, a)), None)
        if action:
            return asyncio.run(manage(opts, action, say))
        if args.config:
            try:
                with open(args.config, encoding="utf-8") as f:
                    text, source = f.read(), args.config
            except OSError as exc:
                raise DeployError(f"cannot read {args.config}: {exc.strerror}") from None
        else:
            if not args.url:
                raise DeployError("give --config FILE, or --url URL with a token source "
                                  "($LKDEVICE_TOKEN, --token-file PATH_ON_PI or --token-url URL)")
            token = os.environ.get("LKDEVICE_TOKEN") or None
            if not (token or args.token_file or args.token_url):
                raise DeployError("no token source: set $LKDEVICE_TOKEN, or give --token-file PATH_ON_PI "
                                  "or --token-url URL (with the device key in $LKD_DEVICE_KEY)")
            text = render_config(url=args.url, token=token, token_file=args.token_file, token_url=args.token_url,
                                 device_id=args.device_id, device_key=os.environ.get("LKD_DEVICE_KEY") or None,
                                 camera=args.camera,
                                 audio=args.audio, plugins=args.plugin)
            source = "the config from the command line"
        return asyncio.run(deploy(opts, text, source, say))
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_parsers(sub) -> None:
    d = sub.add_parser(
        "deploy", help="install the robot on a Raspberry Pi over SSH and run it as a systemd service",
        description="Build this checkout's wheel, copy it to the Pi, install it in a venv that sees Pi OS's "
                    "packages (picamera2), write the config (0600) and a systemd unit, start it, show its "
                    "status and last log lines.",
        epilog="example: lkdevice deploy pi@raspberrypi.local --config robot.toml   (docs/deploy.md)")
    d.add_argument("target", help="USER@HOST[:PORT] of the Pi")
    what = d.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true", help="show the service's state and last log lines")
    what.add_argument("--logs", action="store_true", help="show the service's last log lines (--lines N)")
    what.add_argument("--stop", action="store_true", help="stop the service (it stays enabled for the next boot)")
    what.add_argument("--uninstall", action="store_true", help="stop and remove the unit, the venv and the config")
    d.add_argument("--config", metavar="FILE", help="the robot config (TOML) to install")
    d.add_argument("--url", help="without --config: the LiveKit server URL the robot joins")
    d.add_argument("--token-file", metavar="PATH_ON_PI", help="without --config: a token file on the Pi")
    d.add_argument("--token-url", metavar="URL", help="without --config: a token server (device key in "
                   "$LKD_DEVICE_KEY); a static token comes from $LKDEVICE_TOKEN, never the command line")
    d.add_argument("--device-id", help="without --config: the device id the token server knows (hex)")
    d.add_argument("--camera", default="test", help="without --config: test|picamera2|v4l2:/dev/videoN|none")
    d.add_argument("--audio", default="sounddevice", help="without --config: sounddevice|wav|none")
    d.add_argument("--plugin", action="append", help="without --config: a plugin (sim, module:object); repeatable")
    d.add_argument("-i", "--identity", metavar="KEY", help="SSH private key (default: ssh-agent and ~/.ssh)")
    d.add_argument("--known-hosts", metavar="FILE", help="known_hosts file (default ~/.ssh/known_hosts)")
    d.add_argument("--python", default="python3", help="the Pi's Python, 3.11+ (default python3)")
    d.add_argument("--offline", action="store_true",
                   help="pip --no-index: install against the Pi's system packages only (a Pi with no registry)")
    d.add_argument("--extra-index-url", action="append", metavar="URL",
                   help="an extra pip index on the Pi (piwheels on armv7; Pi OS's /etc/pip.conf names it)")
    d.add_argument("--any-arch", action="store_true", help="deploy to a machine that is not armv7l/aarch64")
    d.add_argument("--wheel", metavar="FILE", help="install this wheel instead of building one from the checkout")
    d.add_argument("--watchdog", type=int, default=30, metavar="SECONDS",
                   help="the unit's WatchdogSec: systemd restarts a robot that stops pinging (default 30)")
    d.add_argument("--lines", type=int, default=20, help="log lines to show (default 20)")
    d.set_defaults(run=_run)
