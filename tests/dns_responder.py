"""A small DNS responder on 127.0.0.1 for the firmware's DNS client tests:
A records (optionally behind a CNAME) with a TTL, NXDOMAIN, or silence."""

from __future__ import annotations

import socket
import struct
import threading


class DnsResponder:
    def __init__(self, records: dict[str, tuple[str, int]] | None = None, *, cname: dict[str, str] | None = None,
                 silent: bool = False):
        self.records = records or {}  # name -> (ipv4, ttl)
        self.cname = cname or {}  # alias -> name
        self.silent = silent
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            try:
                msg, peer = self.sock.recvfrom(512)
            except OSError:
                return
            name, qend = self._question(msg)
            self.queries.append(name)
            if not self.silent:
                self.sock.sendto(self._answer(msg, name, qend), peer)

    @staticmethod
    def _question(msg: bytes) -> tuple[str, int]:
        i, labels = 12, []
        while msg[i]:
            labels.append(msg[i + 1:i + 1 + msg[i]].decode())
            i += 1 + msg[i]
        return ".".join(labels), i + 5

    @staticmethod
    def _rr(name_ptr: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
        return name_ptr + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata

    @staticmethod
    def _name(name: str) -> bytes:
        return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"

    def _answer(self, msg: bytes, name: str, qend: int) -> bytes:
        answers = []
        target = name
        if name in self.cname:
            target = self.cname[name]
            answers.append(self._rr(b"\xc0\x0c", 5, 300, self._name(target)))
        rcode = 0
        if target in self.records:
            ip, ttl = self.records[target]
            answers.append(self._rr(b"\xc0\x0c", 1, ttl, socket.inet_aton(ip)))
        else:
            rcode = 3  # NXDOMAIN
        head = msg[:2] + struct.pack(">BBHHHH", 0x81, 0x80 | rcode, 1, len(answers), 0, 0)
        return head + msg[12:qend] + b"".join(answers)

    def close(self) -> None:
        self.sock.close()
