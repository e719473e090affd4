"""`lkdevice server`, `lkdevice token` and `lkdevice token-server`: a local dev server,
dev tokens, and a token_url server for boards (host tools)."""

from __future__ import annotations

import os
import sys

from .join import DEMO_ROOM


def _server(args) -> int:
    from ..host_tools.livekit_server import (DEV_API_KEY, LocalServer, ServerConfig, ServerUnavailable,
                                            build_server_binary)
    try:
        if args.action == "build":
            print(build_server_binary())
            return 0
        srv = LocalServer(ServerConfig(port=args.port)).start()
    except ServerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"livekit-server on {srv.url} (api key {DEV_API_KEY}; secret in the dev config); "
          f"log {srv.log_path}; Ctrl-C to stop", flush=True)
    try:
        srv.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


def _token(args) -> int:
    from ..host_tools.livekit_server import DEV_API_KEY, DEV_API_SECRET
    from ..host_tools.tokens import mint_token

    key = os.environ.get("LIVEKIT_API_KEY", DEV_API_KEY)
    secret = os.environ.get("LIVEKIT_API_SECRET", DEV_API_SECRET)
    print(mint_token(key, secret, identity=args.identity, room=args.room, ttl=args.ttl, name=args.name or "",
                     agent_name=args.agent or None))
    return 0


def _token_server(args) -> int:
    import asyncio

    from ..host_tools.livekit_server import DEV_API_KEY, DEV_API_SECRET
    from ..host_tools.token_server import TokenServerConfig, load_devices, run_token_server

    devices = {}
    if args.devices:
        try:
            devices = load_devices(args.devices)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    shared = os.environ.get("LKD_DEVICE_KEY") or None
    if not devices and not shared:
        print("error: no devices: give --devices FILE, or a key every board shares in LKD_DEVICE_KEY",
              file=sys.stderr)
        return 2
    cfg = TokenServerConfig(api_key=os.environ.get("LIVEKIT_API_KEY", DEV_API_KEY),
                            api_secret=os.environ.get("LIVEKIT_API_SECRET", DEV_API_SECRET), room=args.room,
                            devices=devices, shared_key=shared, ttl=args.ttl, host=args.host, port=args.port)
    try:
        asyncio.run(run_token_server(cfg))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("server", help="run (or build) a local livekit-server for development",
                       epilog="example: lkdevice server build   # once; then: lkdevice server --port 7880")
    s.add_argument("action", nargs="?", choices=["run", "build"], default="run")
    s.add_argument("--port", type=int, default=7880)
    s.set_defaults(run=_server)

    t = sub.add_parser("token", help="mint a dev access token (LIVEKIT_API_KEY/SECRET, else the dev keys)",
                       epilog="example: lkdevice token --identity esp32 --room kitchen")
    t.add_argument("--room", default=DEMO_ROOM)
    t.add_argument("--identity", required=True)
    t.add_argument("--name")
    t.add_argument("--ttl", type=float, default=6 * 3600)
    t.add_argument("--agent", metavar="NAME", help="dispatch this named agent when the join creates the room "
                                                   "(e.g. lkdevice-agent, the offline voice agent)")
    t.set_defaults(run=_token)

    ts = sub.add_parser("token-server", help="serve tokens to boards configured with token_url "
                        "(X-Device-Id + Authorization: Bearer device_key)",
                        epilog="example: lkdevice token-server --devices devices.json --host 0.0.0.0 --room kitchen"
                               "   (or one key for every board in $LKD_DEVICE_KEY; boards get "
                               "\"token_url\": \"http://HOST:8081/token\" and \"device_key\")")
    ts.add_argument("--host", default="127.0.0.1")
    ts.add_argument("--port", type=int, default=8081)
    ts.add_argument("--room", default=DEMO_ROOM, help="room for devices the --devices file gives none")
    ts.add_argument("--devices", metavar="FILE",
                    help='JSON {"<device id>": {"key": "...", "identity": "...", "room": "..."}}')
    ts.add_argument("--ttl", type=float, default=6 * 3600, help="token lifetime, seconds")
    ts.set_defaults(run=_token_server)
