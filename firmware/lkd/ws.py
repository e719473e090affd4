# WebSocket client (RFC 6455) on asyncio streams, for ws:// and wss://.
# One writer task owns the socket's write side: MicroPython's Stream.drain()
# ends with `out_buf = b""`, so a frame written by one task while another
# drains would be lost. Other tasks queue frames: control (pongs, JSON) goes
# before audio. Audio has one preallocated frame slot, filled in place and
# masked in place; a frame queued over one not yet taken replaces it (stale
# audio is useless), and the sender waits for the slot (room_event) so that
# the mic ring holds the backlog. Received messages land in one preallocated
# buffer, and anything larger is refused, not allocated.

import asyncio
import binascii
import hashlib
import os
import random
from micropython import const
from lkd.pcm import mask

_OP_CONT = const(0)
OP_TEXT = const(1)
OP_BINARY = const(2)
_OP_CLOSE = const(8)
_OP_PING = const(9)
_OP_PONG = const(10)

_CTL_MAX = const(16)  # queued control frames
_CTL_BYTES = const(8192)  # their total size

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def shut(stream):
    # MicroPython's Stream.close() does nothing (its wait_closed() closes the socket):
    # close the socket itself, at once, so no link drop leaks one of lwIP's few sockets
    try:
        stream.s.close()
    except Exception:
        pass


class WsError(Exception):
    pass


