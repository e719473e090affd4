"""The single peer connection of /rtc/v1, on aiortc.

We always offer. Our own tracks ride sendonly transceivers; the server asks for
recvonly ones through `media_sections_requirement` and names what each carries
in the answer's `mid_to_track_id`. aiortc gathers all candidates before it
returns the local description, so the offer carries them; the server trickles
its own, which we hold until the answer is applied.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.sdp import SessionDescription, candidate_from_sdp

from . import ice
from .data import LOSSY_CHANNEL, RELIABLE_CHANNEL
from .opus import carry_audio_level
from .playout import PacketTap, attach
from .video import codec_preferences

log = logging.getLogger(__name__)

# a server offers a handful per transport; this only bounds a misbehaving one
MAX_HELD_CANDIDATES = 64

SendOffer = Callable[[str, int], Awaitable[None]]


_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"


def install_packet_tap(receiver, min_delay: float) -> PacketTap:
    """aiortc decodes every received audio packet into an unbounded queue, read or
    not; ours stay encoded in a bounded jitter buffer until an AudioStream reads them."""
    if not isinstance(getattr(receiver, _JITTER_ATTR, None), JitterBuffer):
        raise RuntimeError("aiortc's RTCRtpReceiver no longer has the jitter buffer lkdevice replaces")
    tap = PacketTap(min_delay=min_delay)
    setattr(receiver, _JITTER_ATTR, tap)
    return tap


class PeerSession:
    def __init__(self, ice_servers: list[RTCIceServer], send_offer: SendOffer,
                 host_addresses: list[str] | None = None, audio_delay: float = 0.02):
        self._send_offer = send_offer
        self._host_addresses = host_addresses
        self._audio_delay = audio_delay
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        # A recvonly audio m-line first: with max-bundle the first section owns the
        # transport, and aiortc wants media sections before the data channel.
        self._add_audio_receiver()
        self.reliable = self.pc.createDataChannel(RELIABLE_CHANNEL, ordered=True)
        self.lossy = self.pc.createDataChannel(LOSSY_CHANNEL, ordered=False, maxRetransmits=0)
        self.mid_to_track_id: dict[str, str] = {}
        self._offer_id = 0
        self._awaiting_answer: asyncio.Future | None = None
        self._renegotiate = False
        self._lock = asyncio.Lock()
        self._held_candidates: list[dict] = []
        self._answered_once = False
        self.connected = asyncio.Event()

        @self.pc.on("track")
        def _track(track) -> None:
            # aiortc creates the track after its receiver: tell AudioStream which tap feeds it
            t = self.transceiver_for(track)
            tap = getattr(t.receiver, _JITTER_ATTR, None) if t else None
            if isinstance(tap, PacketTap):
                attach(track, tap)

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

    # -- negotiation --------------------------------------------------------------
    @property
    def offer_outstanding(self) -> bool:
        return self._awaiting_answer is not None and not self._awaiting_answer.done()

    async def negotiate(self) -> None:
        """Send a fresh offer; if one is in flight, send another once it is answered."""
        async with self._lock:
            if self.offer_outstanding:
                self._renegotiate = True
                return
            self._offer_id += 1
            offer = await self.pc.createOffer()
            with ice.host_addresses(self._host_addresses):
                await self.pc.setLocalDescription(offer)
            self._awaiting_answer = asyncio.get_running_loop().create_future()
            await self._send_offer(self.pc.localDescription.sdp, self._offer_id)

    async def resend_offer(self) -> None:
        """Send the unanswered offer again: its answer, or the offer itself, died
        with a signal socket, and until one arrives every later offer waits."""
        async with self._lock:
            if self.offer_outstanding and self.pc.localDescription is not None:
                log.info("sending offer %d again", self._offer_id)
                await self._send_offer(self.pc.localDescription.sdp, self._offer_id)

    async def apply_answer(self, sdp: str, answer_id: int, mid_to_track_id: dict[str, str]) -> None:
        if answer_id and answer_id != self._offer_id:
            log.debug("ignoring answer %d for superseded offer %d", answer_id, self._offer_id)
            return
        moved = set(mid_to_track_id.values())
        for mid in [m for m, sid in self.mid_to_track_id.items() if sid in moved and m not in mid_to_track_id]:
            del self.mid_to_track_id[mid]  # a track rides one mid: the server moved it here
        self.mid_to_track_id.update(mid_to_track_id)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        self._route_remote_ssrcs(sdp)
        self._answered_once = True
        held, self._held_candidates = self._held_candidates, []
        for cand in held:
            await self._add_candidate(cand)
        if self._awaiting_answer and not self._awaiting_answer.done():
            self._awaiting_answer.set_result(None)
        if self._renegotiate:
            self._renegotiate = False
            await self.negotiate()

    def _route_remote_ssrcs(self, sdp: str) -> None:
        """aiortc learns a receiver's SSRCs from its first answer only; when the
        server moves another track onto a receiver (an unsubscribe, then a
        subscribe), route the new SSRC there, and forget the old one."""
        receivers = {t.mid: t.receiver for t in self.pc.getTransceivers() if t.mid is not None}
        for media in SessionDescription.parse(sdp).media:
            receiver = receivers.get(media.rtp.muxId)
            router = getattr(receiver.transport, "_rtp_router", None) if receiver else None
            if router is None or not media.ssrc or media.direction not in ("sendonly", "sendrecv"):
                continue
            ssrcs = {x.ssrc for x in media.ssrc}
            for stale in [k for k, r in router.ssrc_table.items() if r is receiver and k not in ssrcs]:
                del router.ssrc_table[stale]
            for ssrc in ssrcs:
                router.ssrc_table[ssrc] = receiver

    def _add_audio_receiver(self) -> None:
        t = self.pc.addTransceiver("audio", direction="recvonly")
        install_packet_tap(t.receiver, self._audio_delay)

    def add_receivers(self, num_audios: int, num_videos: int) -> None:
        for _ in range(num_audios):
            self._add_audio_receiver()
        for _ in range(num_videos):
            self.pc.addTransceiver("video", direction="recvonly")

    def add_sender(self, track) -> None:
        transceiver = self.pc.addTransceiver(track, direction="sendonly")
        carry_audio_level(transceiver.sender, track)

    def add_video_sender(self, local) -> None:
        """A sendonly video m-line for a `LocalVideoTrack`, offering only its codec."""
        transceiver = self.pc.addTransceiver(local.new_rtp_track(), direction="sendonly")
        transceiver.setCodecPreferences(codec_preferences(local.codec))
        local.attach_sender(transceiver.sender)

    # -- ICE ----------------------------------------------------------------------
    async def add_trickle(self, candidate_init: str, final: bool) -> None:
        try:
            cand = json.loads(candidate_init) if candidate_init else {}
        except ValueError:
            log.warning("ignoring unparsable ICE candidate from server")
            return
        if not self._answered_once:
            if len(self._held_candidates) >= MAX_HELD_CANDIDATES:
                log.warning("server trickled more than %d candidates before its answer; dropping the oldest",
                            MAX_HELD_CANDIDATES)
                del self._held_candidates[0]
            self._held_candidates.append(cand)
            return
        await self._add_candidate(cand)

    async def _add_candidate(self, cand: dict) -> None:
        text = cand.get("candidate") or ""
        if not text:
            return
        if text.startswith("candidate:"):
            text = text[len("candidate:"):]
        try:
            candidate = candidate_from_sdp(text)
        except Exception:
            log.warning("ignoring malformed ICE candidate from server")
            return
        if candidate.protocol.lower() != "udp":
            return  # aiortc speaks ICE over UDP only
        candidate.sdpMid = cand.get("sdpMid")
        candidate.sdpMLineIndex = cand.get("sdpMLineIndex")
        await self.pc.addIceCandidate(candidate)

    def transceiver_for(self, track):
        for t in self.pc.getTransceivers():
            if t.receiver.track is track:
                return t
        return None

    async def close(self) -> None:
        if self._awaiting_answer and not self._awaiting_answer.done():
            self._awaiting_answer.cancel()
        await self.pc.close()
