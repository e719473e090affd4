"""device/state.py: RoomState turns server messages into the events a user sees."""

from __future__ import annotations

from livekit.protocol import models, rtc

import pytest

from lkdevice.rtc.state import AGENT_STATE_ATTRIBUTE, RoomState

ACTIVE = models.ParticipantInfo.State.ACTIVE
DISCONNECTED = models.ParticipantInfo.State.DISCONNECTED


def track(sid: str, *, name: str = "", kind=models.TrackType.AUDIO, muted: bool = False,
          source=models.TrackSource.MICROPHONE) -> models.TrackInfo:
    return models.TrackInfo(sid=sid, name=name or sid, type=kind, muted=muted, source=source,
                            mime_type="audio/opus" if kind == models.TrackType.AUDIO else "")


def pinfo(identity: str, sid: str | None = None, *, version: int = 1, name: str = "", metadata: str = "",
          attributes: dict[str, str] | None = None, tracks=(), state=ACTIVE,
          kind=models.ParticipantInfo.Kind.STANDARD, reason: int = 0) -> models.ParticipantInfo:
    info = models.ParticipantInfo(sid=sid or f"PA_{identity}", identity=identity, version=version, name=name,
                                  metadata=metadata, tracks=list(tracks), state=state, kind=kind,
                                  disconnect_reason=reason)
    info.attributes.update(attributes or {})
    return info


def join(*others: models.ParticipantInfo, local: models.ParticipantInfo | None = None,
         room_metadata: str = "", room_sid: str = "RM_1") -> rtc.JoinResponse:
    return rtc.JoinResponse(room=models.Room(name="lab", sid=room_sid, metadata=room_metadata),
                            participant=local or pinfo("device", "PA_device"),
                            other_participants=list(others))


def update(*infos: models.ParticipantInfo) -> rtc.ParticipantUpdate:
    return rtc.ParticipantUpdate(participants=list(infos))


def names(events) -> list[str]:
    return [name for name, _ in events]


def joined(*others, **kw) -> RoomState:
    state = RoomState()
    state.apply_join(join(*others, **kw))
    return state


# -- join -----------------------------------------------------------------------

def test_first_join_announces_existing_participants_and_tracks():
    state = RoomState()
    agent = pinfo("agent", kind=models.ParticipantInfo.Kind.AGENT, attributes={AGENT_STATE_ATTRIBUTE: "listening"},
                  tracks=[track("TR_a1")])
    user = pinfo("alice")
    events = state.apply_join(join(agent, user, room_metadata="hello"))
    assert names(events) == ["participant_connected", "track_published", "participant_connected"]
    assert events[0][1][0].identity == "agent"
    pub, owner = events[1][1]
    assert (pub.sid, pub.kind, pub.muted, pub.mime_type) == ("TR_a1", "audio", False, "audio/opus")
    assert owner.identity == "agent"
    assert state.name == "lab" and state.sid == "RM_1"
    assert state.metadata == "hello"  # set, but no room_metadata_changed on the first join
    assert state.local is not None and state.local.identity == "device"
    assert set(state.remote) == {"agent", "alice"}
    p = state.remote["agent"]
    assert p.is_agent and p.agent_state == "listening"
    assert not state.remote["alice"].is_agent and state.remote["alice"].agent_state is None


def test_local_participant_is_not_reported_as_remote():
    state = RoomState()
    events = state.apply_join(join(local=pinfo("device", "PA_device", tracks=[track("TR_mine")])))
    assert events == []
    assert state.remote == {}
    assert "TR_mine" in state.local.tracks
    assert state.find_track("TR_mine") is None  # find_track looks at remote tracks only


def test_rejoin_removes_participants_no_longer_present():
    state = joined(pinfo("alice", tracks=[track("TR_al")]), pinfo("bob"))
    events = state.apply_join(join(pinfo("bob"), pinfo("carol")))
    assert sorted(names(events)) == sorted(["participant_connected", "track_unpublished",
                                            "participant_disconnected"])
    by_name = dict(events)
    assert by_name["participant_connected"][0].identity == "carol"
    p, reason = by_name["participant_disconnected"]
    assert p.identity == "alice" and reason == ""
    pub, owner = by_name["track_unpublished"]
    assert pub.sid == "TR_al" and owner.identity == "alice"
    # the track goes before its participant
    assert names(events).index("track_unpublished") < names(events).index("participant_disconnected")
    assert set(state.remote) == {"bob", "carol"}


