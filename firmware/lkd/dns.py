# A small DNS client (A records over UDP) on asyncio. MicroPython's
# asyncio.open_connection calls socket.getaddrinfo, which blocks the whole
# event loop while the name is looked up (seconds when the server is slow or
# gone): the mic, speaker and session would stall. Names go to the DNS server
# of the DHCP lease instead, without blocking; IP literals need no lookup.
# Loaded only when the gateway (or token_url) is given by name.

import asyncio
import random
import socket
import time
from micropython import const

_TRIES = const(3)
_WAIT_MS = const(1500)  # per try
_CACHE = const(4)  # names kept
_TTL_MAX = const(3600)  # s; ticks_ms() differences stay valid far beyond
_MSG = const(512)  # the largest UDP answer asked for (no EDNS)

_cache = []  # [name, ip, expiry ticks_ms], at most _CACHE
_port = 53  # the DNS server's (tests point it elsewhere)


def literal(host):
    """True for an IPv4 or IPv6 address (nothing to look up)."""
    return ":" in host or all(c in "0123456789." for c in host)


def _query(host, qid):
    q = bytearray(b"\0\0\x01\0\0\x01\0\0\0\0\0\0")  # id, RD, one question
    q[0] = qid >> 8
    q[1] = qid & 0xFF
    for label in host.split("."):
        b = label.encode()
        if not 0 < len(b) < 64:
            raise OSError("dns: bad name %r" % host)
        q.append(len(b))
        q.extend(b)
    q.extend(b"\0\0\x01\0\x01")  # root, type A, class IN
    return q


def _skip(m, i):
    # past a (possibly compressed) name
    while True:
        n = m[i]
        if n == 0:
            return i + 1
        if n >= 0xC0:
            return i + 2
        i += n + 1


def _answer(m, n, qid, host):
    """(ip, ttl) from a response; None if it is not the answer to our query."""
    if n < 12 or (m[0] << 8 | m[1]) != qid or not m[2] & 0x80:
        return None
    rcode = m[3] & 0x0F
    if rcode == 3:
        raise OSError("dns: %s: no such host (NXDOMAIN)" % host)
    if rcode:
        raise OSError("dns: %s: the server failed (rcode %d)" % (host, rcode))
    try:
        i = 12
        for _ in range(m[4] << 8 | m[5]):
            i = _skip(m, i) + 4
        for _ in range(m[6] << 8 | m[7]):
            i = _skip(m, i)
            rtype = m[i] << 8 | m[i + 1]
            rdlen = m[i + 8] << 8 | m[i + 9]
            if rtype == 1 and rdlen == 4 and (m[i + 2] << 8 | m[i + 3]) == 1:
                # 32-bit TTL: above 2^24 s it is capped anyway (no long ints)
                ttl = _TTL_MAX if m[i + 4] else m[i + 5] << 16 | m[i + 6] << 8 | m[i + 7]
                j = i + 10
                return "%d.%d.%d.%d" % (m[j], m[j + 1], m[j + 2], m[j + 3]), min(ttl, _TTL_MAX)
            i += 10 + rdlen  # a CNAME, or another type: the A record follows
    except IndexError:
        raise OSError("dns: %s: truncated answer" % host)
    raise OSError("dns: %s: no IPv4 address" % host)


def _remember(host, ip, ttl):
    if ttl <= 0:
        return
    now = time.ticks_ms()
    expiry = time.ticks_add(now, ttl * 1000)
    for e in _cache:
        if e[0] == host:
            e[1] = ip
            e[2] = expiry
            return
    if len(_cache) >= _CACHE:
        # full: the entry that expires first makes room
        soonest = _cache[0]
        for e in _cache:
            if time.ticks_diff(e[2], soonest[2]) < 0:
                soonest = e
        _cache.remove(soonest)
    _cache.append([host, ip, expiry])


async def resolve(host, port, server=None):
    """(ip, port) for host, without blocking the event loop. server: (ip, port)
    of the DNS server; default the DHCP lease's (wlan.ifconfig()[3]), port 53.
    Raises OSError on NXDOMAIN, no address, or no answer after 3 tries (4.5 s)."""
    if literal(host):
        return host, port
    now = time.ticks_ms()
    for e in _cache:
        if e[0] == host and time.ticks_diff(e[2], now) > 0:
            return e[1], port
    if server is None:
        import network
        server = (network.WLAN(network.STA_IF).ifconfig()[3], _port)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        s.connect(socket.getaddrinfo(server[0], server[1])[0][-1])  # an address: no lookup
        stream = asyncio.StreamReader(s)
        m = bytearray(_MSG)
        qid = random.getrandbits(16)
        q = _query(host, qid)
        for _ in range(_TRIES):
            s.send(q)
            until = time.ticks_add(time.ticks_ms(), _WAIT_MS)
            while True:
                left = time.ticks_diff(until, time.ticks_ms())
                if left <= 0:
                    break
                try:
                    n = await asyncio.wait_for_ms(stream.readinto(m), left)
                except asyncio.TimeoutError:
                    break
                got = _answer(m, n or 0, qid, host)
                if got is not None:
                    _remember(host, got[0], got[1])
                    return got[0], port
        raise OSError("dns: %s: no answer from %s in %d ms" % (host, server[0], _TRIES * _WAIT_MS))
    finally:
        s.close()
