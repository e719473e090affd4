"""Renumber the video codecs of an answer to the numbers of our offer.

livekit-server answers our recvonly video m-lines with its own payload type
numbers (VP8 96, its RTX 97, ...) but sends with the numbers our offer gave
(aiortc: VP8 97, its RTX 98). aiortc receives by the answer's numbers, so the
pictures arrive as "RTX" and are never decoded. Before aiortc reads the answer,
each video codec we receive is given our offer's number for the same codec;
codecs we did not offer are dropped from the m-line.
"""

from __future__ import annotations

import re

from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import SessionDescription

_PT_LINE = re.compile(r"^a=(rtpmap|fmtp|rtcp-fb):(\d+)(.*)$")


def _is_rtx(c: RTCRtpCodecParameters) -> bool:
    return c.mimeType.lower().endswith("/rtx")


def _mapping(offered: list[RTCRtpCodecParameters], answered: list[RTCRtpCodecParameters]) -> dict[int, int]:
    out: dict[int, int] = {}
    for c in answered:
        if _is_rtx(c):
            continue
        for o in offered:
            if not _is_rtx(o) and is_codec_compatible(o, c):
                out[c.payloadType] = o.payloadType
                break
    for c in answered:
        if not _is_rtx(c) or c.parameters.get("apt") not in out:
            continue
        base = out[c.parameters["apt"]]
        for o in offered:
            if _is_rtx(o) and o.parameters.get("apt") == base:
                out[c.payloadType] = o.payloadType
                break
    return out


def _rewrite_section(lines: list[str], mapping: dict[int, int]) -> list[str]:
    out = []
    for line in lines:
        if line.startswith("m="):
            head = line.split(" ")
            pts = [str(mapping[int(p)]) for p in head[3:] if p.isdigit() and int(p) in mapping]
            out.append(" ".join(head[:3] + pts))
            continue
        m = _PT_LINE.match(line)
        if m is None:
            out.append(line)
            continue
        pt = int(m.group(2))
        if pt not in mapping:
            continue  # a codec we did not offer
        rest = m.group(3)
        if m.group(1) == "fmtp":
            rest = re.sub(r"apt=(\d+)", lambda a: f"apt={mapping.get(int(a.group(1)), int(a.group(1)))}", rest)
        out.append(f"a={m.group(1)}:{mapping[pt]}{rest}")
    return out


def renumber_answer(offer_sdp: str, answer_sdp: str) -> str:
    """`answer_sdp` with each video m-line we receive on numbered as `offer_sdp` numbered it."""
    offer = {m.rtp.muxId: m for m in SessionDescription.parse(offer_sdp).media}
    answer = SessionDescription.parse(answer_sdp).media
    newline = "\r\n" if "\r\n" in answer_sdp else "\n"
    sections = re.split(r"(?m)^(?=m=)", answer_sdp)
    if len(sections) - 1 != len(answer):
        return answer_sdp  # not the SDP we parsed: leave it to aiortc
    out = [sections[0]]
    for text, media in zip(sections[1:], answer):
        mine = offer.get(media.rtp.muxId)
        if media.kind != "video" or mine is None or media.direction not in ("sendonly", "sendrecv"):
            out.append(text)
            continue
        mapping = _mapping(mine.rtp.codecs, media.rtp.codecs)
        if not mapping or all(k == v for k, v in mapping.items()) and len(mapping) == len(media.rtp.codecs):
            out.append(text)
            continue
        lines = text.split(newline)
        trailing = lines[-1] == ""
        body = _rewrite_section(lines[:-1] if trailing else lines, mapping)
        out.append(newline.join(body) + (newline if trailing else ""))
    return "".join(out)
