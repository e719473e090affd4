"""`lkdevice up` (the local stack until Ctrl-C) and `lkdevice demo` (the stack plus a device that asks)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

UP_EPILOG = """\
Starts livekit-server (dev keys devkey/secret, 127.0.0.1 only), the device gateway
and the offline voice agent (`lkdevice agent`), one status line each, then prints
how to point a device at them, and runs until Ctrl-C (or SIGTERM): all three stop.

example: lkdevice up   (then, in another terminal, the commands it prints)
  lkdevice up --echo --room kitchen   # the echo agent: replays what it hears
"""

DEMO_EPILOG = """\
Starts the stack as `lkdevice up` does, then a simulated device that asks the agent
a question. With a microphone and speaker here (--audio sounddevice, or auto when
there are both) you speak and hear the agent until Ctrl-C; otherwise the question
is spoken by espeak-ng into the device's microphone, the agent's answer is
recorded from its speaker, and the demo ends once the agent has answered.

example: lkdevice demo   (the simulated ESP32 asks "what time is it")
  lkdevice demo --device robot-sim --say "move forward"      # the agent drives the sim robot
  lkdevice demo --audio wav --record answer.wav

exit status: 0 the agent answered, 1 it did not (or a part failed), 2 a usage mistake.
"""


# host_tools.stack's defaults, repeated: building the parser loads no host tool (tests/unit/test_layout.py)
DEFAULT_ROOM = "lkdevice-demo"
DEFAULT_SERVER_PORT = 7880
DEFAULT_GATEWAY = "127.0.0.1:8765"


def add_parsers(sub) -> None:
    u = sub.add_parser("up", help="run livekit-server, the gateway and the voice agent locally until Ctrl-C",
                       description="Run the local stack: livekit-server, the device gateway, the agent.",
                       epilog=UP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    u.add_argument("--room", default=DEFAULT_ROOM, help=f"the room the printed commands use (default {DEFAULT_ROOM})")
    u.add_argument("--server-port", type=int, default=DEFAULT_SERVER_PORT,
                   help=f"livekit-server's port on 127.0.0.1 (default {DEFAULT_SERVER_PORT})")
    u.add_argument("--gateway-listen", default=DEFAULT_GATEWAY, metavar="HOST:PORT",
                   help=f"where devices reach the gateway (default {DEFAULT_GATEWAY})")
    u.add_argument("--echo", action="store_true", help="the echo agent (replays what it hears) instead of the voice agent")
    u.set_defaults(run=_up)

    d = sub.add_parser("demo", help="the local stack plus a simulated device that asks the agent something",
                       description="Talk to the offline voice agent through a simulated device.",
                       epilog=DEMO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    # checked by the demo, not by argparse: a mistake is one line, not the usage text
    d.add_argument("--device", default="esp32-sim", metavar="esp32-sim|robot-sim",
                   help="the simulated ESP32 through the gateway (default), or the robot app over WebRTC")
    d.add_argument("--audio", default="auto", metavar="auto|sounddevice|wav",
                   help="sounddevice: you speak and hear; wav: a spoken question in, the answer to --record; "
                        "auto: sounddevice when there is a microphone and speaker (default)")
    d.add_argument("--say", metavar="TEXT", help="the question (wav audio; default: \"what time is it\", "
                                                 "to the robot \"what is your battery\")")
    d.add_argument("--record", default="demo-answer.wav", metavar="FILE",
                   help="the device's speaker, recorded (wav audio; default demo-answer.wav)")
    d.add_argument("--room", default=DEFAULT_ROOM, help=f"(default {DEFAULT_ROOM})")
    d.add_argument("--echo", action="store_true", help="the echo agent (replays the question) instead of the voice agent")
    d.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the answer (default 60)")
    d.set_defaults(run=_demo)


def _print(line: str) -> None:
    print(line, flush=True)


def _fail(e) -> int:
    from ..host_tools.stack import PartDied

    print(f"error: {e}", file=sys.stderr, flush=True)
    if isinstance(e, PartDied) and e.log_tail:
        print(f"--- the end of the {e.part}'s log:\n{e.log_tail}\n---", file=sys.stderr, flush=True)
    return e.exit_code


async def _until_signal(work) -> tuple[bool, object]:
    """Run `work` until SIGINT/SIGTERM. Returns (interrupted, work's result). Later signals are
    ignored while the caller cleans up: a second Ctrl-C must not cut the stop short (orphans)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return False, task.result()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return True, None
    finally:
        stopper.cancel()


def _up(args) -> int:
    from ..host_tools.stack import StackError, StackConfig, parse_hostport

    try:
        host, port = parse_hostport(args.gateway_listen, "--gateway-listen")
    except StackError as e:
        return _fail(e)
    cfg = StackConfig(room=args.room, server_port=args.server_port, gateway_host=host, gateway_port=port,
                      echo=args.echo)
    try:
        return asyncio.run(_run_up(cfg))
    except StackError as e:
        return _fail(e)


async def _run_up(cfg) -> int:
    from ..host_tools.stack import Stack

    async def run() -> None:
        async with Stack(cfg, _print) as stack:
            _instructions(stack)
            await stack.watch()

    interrupted, _ = await _until_signal(run())
    if interrupted:
        _print("stopped: agent, gateway and server")
    return 0


def _instructions(stack) -> None:
    c = stack.config
    tok = f"lkdevice token --identity esp32 --room {c.room} --agent {c.agent_name}"
    rtok = f"lkdevice token --identity robot --room {c.room} --agent {c.agent_name}"
    _print(f"device URL:   {stack.gateway_url}")
    _print(f"device token: {tok}")
    _print(f"an ESP32 (simulated): lkdevice sim esp32 --gateway {stack.gateway_url} --token \"$({tok})\" "
           f"--duration 60")
    _print(f"a robot: lkdevice robot --url {stack.server_url} --token \"$({rtok})\" --camera test --plugin sim "
           f"--audio sounddevice")
    _print("Ctrl-C stops all three")


def _demo(args) -> int:
    from ..host_tools.demo import DemoConfig, run_demo
    from ..host_tools.stack import StackError

    cfg = DemoConfig(device=args.device, audio=args.audio, say=args.say, record=args.record, room=args.room,
                     echo=args.echo, answer_timeout=args.timeout)
    try:
        cfg.check()
    except StackError as e:
        return _fail(e)

    async def main() -> int:
        interrupted, result = await _until_signal(run_demo(cfg, _print))
        if interrupted:
            _print("stopped")
            return 0
        none = "(the echo agent publishes no transcript)" if cfg.echo else "(no transcript)"
        _print(f"heard:   {' / '.join(result.heard) or none}")
        _print(f"said:    {' / '.join(result.said) or none}")
        if result.recording:
            _print(f"recording: {result.recording} ({result.recorded_s:.1f} s, {result.voiced_s:.1f} s of it voiced)")
        return 0

    try:
        return asyncio.run(main())
    except StackError as e:
        return _fail(e)
