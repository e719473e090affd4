# WebSocket client (RFC 6455) on asyncio streams, for ws:// and wss://.
# Audio frames go out through one preallocated buffer; received messages land
# in one preallocated buffer, and anything larger is refused, not allocated.

import asyncio
import binascii
import hashlib
import os
import random
from micropython import const
from lkd.pcm import mask

OP_CONT = const(0)
OP_TEXT = const(1)
OP_BINARY = const(2)
OP_CLOSE = const(8)
OP_PING = const(9)
OP_PONG = const(10)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsError(Exception):
    pass


class WsClosed(Exception):
    def __init__(self, code, reason=""):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def parse_url(url):
    """ws[s]://host[:port][/path] -> (secure, host, port, path)."""
    if url.startswith("wss://"):
        secure, rest = True, url[6:]
    elif url.startswith("ws://"):
        secure, rest = False, url[5:]
    else:
        raise WsError("gateway url must start with ws:// or wss://: %s" % url)
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    i = hostport.rfind(":")
    if i > 0 and not hostport.endswith("]"):
        host, port = hostport[:i], int(hostport[i + 1:])
    else:
        host, port = hostport, (443 if secure else 80)
    return secure, host.strip("[]"), port, path


def ssl_context(cadata):
    """A TLS client context that verifies the gateway against a CA certificate."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cadata.startswith(b"-----BEGIN"):
        # PEM -> DER: mbedtls would want PEM NUL-terminated; DER is unambiguous
        body = cadata.split(b"-----")[2]
        cadata = binascii.a2b_base64(body.replace(b"\n", b"").replace(b"\r", b""))
    ctx.load_verify_locations(cadata=cadata)
    return ctx


def _rand4(buf, off):
    # 16-bit draws stay small ints on 32-bit ports (no long-int allocation).
    a = random.getrandbits(16)
    b = random.getrandbits(16)
    buf[off] = a & 0xFF
    buf[off + 1] = a >> 8
    buf[off + 2] = b & 0xFF
    buf[off + 3] = b >> 8


def _header(buf, op, n):
    """Client frame header ending at buf[8] (mask key at 4..8); returns its start."""
    if n < 126:
        buf[2] = 0x80 | op
        buf[3] = 0x80 | n
        s = 2
    elif n < 65536:
        buf[0] = 0x80 | op
        buf[1] = 0x80 | 126
        buf[2] = n >> 8
        buf[3] = n & 0xFF
        s = 0
    else:
        raise WsError("frame of %d bytes is too large to send" % n)
    _rand4(buf, 4)
    return s


class WebSocket:
    def __init__(self, rx_limit=4096, tx_max=648):
        self.rx_limit = rx_limit
        self.rx = bytearray(rx_limit)
        self.rxmv = memoryview(self.rx)
        self.n = 0  # bytes of the last message in rx
        self._hdr = bytearray(8)
        self._hmv = memoryview(self._hdr)
        self._h2 = self._hmv[:2]
        self._vn = -1  # rxmv[:_vn], kept: audio messages all have one length
        self._v = None
        # 8 bytes of header room, payload, and word slack for the masking loop
        self.tx = bytearray(8 + ((tx_max + 3) & ~3))
        self._txmv = memoryview(self.tx)
        self._txpay = self._txmv[8:]
        self._txn = -1  # the frame view of send_tx, kept for its length
        self._txv = None
        self._ctl = bytearray(8 + 128)
        self._ctlmv = memoryview(self._ctl)
        self.reader = None
        self.writer = None
        self.closed = True

    async def connect(self, url, ssl_ctx=None, timeout_ms=10000):
        secure, host, port, path = parse_url(url)
        if secure and ssl_ctx is None:
            raise WsError("wss:// needs a CA certificate (config 'ca')")
        if secure:
            coro = asyncio.open_connection(host, port, ssl=ssl_ctx, server_hostname=host)
        else:
            coro = asyncio.open_connection(host, port)
        self.reader, self.writer = await asyncio.wait_for_ms(coro, timeout_ms)
        self.closed = False
        try:
            await asyncio.wait_for_ms(self._handshake(host, port, path), timeout_ms)
        except BaseException:
            self.abort()
            raise

    async def _handshake(self, host, port, path):
        key = binascii.b2a_base64(os.urandom(16))[:-1]
        w = self.writer
        w.write(b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                % (path.encode(), host.encode(), port, key))
        await w.drain()
        status = await self.reader.readline()
        if not status:
            raise WsError("gateway closed the connection during the WebSocket handshake")
        parts = status.split(None, 2)
        if len(parts) < 2 or parts[1] != b"101":
            raise WsError("WebSocket handshake refused: %s" % status.strip().decode())
        want = binascii.b2a_base64(hashlib.sha1(key + _GUID).digest())[:-1]
        ok = False
        while True:
            line = await self.reader.readline()
            if not line or line == b"\r\n":
                break
            i = line.find(b":")
            if i > 0 and line[:i].strip().lower() == b"sec-websocket-accept":
                ok = line[i + 1:].strip() == want
        if not ok:
            raise WsError("WebSocket handshake: bad or missing Sec-WebSocket-Accept")

    # --- sending (synchronous: the stream writer buffers what the socket won't take)

    def send_binary(self, data, n):
        """Send data[0:n] as one binary frame (n <= tx_max)."""
        self._txpay[0:n] = data
        self.send_tx(n)

    def tx_payload(self, n):
        """The send buffer's first n payload bytes, to fill in place for send_tx(n)."""
        return self._txmv[8:8 + n]

    def send_tx(self, n):
        """Send the send buffer's first n payload bytes as one binary frame (and
        mask them: the caller writes them anew for the next frame)."""
        s = _header(self.tx, OP_BINARY, n)
        mask(self.tx, n)
        if n != self._txn:
            self._txn = n
            self._txv = self._txmv[s:8 + n]
        self.writer.write(self._txv)

    def send_text(self, text):
        b = text.encode() if isinstance(text, str) else text
        self._send_alloc(OP_TEXT, b)

    def _send_alloc(self, op, b):
        n = len(b)
        buf = bytearray(8 + ((n + 3) & ~3))
        buf[8:8 + n] = b
        s = _header(buf, op, n)
        mask(buf, n)
        self.writer.write(memoryview(buf)[s:8 + n])

    def _send_ctl(self, op, payload, n):
        c = self._ctl
        c[8:8 + n] = payload[:n]
        s = _header(c, op, n)
        mask(c, n)
        self.writer.write(self._ctlmv[s:8 + n])

    async def drain(self):
        await self.writer.drain()

    # --- receiving

    async def _read(self, mv, n):
        # mv is n bytes long: sliced (allocated) only after a partial read
        got = 0
        r = self.reader
        while got < n:
            k = await r.readinto(mv if got == 0 else mv[got:n])
            if k is None:  # TLS record not complete yet
                continue
            if k == 0:
                raise WsClosed(1006, "connection lost")
            got += k

    async def recv(self):
        """Next text or binary message; returns its opcode, payload in rxmv[:n].
        Answers pings, raises WsClosed on close, WsError past rx_limit."""
        h = self._hdr
        hmv = self._hmv
        op = 0
        n = 0
        while True:
            await self._read(self._h2, 2)
            b0 = h[0]
            b1 = h[1]
            fin = b0 & 0x80
            opcode = b0 & 0x0F
            if b1 & 0x80:
                raise WsError("masked frame from the server (RFC 6455 5.1)")
            ln = b1 & 0x7F
            if ln == 126:
                await self._read(self._h2, 2)
                ln = (h[0] << 8) | h[1]
            elif ln == 127:
                await self._read(hmv, 8)
                if h[0] or h[1] or h[2] or h[3]:
                    raise WsError("frame length beyond 4 GiB")
                ln = (h[4] << 24) | (h[5] << 16) | (h[6] << 8) | h[7]
            if opcode >= 8:
                if ln > 125 or not fin:
                    raise WsError("bad control frame")
                cmv = self._ctlmv[8:]
                await self._read(cmv[:ln], ln)
                if opcode == OP_PING:
                    self._send_ctl(OP_PONG, cmv, ln)
                elif opcode == OP_CLOSE:
                    code = (self._ctl[8] << 8 | self._ctl[9]) if ln >= 2 else 1005
                    reason = bytes(self._ctl[10:8 + ln]).decode() if ln > 2 else ""
                    try:
                        self._send_ctl(OP_CLOSE, cmv, 2 if ln >= 2 else 0)
                    except Exception:
                        pass
                    self.abort()
                    raise WsClosed(code, reason)
                continue
            if opcode == OP_CONT:
                if not op:
                    raise WsError("continuation frame without a message")
            elif opcode in (OP_TEXT, OP_BINARY):
                if op:
                    raise WsError("new message inside a fragmented one")
                op = opcode
            else:
                raise WsError("unknown opcode %d" % opcode)
            if n + ln > self.rx_limit:
                # Refuse rather than allocate: 1009 = message too big.
                self.close(1009)
                raise WsError("message of %d+ bytes exceeds the %d-byte receive limit" % (n + ln, self.rx_limit))
            if n == 0:
                if ln != self._vn:
                    self._vn = ln
                    self._v = self.rxmv[:ln]
                await self._read(self._v, ln)
            else:
                await self._read(self.rxmv[n:n + ln], ln)
            n += ln
            if fin:
                self.n = n
                return op

    # --- closing

    def close(self, code=1000):
        if self.closed:
            return
        try:
            b = self._hdr
            b[0] = code >> 8
            b[1] = code & 0xFF
            self._send_ctl(OP_CLOSE, b, 2)
        except Exception:
            pass
        self.abort()

    def abort(self):
        self.closed = True
        w = self.writer
        if w is not None:
            try:
                w.close()
            except Exception:
                pass
