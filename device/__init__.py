"""lkdevice: the device side of LiveKit voice and vision agents."""

from .rtc.audio import AudioChunk, MicrophoneTrack, tone
from .rtc.playout import AudioStream
from .rtc.room import LocalAudioTrack, Room, RoomOptions, connect
from .rtc.data import DataMessage
from .rtc.errors import (ConnectError, DataTooLarge, Disconnected, LiveKitError, ProtocolError, RpcError,
                     ServerUnreachable, TokenRejected)
from .rtc.rpc import RpcInvocation
from .rtc.state import AGENT_STATE_ATTRIBUTE, Participant, TrackPublication

__version__ = "0.1.0"

__all__ = [
    "AGENT_STATE_ATTRIBUTE", "AudioChunk", "AudioStream", "ConnectError", "DataMessage", "DataTooLarge",
    "Disconnected", "LiveKitError", "LocalAudioTrack", "MicrophoneTrack", "Participant", "ProtocolError",
    "Room", "RoomOptions", "RpcError", "RpcInvocation", "ServerUnreachable", "TokenRejected",
    "TrackPublication", "connect", "tone",
]