def test_rejoin_with_identical_picture_is_silent():
    others = (pinfo("alice", tracks=[track("TR_al")]), pinfo("bob"))
    state = joined(*others, room_metadata="m")
    assert state.apply_join(join(*others, room_metadata="m")) == []


def test_rejoin_reports_changes_of_participants_still_present():
    state = joined(pinfo("alice", version=1, tracks=[track("TR_al")]))
    events = state.apply_join(join(pinfo("alice", version=5, tracks=[track("TR_al", muted=True)])))
    assert names(events) == ["track_muted"]


def test_rejoin_reports_room_metadata_change():
    state = joined(room_metadata="old")
    events = state.apply_join(join(room_metadata="new"))
    assert events == [("room_metadata_changed", ("old", "new"))]
    assert state.metadata == "new"


def test_rejoin_reports_room_metadata_set_while_away():
    state = joined(room_metadata="")
    events = state.apply_join(join(room_metadata="now set"))
    assert ("room_metadata_changed", ("", "now set")) in events


# -- participants come and go ------------------------------------------------------

def test_participant_connected_via_update():
    state = joined()
    events = state.apply_update(update(pinfo("alice", name="Alice", tracks=[track("TR_1"), track("TR_2")])))
    assert names(events) == ["participant_connected", "track_published", "track_published"]
    p = events[0][1][0]
    assert (p.identity, p.sid, p.name) == ("alice", "PA_alice", "Alice")
    assert {e[1][0].sid for e in events[1:]} == {"TR_1", "TR_2"}
    assert state.find_track("TR_2")[0] is p


def test_participant_disconnected_with_reason_name():
    state = joined(pinfo("alice", tracks=[track("TR_1")]))
    events = state.apply_update(update(pinfo("alice", version=2, state=DISCONNECTED,
                                             reason=models.DisconnectReason.PARTICIPANT_REMOVED)))
    assert names(events) == ["track_unpublished", "participant_disconnected"]
    p, reason = events[1][1]
    assert p.identity == "alice"
    assert reason == "PARTICIPANT_REMOVED"
    assert "alice" not in state.remote
    assert state.find_track("TR_1") is None


def test_participant_disconnected_without_reason():
    state = joined(pinfo("alice"))
    events = state.apply_update(update(pinfo("alice", version=2, state=DISCONNECTED)))
    assert events[-1][0] == "participant_disconnected"
    assert events[-1][1][1] == ""


def test_disconnect_of_unknown_or_old_session_is_ignored():
    state = joined(pinfo("alice", "PA_new"))
    assert state.apply_update(update(pinfo("bob", state=DISCONNECTED))) == []
    # a late disconnect for alice's previous session must not remove the current one
    assert state.apply_update(update(pinfo("alice", "PA_old", state=DISCONNECTED))) == []
    assert state.remote["alice"].sid == "PA_new"


def test_same_identity_new_sid_replaces_old_participant():
    state = joined(pinfo("alice", "PA_1", tracks=[track("TR_old")]))
    old = state.remote["alice"]
    events = state.apply_update(update(pinfo("alice", "PA_2", tracks=[track("TR_new")])))
    assert names(events) == ["track_unpublished", "participant_disconnected", "participant_connected",
                             "track_published"]
    assert events[1][1][0] is old
    assert events[2][1][0].sid == "PA_2"
    assert state.remote["alice"].sid == "PA_2"
    assert state.find_track("TR_old") is None
    assert state.find_track("TR_new")[0].sid == "PA_2"


# -- tracks ------------------------------------------------------------------------

def test_track_published_and_unpublished():
    state = joined(pinfo("alice", tracks=[track("TR_1")]))
    events = state.apply_update(update(pinfo("alice", version=2, tracks=[track("TR_1"),
                                                                         track("TR_v", kind=models.TrackType.VIDEO)])))
    assert names(events) == ["track_published"]
    assert events[0][1][0].sid == "TR_v" and events[0][1][0].kind == "video"
    events = state.apply_update(update(pinfo("alice", version=3, tracks=[track("TR_v", kind=models.TrackType.VIDEO)])))
    assert names(events) == ["track_unpublished"]
    pub, p = events[0][1]
    assert pub.sid == "TR_1" and p.identity == "alice"
    assert set(state.remote["alice"].tracks) == {"TR_v"}