class WsClosed(Exception):
    # code 0: not from the socket but a configuration error that retrying will
    # not fix (a gateway path it does not serve, a token server refusing this
    # device); the board stops until a reset, a config change or a new token
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
        # the audio slot: 8 bytes of header room, payload, word slack for masking
        self.tx_max = tx_max
        self.tx = bytearray(8 + ((tx_max + 3) & ~3))
        self._txmv = memoryview(self.tx)
        self._txpay = self._txmv[8:]
        self._txn = -1  # the frame view of send_tx, kept for its length
        self._txv = None
        self._txq = False  # the slot holds a frame the writer has not taken
        self.room_event = None  # set when the writer takes the slot
        self._ctlq = []  # [frame, essential] in send order
        self._ctlbytes = 0
        self._ctl = bytearray(8 + 128)
        self._ctlmv = memoryview(self._ctl)
        self._wake = asyncio.Event()
        self._wtask = None
        self.failed = None  # why the writer gave the link up
        self.dropped_audio = 0
        self.dropped_ctl = 0
        self.reader = None
        self.writer = None
        self.closed = True

    async def connect(self, url, ssl_ctx=None, timeout_ms=10000):
        self.abort()  # a previous link's writer must not take this link's frames
        secure, host, port, path = parse_url(url)
        if secure and ssl_ctx is None:
            raise WsError("wss:// needs a CA certificate (config 'ca')")
        ip = host
        if not (":" in host or all(c in "0123456789." for c in host)):  # not an IP literal
            # a name: socket.getaddrinfo in open_connection would block the loop (lkd/dns.py)
            from lkd.dns import resolve
            ip, port = await resolve(host, port)
        if secure:
            coro = asyncio.open_connection(ip, port, ssl=ssl_ctx, server_hostname=host)
        else:
            coro = asyncio.open_connection(ip, port)
        self.reader, self.writer = await asyncio.wait_for_ms(coro, timeout_ms)
        self.closed = False
        self._reset_queues()
        try:
            await asyncio.wait_for_ms(self._handshake(host, port, path), timeout_ms)
        except BaseException:
            self.abort()
            raise
        self._wtask = asyncio.create_task(self._writer())

    def _reset_queues(self):
        self._ctlq = []
        self._ctlbytes = 0
        self._txq = False
        self.failed = None

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
        code = parts[1] if len(parts) > 1 else b"?"
        want = binascii.b2a_base64(hashlib.sha1(key + _GUID).digest())[:-1]
        ok = False
        serves = b"another path"
        while True:
            line = await self.reader.readline()
            if not line or line == b"\r\n":
                break
            i = line.find(b":")
            if i > 0:
                name = line[:i].strip().lower()
                if name == b"sec-websocket-accept":
                    ok = line[i + 1:].strip() == want
                elif name == b"x-device-path":  # the gateway's 404 names the path it serves
                    serves = line[i + 1:].strip()
        if code != b"101":
            # a 404 is the URL in config.json: a configuration error (WsClosed code 0)
            path = path.split("?", 1)[0]  # a query may hold what is not for the console
            if code == b"404":
                raise WsClosed(0, "gateway answered 404 for %s; it serves %s" % (path, serves.decode()))
            raise WsError("WebSocket handshake refused: HTTP %s for %s" % (code.decode(), path))
        if not ok:
            raise WsError("WebSocket handshake: bad or missing Sec-WebSocket-Accept")

    # --- sending: synchronous, into the queues; the writer task does the I/O

    def tx_payload(self, n):
        """The audio slot's first n payload bytes, to fill in place for send_tx(n)."""
        return self._txmv[8:8 + n]

    def tx_free(self):
        return not self._txq

    def send_tx(self, n):
        """Queue the audio slot's first n payload bytes as one binary frame,
        masked in place (the caller writes them anew for the next frame).
        Allocates nothing. A frame not yet taken by the writer was overwritten:
        it counts as dropped."""
        if self.closed:
            return False
        if n > self.tx_max:
            raise WsError("frame of %d bytes is larger than tx_max" % n)
        if self._txq:
            self.dropped_audio += 1
        s = _header(self.tx, OP_BINARY, n)
        mask(self.tx, n)
        if n != self._txn:
            self._txn = n
            self._txv = self._txmv[s:8 + n]
        self._txq = True
        self._wake.set()
        return True

    def send_audio(self, frame, n):
        """Copy frame (n bytes) into the audio slot and queue it."""
        self._txpay[0:n] = frame
        return self.send_tx(n)

    def send_text(self, text, essential=False, *args):
        """Queue a text message: text and then each of `args` (str or bytes),
        copied straight into the frame (no joined or encoded copy: a hello
        with its token would be three 500-byte blocks at once on the heap).
        An essential one (an rpc_result, hello) gets out or the link is
        declared broken; others are dropped when the queue is full (False)."""
        if self.closed:
            return False
        parts = [memoryview(text)]  # a str's UTF-8 bytes, not copied
        for p in args:
            parts.append(memoryview(p))
        n = 0
        for p in parts:
            n += len(p)
        return self._queue(OP_TEXT, parts, n, essential)

    def _queue(self, op, payload, n, essential):
        # payload: buffers of n bytes in all
        if self.closed:
            return False
        if 8 + n > _CTL_BYTES:
            raise WsError("message of %d bytes is larger than the %d-byte send queue" % (n, _CTL_BYTES))
        q = self._ctlq
        i = 0
        # full: make room by dropping the oldest non-essential frames
        while (len(q) >= _CTL_MAX or self._ctlbytes + 8 + n > _CTL_BYTES) and i < len(q):
            if q[i][1]:
                i += 1
            else:
                self._ctlbytes -= len(q.pop(i)[0])
                self.dropped_ctl += 1
        if len(q) >= _CTL_MAX or self._ctlbytes + 8 + n > _CTL_BYTES:
            if not essential:
                self.dropped_ctl += 1
                return False
            self._fail("send queue full of essential messages")
            return False
        buf = bytearray(8 + ((n + 3) & ~3))
        i = 8
        for p in payload:
            buf[i:i + len(p)] = p
            i += len(p)
        s = _header(buf, op, n)
        mask(buf, n)
        fr = memoryview(buf)[s:8 + n]
        q.append([fr, essential])
        self._ctlbytes += len(fr)
        self._wake.set()
        return True

    async def _writer(self):
        # the only task that writes after the handshake: write, then drain,
        # before the next frame (Stream.write copies what the socket won't
        # take, so a slot is free once write returns)
        w = self.writer
        q = self._ctlq
        try:
            while True:
                if q:
                    fr = q.pop(0)[0]
                    self._ctlbytes -= len(fr)
                    w.write(fr)
                    await w.drain()
                elif self._txq:
                    w.write(self._txv)
                    self._txq = False
                    if self.room_event is not None:
                        self.room_event.set()
                    await w.drain()
                else:
                    self._wake.clear()
                    await self._wake.wait()
                if self.writer is not w or self.closed:
                    return  # aborted (and perhaps reconnected) meanwhile
                q = self._ctlq
        except Exception as e:
            self._fail("write failed: %r" % e)

    def _fail(self, why):
        if self.failed is None:
            self.failed = why
        self.abort()

    async def drain(self):
        # frames go out from the writer task; this only yields
        await asyncio.sleep_ms(0)

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
                if opcode == _OP_PING:
                    self._queue(_OP_PONG, (cmv[:ln],), ln, True)  # the gateway drops a link that misses a pong
                elif opcode == _OP_CLOSE:
                    code = (self._ctl[8] << 8 | self._ctl[9]) if ln >= 2 else 1005
                    reason = bytes(self._ctl[10:8 + ln]).decode() if ln > 2 else ""
                    self._close_now(cmv, 2 if ln >= 2 else 0)
                    raise WsClosed(code, reason)
                continue
            if opcode == _OP_CONT:
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
        b = self._hdr
        b[0] = code >> 8
        b[1] = code & 0xFF
        self._close_now(b, 2)

    def _close_now(self, payload, n):
        # last words: queued control frames, then the close frame, handed to
        # the stream at once (best effort: the socket closes right after)
        try:
            w = self.writer
            for fr, _ in self._ctlq:
                w.write(fr)
            c = self._ctl
            c[8:8 + n] = payload[:n]
            s = _header(c, _OP_CLOSE, n)
            mask(c, n)
            w.write(self._ctlmv[s:8 + n])
        except Exception:
            pass
        self.abort()

    def abort(self):
        self.closed = True
        self._ctlq = []
        self._ctlbytes = 0
        self._txq = False
        t = self._wtask
        self._wtask = None
        if t is not None:
            try:
                if t is not asyncio.current_task():
                    t.cancel()
            except Exception:
                pass
        w = self.writer
        if w is not None:
            shut(w)
