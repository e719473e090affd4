"""device/rtc/ice.py: which host addresses real aiortc gathers, with joins running at once."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from lkdevice.rtc.ice import host_addresses, is_loopback_url


def _host_candidates(sdp: str) -> set[str]:
    return set(re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host", sdp))


async def _gather(addresses: list[str] | None, hold: asyncio.Event | None = None) -> set[str]:
    """One offer through aiortc and aioice, gathering with `addresses`, as peer.py does."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        pc.createDataChannel("_reliable")
        offer = await pc.createOffer()
        with host_addresses(addresses):
            if hold is not None:
                await hold.wait()  # the other join's gather starts while this one is inside
            await pc.setLocalDescription(offer)
        return _host_candidates(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_one_gather_offers_exactly_the_addresses_given():
    assert await _gather(["127.0.0.1"]) == {"127.0.0.1"}


async def test_concurrent_gathers_each_offer_their_own_addresses():
    """Two devices joining at once, with different address sets, interleaved every way."""
    for first_waits in (False, True):
        hold = asyncio.Event()
        a = asyncio.ensure_future(_gather(["127.0.0.2"], hold if first_waits else None))
        b = asyncio.ensure_future(_gather(["127.0.0.3", "127.0.0.4"], None if first_waits else hold))
        await asyncio.sleep(0.01)
        hold.set()
        assert await a == {"127.0.0.2"}
        assert await b == {"127.0.0.3", "127.0.0.4"}


async def test_many_concurrent_gathers_then_aioices_own_choice_is_back():
    sets = [[f"127.0.1.{i}"] for i in range(1, 9)]
    got = await asyncio.gather(*(_gather(s) for s in sets))
    assert got == [set(s) for s in sets]
    # outside the context, aioice chooses again (it never offers loopback itself)
    assert not any(a.startswith("127.") for a in await _gather(None))


@pytest.mark.parametrize("url,loop", [
    ("ws://127.0.0.1:7880", True), ("ws://localhost", True), ("wss://[::1]:443/x", True),
    ("wss://example.livekit.cloud", False), ("ws://10.0.0.5:7880", False),
])
def test_loopback_urls(url, loop):
    assert is_loopback_url(url) is loop
