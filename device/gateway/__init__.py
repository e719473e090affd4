"""The device gateway: one LiveKit participant per constrained device (the ESP32).

`server` accepts device sockets, `session` is one device's `Room`, `link` holds
the per-device policy (frame order, rate, bounded outboxes), `codecs` the device
codecs at C speed. Built on `lkdevice.rtc`; imports nothing of the host tools.
"""

from .server import DEVICE_PATH, Gateway, GatewayConfig, run_gateway, server_ssl_context

__all__ = ["DEVICE_PATH", "Gateway", "GatewayConfig", "run_gateway", "server_ssl_context"]
