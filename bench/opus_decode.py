"""Playout's Opus decode cost per 20 ms frame, for a 16 kHz (or --rate) reader.

Decoders, each handed the same packets in order, output mono int16 at --rate:

- `opuslib`: lkdevice's playout decoder (rtc/opus_decode.py `OpuslibDecoder`):
  the system libopus through opuslib, decoding at the reader's rate;
- `pyav_resample`: the fallback and what playout did before (`PyAVDecoder`):
  FFmpeg's libopus at 48 kHz, then swresample to --rate;
- `aiortc`: aiortc's own receive decoder (`aiortc.codecs.opus.OpusDecoder`,
  48 kHz stereo, what aiortc hands a track), timed alone, without the resample
  and downmix a reader would still need: a floor for aiortc's path.

Also timed: `opuslib` rebuilding a lost frame from the next packet's FEC
(`recover`) and concealing one (PLC), per frame. Packets: 16 kHz mono from
lkdevice's `VoiceEncoder` (FEC on: what our gateway sends) and 48 kHz mono at
32 kb/s with FEC (as a libwebrtc sender at LiveKit's default sends), of a
voice-like signal. The official SDK decodes inside libwebrtc, out of reach of
a per-frame timer, so it has no row. Figures: microseconds per frame, the
median of --reps repetitions over all packets. No network; no isolation needed.

    python bench/opus_decode.py [--rate 16000] [--seconds 5] [--reps 7]
"""

from __future__ import annotations

import argparse
import fractions
import json
import platform
import statistics
import sys
import time

import av
import numpy as np

from lkdevice.rtc.opus import VoiceEncoder
from lkdevice.rtc.opus_decode import OpuslibDecoder, PyAVDecoder, opuslib_module


def voice(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    f0 = 150 + 40 * np.sin(2 * np.pi * 0.7 * t)  # a wandering pitch, harmonics to 4 kHz
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 26) if k * 190 < min(4000, rate / 2))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)  # syllables
    return (0.05 * 32767 * x).astype(np.int16)


def packets_16k(seconds: float) -> list[bytes]:
    enc = VoiceEncoder(16000)
    pcm = voice(16000, seconds)
    return [bytes(enc.encode(pcm[i:i + 320], i)) for i in range(0, len(pcm) - 319, 320)]


def packets_48k(seconds: float) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "mono", "s16", 32000
    enc.options = {"application": "voip", "fec": "1", "packet_loss": "10"}
    pcm = voice(48000, seconds)
    out = []
    for n, i in enumerate(range(0, len(pcm) - 959, 960)):
        f = av.AudioFrame.from_ndarray(pcm[i:i + 960].reshape(1, -1), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = 48000, n * 960, fractions.Fraction(1, 48000)
        out += [bytes(p) for p in enc.encode(f)]
    return out


def per_frame_us(make, run, packets: list[bytes], reps: int) -> float:
    times = []
    for _ in range(reps):
        dec = make()
        t0 = time.perf_counter()
        run(dec, packets)
        times.append((time.perf_counter() - t0) / len(packets) * 1e6)
    return round(statistics.median(times), 1)


def decode_all(dec, packets):
    for p in packets:
        dec.decode(p)


def aiortc_all(dec, packets):
    from aiortc.jitterbuffer import JitterFrame

    for i, p in enumerate(packets):
        dec.decode(JitterFrame(data=p, timestamp=i * 960))


def recover_all(dec, packets):
    for i in range(0, len(packets) - 1, 2):  # every other packet lost, rebuilt from the next
        dec.decode(packets[i])
        dec.recover(packets[i + 1], 960)


def conceal_all(dec, packets):
    for i in range(0, len(packets) - 1, 2):
        dec.decode(packets[i])
        dec.conceal(960)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=16000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    lib = opuslib_module()
    if lib is None:
        print(json.dumps({"error": "no system libopus (apt-get install libopus0)"}))
        return 1
    from aiortc.codecs.opus import OpusDecoder as AiortcDecoder

    rate, reps = args.rate, args.reps
    result: dict = {"bench": "opus_decode", "rate": rate, "frame_ms": 20, "unit": "us_per_frame",
                    "python": platform.python_version(), "machine": platform.machine(), "sources": {}}
    for name, packets in (("voice_encoder_16k", packets_16k(args.seconds)), ("libwebrtc_like_48k", packets_48k(args.seconds))):
        row = {
            "packets": len(packets),
            "opuslib": per_frame_us(lambda: OpuslibDecoder(rate, lib), decode_all, packets, reps),
            "pyav_resample": per_frame_us(lambda: PyAVDecoder(rate), decode_all, packets, reps),
            "aiortc_48k_stereo_no_resample": per_frame_us(AiortcDecoder, aiortc_all, packets, reps),
            # two frames per pair (one decoded, one rebuilt or concealed): per frame of output
            "opuslib_decode_plus_fec": per_frame_us(lambda: OpuslibDecoder(rate, lib), recover_all, packets, reps),
            "opuslib_decode_plus_plc": per_frame_us(lambda: OpuslibDecoder(rate, lib), conceal_all, packets, reps),
        }
        row["ratio_pyav_resample_over_opuslib"] = round(row["pyav_resample"] / row["opuslib"], 2)
        result["sources"][name] = row
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
