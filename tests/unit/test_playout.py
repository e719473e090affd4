"""Received audio through a real aiortc RTCRtpReceiver, set up as our peer connection sets it up.

Real Opus packets (libopus through PyAV) are handed to the receiver as its
transport would after SRTP; only the transport itself is a stand-in (nothing
is sent, RTCP included).
"""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpDecodingParameters, RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import RtpPacket

from lkdevice.rtc.peer import PeerSession
from lkdevice.rtc.room import Room
from tests.audio_checks import frame_frequency, tone_frames

SSRC = 0x1234_5678
PT = 111


class _Transport:
    state = "connected"

    def _register_rtp_receiver(self, receiver, parameters) -> None:
        pass

    def _unregister_rtp_receiver(self, receiver) -> None:
        pass

    async def _send_rtp(self, data: bytes) -> None:
        pass

    async def stop(self) -> None:
        pass

    @property
    def transport(self):
        return self  # stands in for the ICE transport too


def opus_packets(seconds: float, frequency: float = 440.0) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "mono", "s16", 32000
    out: list[bytes] = []
    n = 960
    for i in range(int(seconds * 50)):
        t = (i * n + np.arange(n)) / 48000
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
        f = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = 48000, i * n, fractions.Fraction(1, 48000)
        out += [bytes(p) for p in enc.encode(f)]
    return out


async def started_receiver():
    """The first audio receiver of a fresh PeerSession, receiving Opus as after negotiation."""

    async def send_offer(sdp, offer_id):
        pass

    peer = PeerSession([], send_offer)
    transceiver = peer.pc.getTransceivers()[0]
    receiver = transceiver.receiver
    receiver.setTransport(_Transport())
    receiver._track = RemoteStreamTrack(kind="audio")  # what setRemoteDescription does
    peer.pc.emit("track", receiver._track)
    codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=PT)
    await receiver.receive(RTCRtpReceiveParameters(codecs=[codec], encodings=[RTCRtpDecodingParameters(ssrc=SSRC, payloadType=PT)]))
    return peer, receiver


async def feed(receiver, payloads, *, first_seq=100, first_ts=5000, ts_jumps=None, skip=(), pace=0.0):
    """Hand packets to the receiver; ts_jumps[i] adds RTP time before packet i (DTX)."""
    ts = first_ts
    start = time.monotonic()
    for i, payload in enumerate(payloads):
        ts += (ts_jumps or {}).get(i, 0)
        if pace:
            delay = start + i * pace + sum(v for k, v in (ts_jumps or {}).items() if k <= i) / 48000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if i not in skip:
            pkt = RtpPacket(payload_type=PT, sequence_number=(first_seq + i) & 0xFFFF, timestamp=ts & 0xFFFFFFFF,
                            ssrc=SSRC, payload=payload)
            await receiver._handle_rtp_packet(pkt, arrival_time_ms=int(time.monotonic() * 1000))
        ts += 960  # 20 ms packets


async def test_a_track_nobody_reads_holds_nothing_decoded_and_stays_bounded():
    peer, receiver = await started_receiver()
    try:
        await feed(receiver, opus_packets(20.0))  # 20 s of audio, 1000 packets
        await asyncio.sleep(0.5)  # let any decoder thread catch up
        queued = receiver.track._queue.qsize()
        # before: every packet decoded into the track's unbounded queue (~1000 frames, 7.7 MB)
        assert queued == 0, f"{queued} decoded frames queued for a track nobody reads"
        from lkdevice.rtc.playout import tap_for
        tap = tap_for(receiver.track)
        assert tap is not None and len(tap.jitter) <= tap.jitter.capacity
    finally:
        await receiver.stop()
        await peer.close()


def _stream(peer, receiver, rate, frame_ms):
    room = Room()
    room._peer = peer
    return room.audio_stream(receiver.track, sample_rate=rate, frame_ms=frame_ms)


async def read_for(stream, seconds: float) -> list[tuple[float, np.ndarray]]:
    """Every chunk the stream yields within `seconds`, with its arrival time."""
    got = []

    async def reader():
        async for chunk in stream:
            got.append((time.monotonic(), chunk.samples))

    task = asyncio.ensure_future(reader())
    await asyncio.wait([task], timeout=seconds)
    task.cancel()
    return got


async def test_audio_stream_is_paced_by_the_clock_through_a_pause_and_keeps_the_pitch():
    # 1 s of tone, the sender pauses 600 ms (DTX: no packets, RTP time jumps), then 1 s more
    peer, receiver = await started_receiver()
    try:
        packets = opus_packets(2.0)
        stream = _stream(peer, receiver, 16000, 20)
        sender = asyncio.ensure_future(feed(receiver, packets, ts_jumps={50: 30 * 960}, pace=0.02))
        got = await read_for(stream, 2.9)
        await sender
    finally:
        await receiver.stop()
        await peer.close()
    times = [t for t, _ in got]
    gaps = np.diff(times)
    # before: frames came only when packets did, so the pause was one 600 ms gap
    assert gaps.max() < 0.06, f"largest gap between frames {gaps.max() * 1000:.0f} ms"
    assert abs(len(got) - 2.9 / 0.02) <= 5  # one frame per 20 ms of wall time
    frames = [s for _, s in got]
    assert all(len(s) == 320 for s in frames)
    assert tone_frames(frames, 16000, 440) >= 85  # of ~100 frames of tone
    # the pause came out as silence (a few frames of fading concealment at its start at most)
    silent = [i for i, s in enumerate(frames) if np.abs(s).max() < 50]
    assert len(silent) >= 20