def test_track_muted_and_unmuted():
    state = joined(pinfo("alice", tracks=[track("TR_1")]))
    events = state.apply_update(update(pinfo("alice", version=2, tracks=[track("TR_1", muted=True)])))
    assert names(events) == ["track_muted"]
    pub, p = events[0][1]
    assert pub.sid == "TR_1" and pub.muted is True and p.identity == "alice"
    assert state.apply_update(update(pinfo("alice", version=3, tracks=[track("TR_1", muted=True)]))) == []
    events = state.apply_update(update(pinfo("alice", version=4, tracks=[track("TR_1")])))
    assert names(events) == ["track_unmuted"]
    assert state.remote["alice"].tracks["TR_1"].muted is False


def test_server_mute_of_local_track():
    state = joined(local=pinfo("device", "PA_device", tracks=[track("TR_mic")]))
    events = state.apply_mute("TR_mic", True)
    assert names(events) == ["track_muted"]
    assert events[0][1][1] is state.local
    assert state.apply_mute("TR_mic", True) == []
    assert names(state.apply_mute("TR_mic", False)) == ["track_unmuted"]
    assert state.apply_mute("TR_unknown", True) == []


# -- attributes, name, metadata ------------------------------------------------------

def test_attributes_changed_includes_removed_keys_as_empty():
    state = joined(pinfo("alice", attributes={"a": "1", "b": "2", "c": "3"}))
    events = state.apply_update(update(pinfo("alice", version=2, attributes={"a": "1", "b": "20", "d": "4"})))
    assert names(events) == ["participant_attributes_changed"]
    changed, p = events[0][1]
    assert changed == {"b": "20", "d": "4", "c": ""}
    assert p.attributes == {"a": "1", "b": "20", "d": "4"}


def test_agent_state_changed():
    state = joined(pinfo("agent", kind=models.ParticipantInfo.Kind.AGENT,
                         attributes={AGENT_STATE_ATTRIBUTE: "initializing"}))
    events = state.apply_update(update(pinfo("agent", version=2, kind=models.ParticipantInfo.Kind.AGENT,
                                             attributes={AGENT_STATE_ATTRIBUTE: "listening"})))
    assert names(events) == ["participant_attributes_changed", "agent_state_changed"]
    p, agent_state = events[1][1]
    assert p.identity == "agent" and agent_state == "listening" and p.agent_state == "listening"
    assert events[0][1][0] == {AGENT_STATE_ATTRIBUTE: "listening"}


def test_other_attribute_change_does_not_touch_agent_state():
    attrs = {AGENT_STATE_ATTRIBUTE: "thinking"}
    state = joined(pinfo("agent", attributes=attrs))
    events = state.apply_update(update(pinfo("agent", version=2, attributes={**attrs, "x": "y"})))
    assert names(events) == ["participant_attributes_changed"]


def test_agent_state_appears_for_the_first_time():
    state = joined(pinfo("agent"))
    events = state.apply_update(update(pinfo("agent", version=2, attributes={AGENT_STATE_ATTRIBUTE: "speaking"})))
    assert ("agent_state_changed", (state.remote["agent"], "speaking")) in events


def test_name_and_metadata_changes():
    state = joined(pinfo("alice", name="Alice", metadata="m1"))
    events = state.apply_update(update(pinfo("alice", version=2, name="Alicia", metadata="m2")))
    assert names(events) == ["participant_name_changed", "participant_metadata_changed"]
    p, old_name = events[0][1]
    assert p.name == "Alicia" and old_name == "Alice"
    p, old_meta = events[1][1]
    assert p.metadata == "m2" and old_meta == "m1"


def test_local_participant_changes_are_reported():
    state = joined(local=pinfo("device", "PA_device", attributes={"mode": "idle"}))
    events = state.apply_update(update(pinfo("device", "PA_device", version=2, attributes={"mode": "busy"})))
    assert names(events) == ["participant_attributes_changed"]
    assert events[0][1][1] is state.local
    assert state.remote == {}


def test_stale_version_is_ignored():
    state = joined(pinfo("alice", version=5, name="new"))
    assert state.apply_update(update(pinfo("alice", version=3, name="older"))) == []
    assert state.remote["alice"].name == "new"
    # for the local participant too
    state = joined(local=pinfo("device", "PA_device", version=5, name="new"))
    assert state.apply_update(update(pinfo("device", "PA_device", version=4, name="older"))) == []
    assert state.local.name == "new"


