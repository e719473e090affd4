# token_url: fetch a LiveKit token with an HTTP(S) GET. Imported only by
# boards configured with a token_url, and unloaded after each fetch. The
# request carries the device's credential (docs/device-protocol.md, "Token
# server"):
#   X-Device-Id: <machine.unique_id() in hex>
#   Authorization: Bearer <config device_key>   (when configured)
# Every step has a deadline (a server that accepts and never answers fails the
# attempt; the session retries with backoff) and the answer is read whole,
# bounded: Content-Length honoured, else read to EOF (HTTP/1.0: no chunking).
# No error names the URL's query, the key or the token. Names here are few:
# each costs the heap a qstr once the module has been loaded.

import asyncio
import binascii
import machine
import time
from micropython import const
from lkd.ws import WsClosed, parse_url, shut

_HEAD = const(2048)  # most bytes of status line and headers
_BODY = const(4096)  # most bytes of body: a LiveKit token is ~500


async def fetch(url, ssl_ctx, key=None, timeout_ms=10000):
    """The token: the body, or its JSON {"token": ...}. Raises OSError on a
    failure worth retrying (a timeout too: timeout_ms for each step, twice
    that for the whole), WsClosed(0, why) when the server refuses this device
    (401/403): retrying would not help."""
    end_at = time.ticks_add(time.ticks_ms(), 2 * timeout_ms)
    # each step's deadline, or what is left of the whole one (a lambda: a named
    # function would cost a qstr)
    w4 = lambda aw: asyncio.wait_for_ms(aw, max(0, min(timeout_ms, time.ticks_diff(end_at, time.ticks_ms()))))
    try:
        secure, host, port, path = parse_url(url.replace("http", "ws", 1))
        if secure and ssl_ctx is None:
            raise WsClosed(0, "an https token_url needs 'ca', the CA certificate file on flash")
        ip = host
        if not (":" in host or all(c in "0123456789." for c in host)):
            from lkd.dns import resolve  # a name, without blocking the loop
            ip, port = await w4(resolve(host, port))
        r, w = await w4(asyncio.open_connection(ip, port, ssl=ssl_ctx if secure else None,
                                                server_hostname=host if secure else None))
        dev = binascii.hexlify(machine.unique_id()).decode()
        try:
            w.write(b"GET %s HTTP/1.0\r\nHost: %s\r\nX-Device-Id: %s\r\n%sAccept: application/json, text/plain\r\n\r\n"
                    % (path.encode(), host.encode(), dev.encode(),
                       b"Authorization: Bearer %s\r\n" % key.encode() if key else b""))
            key = None
            await w4(w.drain())
            buf = b""
            while True:
                chunk = await w4(r.read(512))
                if not chunk:
                    raise OSError("token_url closed the connection before its headers ended")
                buf += chunk
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    break
                if len(buf) > _HEAD:
                    raise OSError("token_url sent more than %d bytes of headers" % _HEAD)
            head = buf[:end].split(b"\r\n")
            body = buf[end + 4:]
            buf = None
            parts = head[0].split(None, 2)
            try:
                status = int(parts[1])
            except (IndexError, ValueError):
                raise OSError("token_url did not answer HTTP")
            if status in (401, 403):
                raise WsClosed(0, "token_url refused this device (%d): check device_key in config.json, and that "
                                  "the token server knows device %s" % (status, dev))
            if status != 200:
                raise OSError("token_url answered %d" % status)
            n = None  # Content-Length
            for line in head[1:]:
                i = line.find(b":")
                if i > 0 and line[:i].strip().lower() == b"content-length":
                    n = int(line[i + 1:])
            if n is not None and n > _BODY:
                raise OSError("token_url's answer is %d bytes; the board takes at most %d" % (n, _BODY))
            while n is None or len(body) < n:
                if len(body) > _BODY:
                    break
                chunk = await w4(r.read(512))
                if not chunk:
                    if n is not None:
                        raise OSError("token_url's answer ended after %d of %d bytes" % (len(body), n))
                    break
                body += chunk
            if len(body) > _BODY:
                raise OSError("token_url's answer is over %d bytes, the most the board takes" % _BODY)
        finally:
            shut(w)
        body = body.strip()
        if body.startswith(b"{"):
            import json
            try:
                body = json.loads(body).get("token").encode()
            except (ValueError, AttributeError):
                body = b""
        # a JWT: three base64url parts, no spaces (an HTML page or an error text is not one);
        # bytes constants, as short str ones would cost the heap qstrs
        if body.count(b".") != 2 or b" " in body or b"<" in body:
            raise OSError("token_url answered 200 but not with a token (the body, or JSON {\"token\": ...})")
        return body.decode()
    except asyncio.TimeoutError:
        raise OSError("token_url did not answer within %d ms" % timeout_ms)
