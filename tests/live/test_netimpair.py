"""The impairment tool itself, on plain UDP sockets in the namespace: what it drops, delays, leaves behind."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from lkdevice.host_tools.netimpair import RELAY_ADDRESS, Impairment, NotIsolated


def _udp(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(1.0)
    return s


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def test_refuses_outside_the_namespace(monkeypatch):
    monkeypatch.delenv("LKDEVICE_ISOLATED", raising=False)
    with pytest.raises(NotIsolated):
        Impairment(5000)


def test_loss_drops_about_that_share_silently_and_goes_away():
    server, client = _udp(), _udp()
    port = server.getsockname()[1]
    with Impairment(port) as net:
        net.loss(10, "down")
        got = 0
        client.settimeout(0.02)
        for _ in range(20):
            for _ in range(100):
                server.sendto(b"x", client.getsockname())  # a dropped packet is no error to its sender
            try:
                while True:
                    client.recv(16)
                    got += 1
            except socket.timeout:
                pass
        assert 1600 <= got <= 1900, f"{2000 - got} of 2000 lost at 10 %"
        assert net.dropped() == 2000 - got
        table = net.table
    assert table not in _tables()


def test_outage_drops_everything_then_ends_by_itself():
    server, client = _udp(), _udp()
    with Impairment(server.getsockname()[1]) as net:
        net.outage(0.3)
        server.sendto(b"lost", client.getsockname())
        time.sleep(0.5)
        server.sendto(b"back", client.getsockname())
        assert client.recv(16) == b"back"
        assert net.dropped() == 1


def test_relay_carries_both_ways_with_the_delay_and_the_server_address():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", 0))
    server.settimeout(1.0)
    port = server.getsockname()[1]
    client = _udp("10.77.0.1")
    with Impairment(port) as net:
        relay = net.relay(delay_ms=40, jitter_ms=0)
        t0 = time.monotonic()
        client.sendto(b"ping", (RELAY_ADDRESS, port))
        data, seen_as = server.recvfrom(16)
        server.sendto(b"pong", seen_as)
        reply, source = client.recvfrom(16)
        rtt = time.monotonic() - t0
    assert (data, reply) == (b"ping", b"pong")
    assert source == (RELAY_ADDRESS, port)  # the client sees the server's address, not the relay's
    assert seen_as != client.getsockname()  # the server saw the relay
    assert 0.08 <= rtt < 0.5
    assert relay.relayed == 2