def test_newer_version_is_applied_and_remembered():
    state = joined(pinfo("alice", version=5, name="a"))
    state.apply_update(update(pinfo("alice", version=7, name="b")))
    assert state.remote["alice"].version == 7
    assert state.apply_update(update(pinfo("alice", version=6, name="c"))) == []
    assert state.remote["alice"].name == "b"


# -- speakers, quality, room ----------------------------------------------------------

def test_active_speakers_ordered_by_level():
    state = joined(pinfo("alice"), pinfo("bob"), pinfo("carol"))
    events = state.apply_speakers(rtc.SpeakersChanged(speakers=[
        models.SpeakerInfo(sid="PA_alice", level=0.2, active=True),
        models.SpeakerInfo(sid="PA_bob", level=0.9, active=True),
        models.SpeakerInfo(sid="PA_device", level=0.5, active=True),
        models.SpeakerInfo(sid="PA_ghost", level=1.0, active=True),
    ]))
    assert names(events) == ["active_speakers_changed"]
    speakers = events[0][1][0]
    assert [p.identity for p in speakers] == ["bob", "device", "alice"]
    assert [p.identity for p in state.active_speakers] == ["bob", "device", "alice"]
    assert state.remote["bob"].is_speaking and state.remote["bob"].audio_level == pytest.approx(0.9)
    assert not state.remote["carol"].is_speaking


def test_speaker_stops_speaking():
    state = joined(pinfo("alice"), pinfo("bob"))
    state.apply_speakers(rtc.SpeakersChanged(speakers=[models.SpeakerInfo(sid="PA_alice", level=0.4, active=True),
                                                       models.SpeakerInfo(sid="PA_bob", level=0.3, active=True)]))
    events = state.apply_speakers(rtc.SpeakersChanged(speakers=[models.SpeakerInfo(sid="PA_alice", active=False)]))
    assert [p.identity for p in events[0][1][0]] == ["bob"]
    assert not state.remote["alice"].is_speaking


def test_disconnected_speaker_leaves_active_speakers():
    state = joined(pinfo("alice"))
    state.apply_speakers(rtc.SpeakersChanged(speakers=[models.SpeakerInfo(sid="PA_alice", level=0.4, active=True)]))
    state.apply_update(update(pinfo("alice", version=2, state=DISCONNECTED)))
    assert state.active_speakers == []


def test_connection_quality():
    state = joined(pinfo("alice"))
    assert state.remote["alice"].connection_quality == "unknown"
    events = state.apply_quality(rtc.ConnectionQualityUpdate(updates=[
        rtc.ConnectionQualityInfo(participant_sid="PA_alice", quality=models.ConnectionQuality.EXCELLENT),
        rtc.ConnectionQualityInfo(participant_sid="PA_device", quality=models.ConnectionQuality.POOR),
        rtc.ConnectionQualityInfo(participant_sid="PA_ghost", quality=models.ConnectionQuality.GOOD),
    ]))
    assert events == [("connection_quality_changed", (state.remote["alice"], "excellent")),
                      ("connection_quality_changed", (state.local, "poor"))]
    # unchanged quality is not reported again
    assert state.apply_quality(rtc.ConnectionQualityUpdate(updates=[
        rtc.ConnectionQualityInfo(participant_sid="PA_alice", quality=models.ConnectionQuality.EXCELLENT)])) == []
    events = state.apply_quality(rtc.ConnectionQualityUpdate(updates=[
        rtc.ConnectionQualityInfo(participant_sid="PA_alice", quality=models.ConnectionQuality.LOST)]))
    assert events == [("connection_quality_changed", (state.remote["alice"], "lost"))]


def test_room_metadata_update():
    state = joined(room_metadata="")
    assert state.apply_room(models.Room(sid="RM_1", metadata="")) == []
    events = state.apply_room(models.Room(sid="RM_1", metadata='{"topic":"x"}'))
    assert events == [("room_metadata_changed", ("", '{"topic":"x"}'))]
    assert state.metadata == '{"topic":"x"}'
    events = state.apply_room(models.Room(metadata="y"))
    assert events == [("room_metadata_changed", ('{"topic":"x"}', "y"))]
    assert state.sid == "RM_1"  # an update without a sid keeps the known one
    state.apply_room(models.Room(sid="RM_2", metadata="y"))
    assert state.sid == "RM_2"
