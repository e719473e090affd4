# A refreshed token kept on flash (refresh_token.json), and the claims read
# from a token. Its own small module, loaded at a refresh and dropped after: it
# was config.py's, whose load() is one 550-byte block of code, and a session's
# heap may hold no such block in one piece.

import json


def keep(d):
    # a refreshed token (d.token, d the Device) from the gateway: on flash when none is saved
    # or the saved one has used half its life (flash wear: LiveKit's refresh
    # tokens live 10 min, so about one write in 5 minutes), to a temporary
    # file renamed over the old one: a power cut leaves the old file or the
    # new one, never half of one
    import os
    from lkd.device import log
    sv = d._saved
    sv[3] = False
    nbf, exp = sv[0], sv[1]
    new = _claims(d.token)[1]
    if new > exp and (not exp or new - exp > ((exp - nbf) if exp > nbf > 0 else 3600) // 2):
        try:
            with open("refresh_token.tmp", "w") as f:
                json.dump({"from": sv[2], "token": d.token}, f)
            os.rename("refresh_token.tmp", "refresh_token.json")
            sv[0], sv[1] = _claims(d.token)
            log("token saved on flash")
        except OSError as e:
            log("token not saved: %r" % e)


def _claims(p):
    # (nbf, exp) of a JWT, read without verifying; (0, 0) if unreadable. The
    # two numbers are found in the decoded payload rather than parsing it to a
    # dict, and it is decoded 64 characters at a time (a copy of the whole
    # ~550-byte token, at the moment of a refresh, failed at 128K with 2 KB
    # free in pieces); bytes constants, as short str ones would cost qstrs
    import binascii
    try:
        i = p.find(".") + 1
        j = p.find(".", i)
        mv = memoryview(p)  # the str's bytes, not copied
        out = [0, 0]
        tail = b""
        while 0 < i < j:
            c = bytes(mv[i:min(i + 64, j)]).replace(b"-", b"+").replace(b"_", b"/")
            i += 64
            # the last 24 decoded bytes go on: a key and its number fit in them
            w = tail + binascii.a2b_base64(c + b"=" * (-len(c) % 4))
            for n, k in enumerate((b'"nbf":', b'"exp":')):
                s = w.find(k)
                if s >= 0:
                    s += 6
                    e = s
                    while e < len(w) and w[e] in b" 0123456789":
                        e += 1
                    if e < len(w) or i >= j:  # else the number goes on in the next piece
                        out[n] = int(w[s:e])
            tail = w[-24:]
        return out[0], out[1]
    except Exception:
        return 0, 0
