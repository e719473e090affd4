"""`lkdevice robot`: the Raspberry Pi robot app (device/robot/), from the command line or a service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from types import SimpleNamespace

from ..robot.options import VIDEO_CODECS
from .join import DEMO_ROOM

DESCRIPTION = """\
Run the robot: join a LiveKit room over WebRTC, publish the microphone (and the
camera), play the agent's speech, and let the agent drive the robot through
plugins. It reconnects on its own for ever; SIGTERM stops the motors, leaves
the room and exits 0. Under systemd (Type=notify) it reports READY, STATUS and
watchdog pings on $NOTIFY_SOCKET.

Settings come from --config (TOML, see docs/robot.md); every flag given here
overrides the file. Without --url (and no url in the file) a local dev server
and an echo agent are started and the robot mints its own token, like
`lkdevice join`."""

EPILOG = """\
example: lkdevice robot --audio wav --play tone:440 --record heard.wav --duration 10
  (no sound card needed: a tone as the microphone, the echo agent's answer recorded)

more:
  # on the Pi, as the service runs it
  lkdevice robot --config /etc/lkdevice/robot.toml --log-json

  # against a server, with the USB sound card, the camera through v4l2 and the sim drive
  lkdevice robot --url wss://my.livekit.cloud --token "$TOKEN" --audio sounddevice \\
      --camera v4l2:/dev/video0 --video-codec auto --size 640x480 --fps 30 --plugin sim

exit status: 0 stopped (SIGTERM, Ctrl-C, --duration), 2 bad configuration or a
refused token the token source cannot replace."""


def add_parsers(sub) -> None:
    r = sub.add_parser("robot", help="run the Pi robot: camera, microphone, speaker, commands from the agent",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = r.add_argument_group("where")
    g.add_argument("--config", metavar="FILE", help="TOML config file (flags override it)")
    g.add_argument("--url", help="LiveKit URL (ws[s]:// or http[s]://); none: a local dev server")
    g.add_argument("--token", help="access token (goes with --url; a config file can name a token file or URL)")
    g.add_argument("--room", help=f"expected room (checked against the token); the dev server's room "
                                  f"(default {DEMO_ROOM})")
    g.add_argument("--identity", help="identity in the dev server's self-minted token (default robot)")
    g.add_argument("--no-agent", action="store_true", help="dev server only: do not start the echo agent")
    v = r.add_argument_group("camera")
    v.add_argument("--camera", metavar="SOURCE",
                   help="test (synthetic pattern), picamera2, v4l2:/dev/videoN, or none (default: none)")
    v.add_argument("--video-codec", choices=VIDEO_CODECS,
                   help="vp8/h264 encode in software; passthrough publishes the camera's H.264; "
                        "auto picks passthrough where a hardware encoder exists (default auto)")
    v.add_argument("--size", metavar="WxH", help="picture size (default 640x480)")
    v.add_argument("--fps", type=int, help="frames per second (default 30)")
    v.add_argument("--bitrate", type=int, metavar="KBPS", help="video bitrate in kb/s (default 1000)")
    a = r.add_argument_group("audio")
    a.add_argument("--audio", choices=("sounddevice", "wav", "none"),
                   help="sounddevice: the sound card; wav: --play into the mic, the speaker to --record; "
                        "none (default; --play/--record alone mean wav)")
    a.add_argument("--play", metavar="FILE.wav|tone:HZ", help="wav backend: the microphone's audio, at real-time pace")
    a.add_argument("--record", metavar="OUT.wav", help="wav backend: write what the speaker plays (48 kHz mono)")
    a.add_argument("--input-device", metavar="NAME|INDEX", help="sounddevice: the microphone (default: the system's)")
    a.add_argument("--output-device", metavar="NAME|INDEX", help="sounddevice: the speaker (default: the system's)")
    a.add_argument("--half-duplex", action="store_true",
                   help="mute the microphone while the speaker plays (robots without echo cancellation)")
    c = r.add_argument_group("commands and service")
    c.add_argument("--plugin", action="append", metavar="module:object",
                   help="load a command plugin (sim: the built-in simulated drive); repeat for more")
    c.add_argument("--watchdog", type=float, metavar="SECONDS",
                   help="stop the motors when no command came for this long (default 0.5)")
    c.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: run for ever)")
    c.add_argument("--log-json", action="store_true",
                   help="logs as one JSON object per line on stdout (console lines too); secrets never logged")
    r.set_defaults(run=run_robot)


def _device(value):
    return int(value) if isinstance(value, str) and value.isdigit() else value


def run_robot(args) -> int:
    from ..robot.config import ConfigError, RobotConfig, apply_flags, load

    try:
        cfg = load(args.config) if args.config else RobotConfig()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.token and not args.url:
        args.parser.error("--token goes with --url")
    args.input_device = _device(args.input_device)
    args.output_device = _device(args.output_device)
    try:
        cfg = apply_flags(cfg, args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t = cfg.tokens
    if cfg.url and not (t.token or t.token_file or t.token_url):
        args.parser.error("--url needs --token (or a config file with a token source)")
    return asyncio.run(_run(cfg, args))


async def _run(cfg, args) -> int:
    from ..robot.app import RobotApp, StartupError
    from ..robot.console import Console
    from ..robot.service import Notifier, setup_logging
    from ..robot.tokens import StaticToken, TokenError, token_source

    log = setup_logging(cfg.log_json, verbose=getattr(args, "verbose", False))
    console = Console(sink=log.info) if cfg.log_json else Console()
    # with --log-json every stdout line is JSON: stray prints (the dev server's) go to stderr
    quiet = contextlib.redirect_stdout(sys.stderr) if cfg.log_json else contextlib.nullcontext()
    with quiet:
        if cfg.url is None:
            from ..host_tools.devroom import local_dev_room

            room = cfg.room or DEMO_ROOM
            dev_args = SimpleNamespace(url=None, token=None, room=room, identity=cfg.identity, no_agent=args.no_agent)
            async with local_dev_room(dev_args) as (url, token, _):
                cfg.room = room
                return await _run_app(RobotApp, StartupError, cfg, StaticToken(token), url, log, console, Notifier())
        try:
            tokens = token_source(cfg.tokens)
        except TokenError as exc:
            console.line(f"error: {exc}")
            return 2
        return await _run_app(RobotApp, StartupError, cfg, tokens, cfg.url, log, console, Notifier())


async def _run_app(RobotApp, StartupError, cfg, tokens, url, log, console, notifier) -> int:
    app = RobotApp(cfg, tokens, log=log, console=console, notifier=notifier, url=url)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # in the loop: stop_all, leave, exit 0 (not lkdevice's SIGTERM-as-Ctrl-C, which exits 130)
        loop.add_signal_handler(sig, app.stop, signal.Signals(sig).name)
    try:
        return await app.run()
    except StartupError as exc:
        console.line(f"error: {exc}")
        return 2
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
