# token_url: fetch a LiveKit token over plain HTTP(S) GET. Imported only by
# boards configured with a token_url.

import asyncio


async def fetch(url, ssl_ctx):
    """The body is the token, or JSON {"token": ...}."""
    from lkd.ws import parse_url
    secure, host, port, path = parse_url(url.replace("http", "ws", 1))
    r, w = await asyncio.open_connection(host, port, ssl=ssl_ctx if secure else None,
                                         server_hostname=host if secure else None)
    try:
        w.write(b"GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode()))
        await w.drain()
        status = await r.readline()
        if b" 200 " not in status:
            raise OSError("token_url answered %s" % status.strip().decode())
        while (await r.readline()) not in (b"\r\n", b""):
            pass
        body = (await r.read(9000)).strip()
    finally:
        w.close()
    if body.startswith(b"{"):
        import json
        return json.loads(body)["token"]
    return body.decode()
