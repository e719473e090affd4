"""The LiveKit client on aiortc: `Room` and the layers under it.

Imports nothing of the gateway, the robot app or the host tools: they build on it.
"""
