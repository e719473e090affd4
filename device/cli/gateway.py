"""`lkdevice gateway`: serve ESP32-class devices and join LiveKit as each of them."""

from __future__ import annotations

import asyncio
import logging
import sys


def _gateway(args) -> int:
    from ..gateway import GatewayConfig, run_gateway, server_ssl_context

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"error: --listen wants HOST:PORT, got {args.listen!r}", file=sys.stderr)
        return 2
    # joins, resumes and leaves, never tokens
    logging.getLogger("lkdevice.gateway").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    ssl_context = None
    if args.tls_cert:
        ssl_context = server_ssl_context(args.tls_cert, args.tls_key)
    if args.stats_every < 0:
        print("error: --stats-every wants seconds >= 0", file=sys.stderr)
        return 2
    config = GatewayConfig(livekit_url=args.livekit_url, host=host.strip("[]"), port=int(port), grace=args.grace,
                           max_devices=args.max_devices, ssl_context=ssl_context, stats_every=args.stats_every)
    try:
        asyncio.run(run_gateway(config))
    except OSError as exc:
        print(f"error: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def add_parsers(sub) -> None:
    g = sub.add_parser("gateway", help="serve ESP32-class devices over the device protocol and join LiveKit "
                                       "as each of them",
                       epilog="example: lkdevice gateway --livekit-url wss://my.livekit.cloud --listen 0.0.0.0:8765")
    g.add_argument("--livekit-url", required=True, help="LiveKit server URL (ws[s]:// or http[s]://)")
    g.add_argument("--listen", default="127.0.0.1:8765", help="HOST:PORT for devices (default 127.0.0.1:8765)")
    g.add_argument("--grace", type=float, default=15.0,
                   help="seconds a dropped device keeps its place in the room (default 15)")
    g.add_argument("--max-devices", type=int, default=500)
    g.add_argument("--tls-cert", help="serve wss:// with this certificate (PEM, may include the key)")
    g.add_argument("--tls-key", help="private key for --tls-cert (PEM)")
    g.add_argument("--stats-every", type=float, default=0.0, metavar="SECONDS",
                   help="log each device's downlink stats (jitter-buffer delay, concealed frames) every SECONDS "
                        "(default 0: never)")
    g.set_defaults(run=_gateway)
