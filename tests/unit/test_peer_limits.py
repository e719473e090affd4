"""rtc/peer.py: what the server sends before its answer is held, within a bound."""

from __future__ import annotations

import json

from lkdevice.rtc import peer as peer_mod
from lkdevice.rtc.peer import PeerSession


async def test_candidates_trickled_before_the_answer_are_held_within_a_bound():
    async def send_offer(sdp: str, offer_id: int) -> None:
        pass

    session = PeerSession([], send_offer, ["127.0.0.1"])
    try:
        for i in range(peer_mod.MAX_HELD_CANDIDATES * 4):
            cand = {"candidate": f"candidate:{i} 1 udp 2130706431 127.0.0.1 {10000 + i} typ host",
                    "sdpMid": "0", "sdpMLineIndex": 0}
            await session.add_trickle(json.dumps(cand), False)
        held = session._held_candidates
        assert len(held) == peer_mod.MAX_HELD_CANDIDATES
        assert held[-1]["candidate"].startswith(f"candidate:{peer_mod.MAX_HELD_CANDIDATES * 4 - 1} ")
    finally:
        await session.close()