async def test_a_lost_packet_is_concealed_not_silenced():
    peer, receiver = await started_receiver()
    try:
        packets = opus_packets(1.5)
        stream = _stream(peer, receiver, 48000, 20)
        sender = asyncio.ensure_future(feed(receiver, packets, skip={40, 41}, pace=0.02))
        got = await read_for(stream, 1.6)
        await sender
    finally:
        await receiver.stop()
        await peer.close()
    frames = [s for _, s in got]
    audible = [i for i, s in enumerate(frames) if np.abs(s).max() > 1000]
    first, last = audible[0], audible[-1]
    # no hole in the tone where the two packets were lost: libopus filled it in
    assert all(np.abs(frames[i]).max() > 1000 for i in range(first, last + 1))
    assert frame_frequency(frames[first + 45], 48000) == pytest.approx(440, abs=5)
    assert stream.frames_concealed >= 2


async def test_audio_stream_ends_with_its_track():
    peer, receiver = await started_receiver()
    stream = _stream(peer, receiver, 16000, 20)
    try:
        got = []

        async def reader():
            async for chunk in stream:
                got.append(chunk)

        task = asyncio.ensure_future(reader())
        await asyncio.sleep(0.2)
        await receiver.stop()
        await asyncio.wait_for(task, 2)  # ended on its own
        assert 5 <= len(got) <= 20
    finally:
        await peer.close()


def voice_packets(seconds: float) -> tuple[list[bytes], list[np.ndarray]]:
    """16 kHz packets from our own VoiceEncoder (FEC on, as a libwebrtc sender sends them) of
    a tone gliding 300 -> 1500 Hz every 200 ms, and each packet's clean decode at 16 kHz."""
    from lkdevice.rtc.opus import VoiceEncoder
    from lkdevice.rtc.opus_decode import OpuslibDecoder, opuslib_module

    t = np.arange(int(16000 * seconds)) / 16000
    pt = t % 0.2
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * (300 * pt + 3000 * pt ** 2))).astype(np.int16)
    enc = VoiceEncoder(16000)
    packets = [bytes(enc.encode(pcm[i:i + 320], i)) for i in range(0, len(pcm) - 319, 320)]
    dec = OpuslibDecoder(16000, opuslib_module())
    return packets, [dec.decode(p) for p in packets]


async def test_a_16k_stream_decodes_at_16k_without_resampling_and_keeps_the_pitch(monkeypatch):
    from lkdevice.rtc import audio

    resampled = []
    real = audio.Resampler.resample_frame
    monkeypatch.setattr(audio.Resampler, "resample_frame", lambda self, f: resampled.append(f) or real(self, f))
    peer, receiver = await started_receiver()
    try:
        stream = _stream(peer, receiver, 16000, 20)
        sender = asyncio.ensure_future(feed(receiver, opus_packets(1.0), pace=0.02))
        got = await read_for(stream, 1.2)
        await sender
    finally:
        await receiver.stop()
        await peer.close()
    frames = [s for _, s in got]
    # before: libopus decoded at 48 kHz and swresample took every frame down to 16 kHz
    assert not resampled, f"{len(resampled)} frames resampled"
    assert stream.decoder.decode_rate == 16000
    assert tone_frames(frames, 16000, 440) >= 40  # of ~50 frames of tone


async def test_a_lost_packet_whose_successor_is_held_is_rebuilt_from_its_fec():
    packets, clean = voice_packets(1.5)
    lost = 43  # mid-glide (at a glide's restart, a click, neither FEC nor PLC comes close)
    peer, receiver = await started_receiver()
    try:
        stream = _stream(peer, receiver, 16000, 20)
        sender = asyncio.ensure_future(feed(receiver, packets, skip={lost}, pace=0.02))
        got = await read_for(stream, 1.7)
        await sender
    finally:
        await receiver.stop()
        await peer.close()
    frames = [s for _, s in got]
    first = next(i for i, s in enumerate(frames) if np.abs(s).max() > 300)  # packet 0's audio

    def corr(a, b):
        a, b = a.astype(np.float64), b.astype(np.float64)
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))

    assert corr(frames[first + lost - 5], clean[lost - 5]) > 0.95  # the stream plays packet by packet
    # (the concealment at the end, once packets stop, has no successor to take FEC from)
    assert stream.stats["recovered"] == 1 and stream.stats["concealed"] >= 1
    # before: libopus PLC guessed the frame (correlation ~0.3 with what was lost)
    assert corr(frames[first + lost], clean[lost]) > 0.8


async def test_without_the_system_libopus_playout_falls_back_to_pyav_and_says_so(monkeypatch, caplog):
    from lkdevice.rtc import opus_decode

    def no_libopus():
        raise Exception("Could not find Opus library. Make sure it is installed.")  # as opuslib says it

    monkeypatch.setattr(opus_decode, "_load", no_libopus)
    monkeypatch.setattr(opus_decode, "_tried", False)
    monkeypatch.setattr(opus_decode, "_opuslib", None)
    peer, receiver = await started_receiver()
    try:
        with caplog.at_level("WARNING", logger="lkdevice.rtc.opus_decode"):
            stream = _stream(peer, receiver, 16000, 20)
            _stream(peer, receiver, 16000, 20)  # said once, not per stream
        sender = asyncio.ensure_future(feed(receiver, opus_packets(1.0), skip={25}, pace=0.02))
        got = await read_for(stream, 1.2)
        await sender
    finally:
        await receiver.stop()
        await peer.close()
    assert isinstance(stream.decoder, opus_decode.PyAVDecoder) and stream.decoder.decode_rate == 48000
    said = [r for r in caplog.records if "libopus" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    frames = [s for _, s in got]
    assert all(len(s) == 320 for s in frames)
    assert tone_frames(frames, 16000, 440) >= 40
    assert stream.stats["concealed"] >= 1 and stream.stats["recovered"] == 0
