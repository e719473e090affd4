"""Which remote audio track the gateway plays to a device: an agent's, else the newest."""

from __future__ import annotations

import pytest
from aiortc.mediastreams import MediaStreamTrack
from livekit.protocol import models

from lkdevice import device_protocol as dp
from lkdevice.gateway.session import DeviceSession
from lkdevice.rtc.playout import PacketTap, attach


class _RemoteAudio(MediaStreamTrack):
    """A received track: its packets come through a PacketTap, recv() only reports its end."""

    kind = "audio"

    async def recv(self):
        raise NotImplementedError


@pytest.fixture
async def session():
    s = DeviceSession(codec=dp.CODEC_PCM16, max_text=1024, grace=1.0)
    yield s
    if s._downlink:
        s._downlink.cancel()


def join(session: DeviceSession, identity: str, track_sid: str, *, agent: bool = False) -> None:
    """`identity` joins with one audio track, and we subscribe to it (in that order)."""
    kind = models.ParticipantInfo.Kind.AGENT if agent else models.ParticipantInfo.Kind.STANDARD
    info = models.ParticipantInfo(sid="PA_" + identity, identity=identity, kind=kind,
                                  state=models.ParticipantInfo.State.ACTIVE,
                                  tracks=[models.TrackInfo(sid=track_sid, type=models.TrackType.AUDIO)])
    session.room.state.apply_participant(info)
    track = _RemoteAudio()
    attach(track, PacketTap())
    session.room._remote_tracks[track_sid] = track
    session._on_track_subscribed(track, None, None)


def leave(session: DeviceSession, identity: str, track_sid: str) -> None:
    session.room._remote_tracks.pop(track_sid)
    del session.room.state.remote[identity]
    session._on_track_unsubscribed(None, None, None)


async def test_the_newest_track_is_played_when_no_agent_is_there(session):
    join(session, "alice", "TR_alice")
    assert session._downlink_sid == "TR_alice"
    join(session, "bob", "TR_bob")
    # before: the first participant's track in dict order (alice's) stayed
    assert session._downlink_sid == "TR_bob"
    join(session, "carol", "TR_carol")
    assert session._downlink_sid == "TR_carol"
    leave(session, "carol", "TR_carol")
    assert session._downlink_sid == "TR_bob"


async def test_an_agent_is_played_over_newer_tracks(session):
    join(session, "alice", "TR_alice")
    join(session, "agent", "TR_agent", agent=True)
    join(session, "bob", "TR_bob")
    assert session._downlink_sid == "TR_agent"
    join(session, "agent2", "TR_agent2", agent=True)
    assert session._downlink_sid == "TR_agent2"
    leave(session, "agent2", "TR_agent2")
    leave(session, "agent", "TR_agent")
    assert session._downlink_sid == "TR_bob"
