"""The voice encoder: what a far-side decoder hears, what goes on the wire, and
how MicrophoneTrack hands its packets to aiortc."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame

from lkdevice.rtc.audio import MicrophoneTrack
from lkdevice.rtc.opus import VoiceEncoder
from tests.audio_checks import tone_frames

RATE = 16000
FRAME = 320


def tone16(freq: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def encode_all(enc: VoiceEncoder, pcm: np.ndarray) -> list[av.Packet]:
    return [enc.encode(pcm[i:i + FRAME], i) for i in range(0, len(pcm) - FRAME + 1, FRAME)]


def decode(packets: list[av.Packet]) -> list[np.ndarray]:
    """As a far side decodes: libopus at 48 kHz (ffmpeg's wrapper always outputs 48 kHz)."""
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate = 48000
    dec.layout = "mono"
    dec.format = "s16"
    out = []
    for p in packets:
        for f in dec.decode(av.Packet(bytes(p))):
            assert f.sample_rate == 48000
            out.append(f.to_ndarray().reshape(-1))
    return out


def test_a_tone_round_trips_on_pitch():
    packets = encode_all(VoiceEncoder(RATE), tone16(440.0, 1.0))
    frames = decode(packets)
    assert len(frames) == 50
    assert all(len(f) == 960 for f in frames)
    # the first frames carry the encoder's lookahead and ramp; the rest is the tone
    assert tone_frames(frames[5:], 48000, 440.0, tolerance=5.0) >= 43


def test_aiortcs_own_decoder_plays_it_as_48k_stereo():
    packets = encode_all(VoiceEncoder(RATE), tone16(440.0, 1.0))
    dec = OpusDecoder()
    frames = []
    for i, p in enumerate(packets):
        for f in dec.decode(JitterFrame(data=bytes(p), timestamp=i * 960)):
            assert f.sample_rate == 48000
            frames.append(f.to_ndarray().reshape(-1)[::2])  # left channel of interleaved stereo
    assert tone_frames(frames[5:], 48000, 440.0, tolerance=5.0) >= 43


def test_packets_are_one_per_frame_at_about_the_asked_bitrate():
    t = np.arange(RATE * 3) / RATE
    # something voice-like: harmonics of 150 Hz, amplitude-modulated at a syllable rate
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    pcm = (0.03 * 32767 * voice).astype(np.int16)
    for bitrate, expected_loss in ((24000, 0), (32000, 0), (24000, 10), (32000, 10)):
        enc = VoiceEncoder(RATE, bitrate=bitrate, expected_loss=expected_loss)
        packets = encode_all(enc, pcm)
        assert len(packets) == 150
        # VBR: near the target on average, and nowhere near aiortc's 96 kb/s (240 B a frame);
        # with FEC libopus stays in SILK, whose wideband voice needs less than 32 kb/s
        low = 0.7 if not expected_loss else 0.5
        assert low * bitrate <= enc.average_bitrate <= 1.3 * bitrate, enc.average_bitrate
        assert max(p.size for p in packets) <= bitrate * 3 / 8 / 50
        # mono, 20 ms (TOC byte: config from bits 3-7, stereo flag bit 2, one frame code 0)
        toc = bytes(packets[-1])[0]
        assert toc & 0x04 == 0 and toc & 0x03 == 0


def test_rejects_rates_and_frames_opus_cannot_take():
    with pytest.raises(ValueError):
        VoiceEncoder(44100)
    with pytest.raises(ValueError):
        VoiceEncoder(RATE).encode(np.zeros(FRAME + 1, np.int16), 0)


def test_pts_scale_to_the_48k_rtp_clock_through_aiortc():
    enc = VoiceEncoder(RATE)
    sender_side = OpusEncoder()  # what aiortc's RTCRtpSender calls pack() on
    stamps = [sender_side.pack(enc.encode(np.zeros(FRAME, np.int16), i * FRAME))[1] for i in range(5)]
    assert stamps == [0, 960, 1920, 2880, 3840]


async def test_microphone_with_an_encoder_sends_packets_without_resampling():
    mic = MicrophoneTrack(encoder=VoiceEncoder(RATE), paced_by_source=True)
    pcm = tone16(440.0, 0.2)
    mic.write_nowait(pcm, RATE)
    assert mic.buffered == pytest.approx(0.2)  # kept at 16 kHz: 3200 samples, not 9600
    packets = [await mic.next_frame() for _ in range(10)]
    assert all(isinstance(p, av.Packet) for p in packets)
    assert [p.pts for p in packets] == [i * FRAME for i in range(10)]
    assert all(p.time_base == fractions.Fraction(1, RATE) for p in packets)
    frames = decode(packets)
    assert tone_frames(frames[3:], 48000, 440.0, tolerance=5.0) >= 6


async def test_muted_microphone_with_an_encoder_sends_silence():
    mic = MicrophoneTrack(encoder=VoiceEncoder(RATE), paced_by_source=True)
    mic.write_nowait(tone16(440.0, 0.2), RATE)
    mic.muted = True
    frames = decode([await mic.next_frame() for _ in range(10)])
    assert max(np.abs(f).max() for f in frames[3:]) < 100


def test_audio_level_is_what_aiortc_puts_in_the_rtp_extension():
    from aiortc.rtp import compute_audio_level_dbov

    from lkdevice.rtc.opus import audio_level

    for amplitude in (0.0, 0.001, 0.05, 0.3, 1.0):
        pcm = tone16(440.0, 0.02, amplitude)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        assert audio_level(pcm) == compute_audio_level_dbov(frame)
    enc = VoiceEncoder(RATE)
    enc.encode(tone16(440.0, 0.02, 0.3), 0)
    assert enc.last_level == -13  # 0.3 of full scale, RMS 0.212: -13.5 dBov


async def test_microphone_frames_follow_the_encoders_frame_size():
    mic = MicrophoneTrack(encoder=VoiceEncoder(RATE, frame_ms=10), paced_by_source=True)
    mic.write_nowait(tone16(440.0, 0.1), RATE)
    packets = [await mic.next_frame() for _ in range(5)]
    assert [p.pts for p in packets] == [i * 160 for i in range(5)]


def sweeps16(seconds: float) -> np.ndarray:
    """A tone gliding 300 -> 1500 Hz every 200 ms: what a lost frame held, PLC cannot guess."""
    t = np.arange(int(RATE * seconds)) / RATE
    phase_t = t % 0.2
    freq_phase = 2 * np.pi * (300 * phase_t + 0.5 * (1200 / 0.2) * phase_t ** 2)
    return (0.3 * 32767 * np.sin(freq_phase)).astype(np.int16)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def test_a_lost_packet_is_rebuilt_from_the_next_packets_fec_far_better_than_plc():
    from lkdevice.rtc.opus_decode import OpuslibDecoder, opuslib_module

    lib = opuslib_module()
    assert lib is not None, "the system libopus (libopus0) is not installed"
    packets = [bytes(p) for p in encode_all(VoiceEncoder(RATE), sweeps16(2.0))]
    reference = OpuslibDecoder(RATE, lib)
    clean = [reference.decode(p) for p in packets]
    fec_scores, plc_scores = [], []
    for lost in range(5, 95):  # every frame of the glide, its restarts (clicks) included
        fec, plc = OpuslibDecoder(RATE, lib), OpuslibDecoder(RATE, lib)
        for p in packets[:lost]:
            fec.decode(p)
            plc.decode(p)
        rebuilt = fec.recover(packets[lost + 1], 960)
        guessed = plc.conceal(960)
        assert len(rebuilt) == len(guessed) == FRAME
        fec_scores.append(correlation(rebuilt, clean[lost]))
        plc_scores.append(correlation(guessed, clean[lost]))
    # before (no FEC in the packets) libopus could only conceal: both were PLC, median ~0.35
    assert np.median(fec_scores) > 0.9, (np.median(fec_scores), np.median(plc_scores))
    assert np.mean(fec_scores) > np.mean(plc_scores) + 0.3, (np.mean(fec_scores), np.mean(plc_scores))


def test_a_rate_libopus_cannot_decode_at_is_decoded_at_48k_and_resampled():
    from lkdevice.rtc.opus_decode import OpuslibDecoder, opuslib_module

    dec = OpuslibDecoder(44100, opuslib_module())
    assert dec.decode_rate == 48000 and dec.resampler is not None
    frames = [dec.decode(bytes(p)) for p in encode_all(VoiceEncoder(RATE), tone16(440, 1.0))]
    assert sum(len(f) for f in frames[5:]) == pytest.approx(45 * 882, abs=882)
    assert tone_frames(frames[5:], 44100, 440) >= 40


def test_concealment_of_a_gap_off_the_2_5_ms_grid_still_sounds():
    from lkdevice.rtc.opus_decode import OpuslibDecoder, opuslib_module

    dec = OpuslibDecoder(RATE, opuslib_module())
    for p in encode_all(VoiceEncoder(RATE), tone16(440, 0.5)):
        dec.decode(bytes(p))
    pcm = dec.conceal(500)  # 10.4 ms: libopus conceals only whole 2.5 ms steps
    assert len(pcm) >= 500 // 3 and np.abs(pcm).max() > 1000
