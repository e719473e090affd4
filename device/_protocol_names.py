"""The device protocol's names that only the CPython side (the gateway, the host
tools, tests) uses, imported into device_protocol by `from ._protocol_names import *` under CPython.

Kept out of device_protocol.py, which every board loads: on MicroPython each
public module-level name costs a qstr and a globals entry for good (about 40 of
them here), and the firmware sits close to where the interned-name pool doubles.
Spec: docs/device-protocol.md."""

SAMPLE_RATE = 16000
FRAME_MS = 20

# (device_protocol itself gives its limits their public names: MAX_TOKEN, ...)

# Error codes carried by {"t": "error"} (device_protocol keeps the four the firmware uses).
E_OUT_OF_ORDER = "out_of_order"
E_VERSION = "unsupported_version"
E_STATE = "unexpected"
E_TOKEN = "token_rejected"
E_UNREACHABLE = "livekit_unreachable"
E_SESSION = "unknown_session"
E_RATE = "rate_limited"
E_RPC = "rpc_failed"
E_DATA = "data_failed"
E_INTERNAL = "internal"
E_FULL = "gateway_full"

# WebSocket close codes the gateway uses (4000-4999 are the application's).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL = 4400
CLOSE_TOKEN = 4401
CLOSE_SESSION = 4404
CLOSE_REPLACED = 4409
CLOSE_TOO_LARGE = 4413
CLOSE_UNREACHABLE = 4502
CLOSE_LEFT = 4000
CLOSE_RESTART = 1012
CLOSE_FULL = 1013  # "try again later"
