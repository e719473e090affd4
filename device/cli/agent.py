"""`lkdevice agent`: the offline voice agent (a LiveKit Agents worker), from host_tools.agent."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

EPILOG = """\
The agent finds its server as every LiveKit Agents worker does: LIVEKIT_URL,
LIVEKIT_API_KEY and LIVEKIT_API_SECRET (the flags override them). It is
dispatched by name: a device token that asks for it (`lkdevice token
--agent lkdevice-agent`) brings it into the device's room when the room is
created. Nothing it uses reaches the internet: Silero VAD, PocketSphinx and
eSpeak NG run here.

example: lkdevice agent   (with LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET set)
         lkdevice agent --url ws://127.0.0.1:7880 --echo   # replay what it hears (latency tests)
"""


def _agent(args) -> int:
    from ..host_tools.agent.worker import AgentConfig, AgentDependencyMissing, serve

    url = args.url or os.environ.get("LIVEKIT_URL")
    key = args.api_key or os.environ.get("LIVEKIT_API_KEY")
    secret = os.environ.get("LIVEKIT_API_SECRET") if args.api_secret is None else args.api_secret
    missing = [name for name, v in (("--url or LIVEKIT_URL", url), ("--api-key or LIVEKIT_API_KEY", key),
                                    ("--api-secret or LIVEKIT_API_SECRET", secret)) if not v]
    if missing:
        print(f"error: the agent needs {', '.join(missing)}", file=sys.stderr)
        return 2
    if not url.startswith(("ws://", "wss://", "http://", "https://")):
        print(f"error: --url must be ws://, wss://, http:// or https://, got {url!r}", file=sys.stderr)
        return 2
    logging.getLogger("lkdevice.agent").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    config = AgentConfig(url=url, api_key=key, api_secret=secret, agent_name=args.agent_name, echo=args.echo,
                         endpointing_s=args.endpointing, job_threads=args.threads,
                         greeting=args.greeting, log_level="DEBUG" if args.verbose else "WARN",
                         metrics_path=args.metrics)
    mode = "echo" if args.echo else "voice"

    def registered(worker_id: str) -> None:
        print(f"agent {args.agent_name} ({mode}) registered with {url} as worker {worker_id}", flush=True)

    try:
        asyncio.run(serve(config, registered))
    except AgentDependencyMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the worker gave up: say why in one line
        print(f"error: the agent stopped: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


# host_tools.agent.worker's default, repeated: building the parser loads no host tool
DEFAULT_AGENT_NAME = "lkdevice-agent"


def add_parsers(sub) -> None:
    a = sub.add_parser("agent", help="the offline voice agent: a LiveKit Agents worker (Silero VAD, "
                                     "PocketSphinx, eSpeak NG, rules), dispatched by name",
                       description="Run the offline voice agent until Ctrl-C.", epilog=EPILOG,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    a.add_argument("--url", help="LiveKit server URL (default: LIVEKIT_URL)")
    a.add_argument("--api-key", help="API key (default: LIVEKIT_API_KEY)")
    a.add_argument("--api-secret", help="API secret (default: LIVEKIT_API_SECRET; prefer the variable: "
                                        "a flag shows in the process list)")
    a.add_argument("--agent-name", default=DEFAULT_AGENT_NAME,
                   help=f"the name tokens dispatch (default {DEFAULT_AGENT_NAME})")
    a.add_argument("--echo", action="store_true", help="replay what it hears when the user stops speaking")
    a.add_argument("--endpointing", type=float, default=0.3, metavar="SECONDS",
                   help="more silence, after the VAD's 0.25 s, that ends the user's turn (default 0.3)")
    a.add_argument("--greeting", default="Hello. I am listening.",
                   help="what it says when a device joins (\"\" for nothing)")
    a.add_argument("--metrics", metavar="FILE.jsonl",
                   help="append a JSON line per turn: what was said and the session's latency metrics")
    a.add_argument("--threads", action="store_true",
                   help="run jobs in threads of this process, not in their own processes (lighter)")
    a.set_defaults(run=_agent)
