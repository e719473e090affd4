"""The room as the server describes it, sans I/O.

Each `apply_*` method takes a protobuf from the signal channel, updates the
model and returns the events a user would care about, named as in the official
SDKs (`participant_connected`, `track_muted`, ...). The live `Room` emits them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from livekit.protocol import models, rtc

AGENT_STATE_ATTRIBUTE = "lk.agent.state"

Event = tuple[str, tuple[Any, ...]]

_KIND = {models.TrackType.AUDIO: "audio", models.TrackType.VIDEO: "video", models.TrackType.DATA: "data"}
_QUALITY = {q: n.lower() for n, q in models.ConnectionQuality.items()}
_PARTICIPANT_KIND = {k: n.lower() for n, k in models.ParticipantInfo.Kind.items()}


@dataclass
class TrackPublication:
    sid: str
    name: str
    kind: str
    source: int
    muted: bool
    mime_type: str = ""

    @classmethod
    def from_info(cls, info: models.TrackInfo) -> "TrackPublication":
        return cls(
            sid=info.sid,
            name=info.name,
            kind=_KIND.get(info.type, "unknown"),
            source=info.source,
            muted=info.muted,
            mime_type=info.mime_type,
        )


@dataclass
class Participant:
    sid: str
    identity: str
    name: str = ""
    metadata: str = ""
    kind: str = "standard"
    attributes: dict[str, str] = field(default_factory=dict)
    tracks: dict[str, TrackPublication] = field(default_factory=dict)
    is_speaking: bool = False
    audio_level: float = 0.0
    connection_quality: str = "unknown"
    version: int = 0

    @property
    def agent_state(self) -> str | None:
        """The LiveKit Agents state (`initializing`, `listening`, `thinking`, `speaking`), if any."""
        return self.attributes.get(AGENT_STATE_ATTRIBUTE)

    @property
    def is_agent(self) -> bool:
        return self.kind == "agent"


def _participant(info: models.ParticipantInfo) -> Participant:
    return Participant(
        sid=info.sid,
        identity=info.identity,
        name=info.name,
        metadata=info.metadata,
        kind=_PARTICIPANT_KIND.get(info.kind, "standard"),
        attributes=dict(info.attributes),
        tracks={t.sid: TrackPublication.from_info(t) for t in info.tracks},
        version=info.version,
    )


class RoomState:
    """Participants, their tracks and attributes, speakers, quality and room metadata."""

    def __init__(self) -> None:
        self.name = ""
        self.sid = ""
        self.metadata = ""
        self.local: Participant | None = None
        self.remote: dict[str, Participant] = {}  # by identity
        self.active_speakers: list[Participant] = []

    def _by_sid(self, sid: str) -> Participant | None:
        if self.local and self.local.sid == sid:
            return self.local
        for p in self.remote.values():
            if p.sid == sid:
                return p
        return None

    def find_track(self, track_sid: str) -> tuple[Participant, TrackPublication] | None:
        for p in self.remote.values():
            if track_sid in p.tracks:
                return p, p.tracks[track_sid]
        return None

    # -- join ---------------------------------------------------------------
    def apply_join(self, join: rtc.JoinResponse) -> list[Event]:
        """A (re)join replaces the whole picture; return what changed for the user."""
        events: list[Event] = []
        self.name = join.room.name
        self.sid = join.room.sid
        if join.room.metadata != self.metadata:
            old, self.metadata = self.metadata, join.room.metadata
            if self.local is not None:  # a rejoin: it changed while we were away
                events.append(("room_metadata_changed", (old, self.metadata)))
        self.local = _participant(join.participant)
        seen = set()
        for info in join.other_participants:
            seen.add(info.identity)
            events += self.apply_participant(info)
        for identity in list(self.remote):
            if identity not in seen:
                events += self._remove(self.remote[identity])
        return events

    def apply_room(self, room: models.Room) -> list[Event]:
        if room.sid:
            self.sid = room.sid
        if room.metadata != self.metadata:
            old, self.metadata = self.metadata, room.metadata
            return [("room_metadata_changed", (old, self.metadata))]
        return []

    # -- participants -------------------------------------------------------
    def apply_update(self, update: rtc.ParticipantUpdate) -> list[Event]:
        events: list[Event] = []
        for info in update.participants:
            events += self.apply_participant(info)
        return events

    def apply_participant(self, info: models.ParticipantInfo) -> list[Event]:
        if self.local and (info.sid == self.local.sid or info.identity == self.local.identity):
            return self._update_local(info)
        existing = self.remote.get(info.identity)
        if info.state == models.ParticipantInfo.State.DISCONNECTED:
            if existing and (not existing.sid or existing.sid == info.sid):
                return self._remove(existing, info.disconnect_reason)
            return []
        if existing is None or existing.sid != info.sid:
            events: list[Event] = []
            if existing is not None:  # same identity, new session: the old one is gone
                events += self._remove(existing)
            p = _participant(info)
            self.remote[p.identity] = p
            events.append(("participant_connected", (p,)))
            events += [("track_published", (pub, p)) for pub in p.tracks.values()]
            return events
        if info.version and info.version < existing.version:
            return []  # stale update, already superseded
        return self._diff(existing, info)

    def _update_local(self, info: models.ParticipantInfo) -> list[Event]:
        assert self.local is not None
        if info.version and info.version < self.local.version:
            return []
        return self._diff(self.local, info)

    def _diff(self, p: Participant, info: models.ParticipantInfo) -> list[Event]:
        events: list[Event] = []
        p.version = info.version
        if info.name != p.name:
            old, p.name = p.name, info.name
            events.append(("participant_name_changed", (p, old)))
        if info.metadata != p.metadata:
            old, p.metadata = p.metadata, info.metadata
            events.append(("participant_metadata_changed", (p, old)))
        new_attrs = dict(info.attributes)
        if new_attrs != p.attributes:
            changed = {k: v for k, v in new_attrs.items() if p.attributes.get(k) != v}
            changed.update({k: "" for k in p.attributes if k not in new_attrs})
            old_agent_state = p.agent_state
            p.attributes = new_attrs
            events.append(("participant_attributes_changed", (changed, p)))
            if p.agent_state != old_agent_state:
                events.append(("agent_state_changed", (p, p.agent_state)))
        new_tracks = {t.sid: t for t in info.tracks}
        for sid, t in new_tracks.items():
            pub = p.tracks.get(sid)
            if pub is None:
                pub = p.tracks[sid] = TrackPublication.from_info(t)
                events.append(("track_published", (pub, p)))
            elif t.muted != pub.muted:
                pub.muted = t.muted
                events.append(("track_muted" if t.muted else "track_unmuted", (pub, p)))
        for sid in [s for s in p.tracks if s not in new_tracks]:
            events.append(("track_unpublished", (p.tracks.pop(sid), p)))
        return events

    def _remove(self, p: Participant, reason: int = 0) -> list[Event]:
        self.remote.pop(p.identity, None)
        events: list[Event] = [("track_unpublished", (pub, p)) for pub in p.tracks.values()]
        if p in self.active_speakers:
            self.active_speakers.remove(p)
        events.append(("participant_disconnected", (p, models.DisconnectReason.Name(reason) if reason else "")))
        return events

    # -- speakers and quality -------------------------------------------------
    def apply_speakers(self, changed: rtc.SpeakersChanged) -> list[Event]:
        for info in changed.speakers:
            p = self._by_sid(info.sid)
            if p is None:
                continue
            p.is_speaking = info.active
            p.audio_level = info.level
        everyone = ([self.local] if self.local else []) + list(self.remote.values())
        speakers = sorted((p for p in everyone if p.is_speaking), key=lambda p: -p.audio_level)
        self.active_speakers = speakers
        return [("active_speakers_changed", (list(speakers),))]

    def apply_quality(self, update: rtc.ConnectionQualityUpdate) -> list[Event]:
        events: list[Event] = []
        for info in update.updates:
            p = self._by_sid(info.participant_sid)
            if p is None:
                continue
            quality = _QUALITY.get(info.quality, "unknown")
            if quality != p.connection_quality:
                p.connection_quality = quality
                events.append(("connection_quality_changed", (p, quality)))
        return events

    def apply_mute(self, track_sid: str, muted: bool) -> list[Event]:
        """Server-side mute of one of our own tracks."""
        if self.local and track_sid in self.local.tracks:
            pub = self.local.tracks[track_sid]
            if pub.muted != muted:
                pub.muted = muted
                return [("track_muted" if muted else "track_unmuted", (pub, self.local))]
        return []
