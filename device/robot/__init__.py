"""The Raspberry Pi robot app: camera, audio devices, commands from the agent, run as a service.

It joins the room directly over WebRTC with `lkdevice.rtc`; it imports nothing
of the gateway or the host tools.
"""
