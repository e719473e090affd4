# The lkdevice device protocol, version 1: frame headers, audio codecs and
# control messages. Spec: docs/device-protocol.md.
#
# The one module the firmware shares with the CPython package: it is copied to
# the board's flash as device_protocol.py and imported as lkdevice.device_protocol
# by the gateway. It imports nothing of lkdevice, and runs unchanged under both
# interpreters: no typing, no f-strings with `=`, no dataclasses. The audio
# paths write into caller-owned buffers so the firmware allocates nothing per
# frame.

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

import json
from array import array

PROTOCOL_VERSION = const(1)
FRAME_SAMPLES = const(320)
PCM_FRAME_BYTES = const(640)

CODEC_PCM16 = const(0)
CODEC_ULAW = const(1)
CODEC_ADPCM = const(2)
CODEC_NAMES = ("pcm16", "ulaw", "adpcm")
# Payload bytes of one 20 ms frame: ADPCM is a 4-byte state header + 320 nibbles.
PAYLOAD_BYTES = (640, 320, 164)

FRAME_AUDIO = const(0x01)
HEADER_BYTES = const(8)
MAX_BINARY_FRAME = const(648)

# Limits on control messages (bytes of UTF-8 JSON, or characters of a field).
# Private here (const: folded, no qstr and no global on a board); CPython gets
# their public names, and the names only the gateway uses, from
# _protocol_names.py (imported at the end).
_MAX_TEXT_FRAME = const(16384)
_MIN_DEVICE_TEXT = const(1024)
_DEFAULT_DEVICE_TEXT = const(4096)
_MAX_TOKEN = const(8192)
_MAX_TOPIC = const(128)
_MAX_IDENTITY = const(256)
_MAX_METHOD = const(64)
_MAX_PAYLOAD = const(15360)
_MAX_ID = const(64)
_MAX_REASON = const(256)
_MAX_DESTINATIONS = const(16)
_MAX_ATTRIBUTES = const(32)
_MAX_ATTRIBUTE = const(1024)

# Error codes carried by {"t": "error"}.
E_MALFORMED = "malformed"
E_TOO_LARGE = "too_large"
E_BAD_FRAME = "bad_frame"
E_CODEC = "unsupported_codec"


class ProtocolError(ValueError):
    """A frame or message that breaks the protocol; `code` is an E_* value,
    `id` the request id of a malformed rpc or rpc_result (so its call can fail)."""

    def __init__(self, code, message, id=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


# Deep nesting: CPython's json raises RecursionError, MicroPython a RuntimeError.
try:
    _TOO_DEEP = RecursionError
except NameError:
    _TOO_DEEP = RuntimeError


def codec_id(name):
    for i in range(3):
        if CODEC_NAMES[i] == name:
            return i
    raise ProtocolError(E_CODEC, "unknown codec %r; use pcm16, ulaw or adpcm" % (name,))


def seq_newer(a, b):
    """True when 16-bit sequence number a comes after b (RFC 1982 arithmetic)."""
    d = (a - b) & 0xFFFF
    return 0 < d < 0x8000


def seq_distance(a, b):
    """How many frames a is ahead of b, negative when behind."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


# --- binary audio frames ---------------------------------------------------

def pack_header(buf, codec, seq, timestamp):
    """Write the 8-byte header into buf[0:8]: kind, codec, seq (u16 BE), timestamp (u32 BE)."""
    buf[0] = FRAME_AUDIO
    buf[1] = codec
    buf[2] = (seq >> 8) & 0xFF
    buf[3] = seq & 0xFF
    buf[4] = (timestamp >> 24) & 0xFF
    buf[5] = (timestamp >> 16) & 0xFF
    buf[6] = (timestamp >> 8) & 0xFF
    buf[7] = timestamp & 0xFF


def check_frame(frame, codec):
    """Validate a received binary frame for the negotiated codec; return its seq."""
    n = len(frame)
    if n < HEADER_BYTES:
        raise ProtocolError(E_BAD_FRAME, "binary frame of %d bytes is shorter than the 8-byte header" % n)
    if frame[0] != FRAME_AUDIO:
        raise ProtocolError(E_BAD_FRAME, "unknown binary frame kind 0x%02x" % frame[0])
    if frame[1] != codec:
        raise ProtocolError(E_BAD_FRAME, "frame codec %d differs from the negotiated %s" % (frame[1], CODEC_NAMES[codec]))
    if n != HEADER_BYTES + PAYLOAD_BYTES[codec]:
        raise ProtocolError(E_BAD_FRAME, "%s frame must be %d bytes, got %d"
                            % (CODEC_NAMES[codec], HEADER_BYTES + PAYLOAD_BYTES[codec], n))
    return (frame[2] << 8) | frame[3]


def frame_seq(frame):
    return (frame[2] << 8) | frame[3]


def frame_timestamp(frame):
    return (frame[4] << 24) | (frame[5] << 16) | (frame[6] << 8) | frame[7]


# --- G.711 mu-law (same rounding as CPython's audioop) -----------------------

# Segment of a biased 14-bit magnitude m, indexed by m >> 6 (0..128):
# bytes([0] + [1] + [2] * 2 + [3] * 4 + [4] * 8 + [5] * 16 + [6] * 32 + [7] * 64 + [8]) written
# out, since the compiler joins adjacent literals into one constant (in flash when frozen)
# where that expression is built on the heap at import.
_ULAW_SEG = (b"\x00\x01\x02\x02\x03\x03\x03\x03\x04\x04\x04\x04\x04\x04\x04\x04\x05\x05\x05\x05\x05\x05\x05\x05"
             b"\x05\x05\x05\x05\x05\x05\x05\x05\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06"
             b"\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x06\x07\x07\x07\x07\x07\x07\x07\x07"
             b"\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07"
             b"\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07"
             b"\x07\x07\x07\x07\x07\x07\x07\x07\x08")


def _ulaw_decode_table():
    # array('h'), not a list: 512 bytes instead of 256 object slots (2 KB on 64-bit)
    t = array("h", bytes(512))
    for i in range(256):
        u = ~i & 0xFF
        v = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        t[i] = (0x84 - v) if (u & 0x80) else (v - 0x84)
    return t


_ULAW_DECODE = _ulaw_decode_table()


def ulaw_encode_sample(s):
    m = s >> 2
    if m < 0:
        m = -m
        mask = 0x7F
    else:
        mask = 0xFF
    if m > 8159:
        m = 8159
    m += 0x21
    seg = _ULAW_SEG[m >> 6]
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((m >> (seg + 1)) & 0x0F)) ^ mask


def ulaw_encode_into(pcm, out, n):
    """n little-endian int16 samples from pcm into n mu-law bytes in out."""
    seg_table = _ULAW_SEG
    j = 0
    for i in range(n):
        s = pcm[j] | (pcm[j + 1] << 8)
        j += 2
        if s & 0x8000:
            m = (0x10000 - s) >> 2
            mask = 0x7F
            if (0x10000 - s) & 3:  # arithmetic shift of a negative rounds down
                m += 1
        else:
            m = s >> 2
            mask = 0xFF
        if m > 8159:
            m = 8159
        m += 0x21
        seg = seg_table[m >> 6]
        if seg >= 8:
            out[i] = 0x7F ^ mask
        else:
            out[i] = ((seg << 4) | ((m >> (seg + 1)) & 0x0F)) ^ mask


def ulaw_decode_into(src, out, n, off=0):
    """n mu-law bytes from src[off:] into n little-endian int16 samples in out."""
    table = _ULAW_DECODE
    j = 0
    for i in range(n):
        v = table[src[off + i]] & 0xFFFF
        out[j] = v & 0xFF
        out[j + 1] = v >> 8
        j += 2


# --- IMA ADPCM (the DVI/IMA algorithm of audioop.lin2adpcm) ---------------------

_INDEX_ADJUST = (-1, -1, -1, -1, 2, 4, 6, 8, -1, -1, -1, -1, 2, 4, 6, 8)
# array('H'), not a tuple: 178 bytes instead of 89 object slots (712 bytes on 64-bit)
_STEPS = array("H", (
    7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45,
    50, 55, 60, 66, 73, 80, 88, 97, 107, 118, 130, 143, 157, 173, 190, 209, 230,
    253, 279, 307, 337, 371, 408, 449, 494, 544, 598, 658, 724, 796, 876, 963,
    1060, 1166, 1282, 1411, 1552, 1707, 1878, 2066, 2272, 2499, 2749, 3024, 3327,
    3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132, 7845, 8630, 9493, 10442,
    11487, 12635, 13899, 15289, 16818, 18500, 20350, 22385, 24623, 27086, 29794,
    32767))


class AdpcmEncoder:
    """IMA ADPCM with the state carried across frames and written into each
    frame's 4-byte header (predictor int16 LE, step index, 0), so a receiver
    can decode any frame on its own after a loss."""

    def __init__(self):
        self.predictor = 0
        self.index = 0

    def encode_into(self, pcm, out, n):
        """n int16 LE samples from pcm into out[0:4 + n // 2]."""
        valpred = self.predictor
        index = self.index
        p = valpred & 0xFFFF
        out[0] = p & 0xFF
        out[1] = p >> 8
        out[2] = index
        out[3] = 0
        steps = _STEPS
        adjust = _INDEX_ADJUST
        j = 0
        o = 4
        low = 0
        for i in range(n):
            s = pcm[j] | (pcm[j + 1] << 8)
            j += 2
            if s & 0x8000:
                s -= 0x10000
            step = steps[index]
            diff = s - valpred
            if diff < 0:
                sign = 8
                diff = -diff
            else:
                sign = 0
            delta = 0
            vpdiff = step >> 3
            if diff >= step:
                delta = 4
                diff -= step
                vpdiff += step
            step >>= 1
            if diff >= step:
                delta |= 2
                diff -= step
                vpdiff += step
            step >>= 1
            if diff >= step:
                delta |= 1
                vpdiff += step
            if sign:
                valpred -= vpdiff
                if valpred < -32768:
                    valpred = -32768
            else:
                valpred += vpdiff
                if valpred > 32767:
                    valpred = 32767
            delta |= sign
            index += adjust[delta]
            if index < 0:
                index = 0
            elif index > 88:
                index = 88
            if i & 1:
                out[o] = low | (delta << 4)
                o += 1
            else:
                low = delta
        if n & 1:
            out[o] = low
        self.predictor = valpred
        self.index = index


def adpcm_decode_into(src, out, n, off=0):
    """One frame (4-byte header + n // 2 bytes, from src[off:]) into n int16 LE samples in out."""
    valpred = src[off] | (src[off + 1] << 8)
    if valpred & 0x8000:
        valpred -= 0x10000
    index = src[off + 2]
    if index > 88:
        raise ProtocolError(E_BAD_FRAME, "ADPCM step index %d is out of range 0..88" % index)
    steps = _STEPS
    adjust = _INDEX_ADJUST
    j = 0
    for i in range(n):
        b = src[off + 4 + (i >> 1)]
        delta = (b >> 4) if (i & 1) else (b & 0x0F)
        step = steps[index]
        vpdiff = step >> 3
        if delta & 4:
            vpdiff += step
        if delta & 2:
            vpdiff += step >> 1
        if delta & 1:
            vpdiff += step >> 2
        if delta & 8:
            valpred -= vpdiff
            if valpred < -32768:
                valpred = -32768
        else:
            valpred += vpdiff
            if valpred > 32767:
                valpred = 32767
        index += adjust[delta]
        if index < 0:
            index = 0
        elif index > 88:
            index = 88
        v = valpred & 0xFFFF
        out[j] = v & 0xFF
        out[j + 1] = v >> 8
        j += 2


class FrameEncoder:
    """20 ms of 16 kHz PCM16 into a complete binary frame, in a buffer it owns
    or in `buf` (exactly the frame's size, e.g. a view of a socket's send buffer)."""

    def __init__(self, codec, buf=None):
        if not 0 <= codec <= 2:
            raise ProtocolError(E_CODEC, "unknown codec id %d" % codec)
        self.codec = codec
        n = HEADER_BYTES + PAYLOAD_BYTES[codec]
        if buf is None:
            buf = bytearray(n)
        elif len(buf) != n:
            raise ValueError("a %s frame needs a buffer of %d bytes" % (CODEC_NAMES[codec], n))
        self.frame = buf
        self._payload = memoryview(self.frame)[HEADER_BYTES:]
        self._adpcm = AdpcmEncoder() if codec == CODEC_ADPCM else None
        self.seq = 0
        # two 16-bit halves: a u32 past 2**30 would be a heap integer on a 32-bit port
        self._ts_hi = 0
        self._ts_lo = 0

    @property
    def timestamp(self):
        return (self._ts_hi << 16) | self._ts_lo

    @timestamp.setter
    def timestamp(self, value):
        self._ts_hi = (value >> 16) & 0xFFFF
        self._ts_lo = value & 0xFFFF

    def encode(self, pcm):
        """Encode 640 bytes of PCM; returns the frame buffer (reused next call)."""
        frame = self.frame
        frame[0] = FRAME_AUDIO
        frame[1] = self.codec
        frame[2] = self.seq >> 8
        frame[3] = self.seq & 0xFF
        frame[4] = self._ts_hi >> 8
        frame[5] = self._ts_hi & 0xFF
        frame[6] = self._ts_lo >> 8
        frame[7] = self._ts_lo & 0xFF
        self._encode_payload(pcm)
        self.seq = (self.seq + 1) & 0xFFFF
        lo = self._ts_lo + FRAME_SAMPLES
        if lo > 0xFFFF:
            self._ts_hi = (self._ts_hi + 1) & 0xFFFF
            lo &= 0xFFFF
        self._ts_lo = lo
        return self.frame

    def _encode_payload(self, pcm):
        # the one step a faster codec (the firmware's viper) replaces
        codec = self.codec
        if codec == CODEC_PCM16:
            self._payload[:] = pcm
        elif codec == CODEC_ULAW:
            ulaw_encode_into(pcm, self._payload, FRAME_SAMPLES)
        else:
            self._adpcm.encode_into(pcm, self._payload, FRAME_SAMPLES)


def decode_payload_into(codec, frame, out):
    """Decode a validated frame's payload into out (640 bytes of PCM16 LE).

    Reads the payload at an offset rather than through memoryview(frame)[8:],
    which MicroPython would allocate on every frame."""
    if codec == CODEC_PCM16:
        for i in range(PCM_FRAME_BYTES):
            out[i] = frame[HEADER_BYTES + i]
    elif codec == CODEC_ULAW:
        ulaw_decode_into(frame, out, FRAME_SAMPLES, HEADER_BYTES)
    else:
        adpcm_decode_into(frame, out, FRAME_SAMPLES, HEADER_BYTES)


# --- control messages (JSON text frames) -------------------------------------

# Field kinds: s string, i int, b bool, d dict of str->str, l list of str,
# o object (dict), L list of objects, e RPC error ({code uint32, message?, data?}). A schema maps a message type to a flat
# tuple of fields, four items each: name, kind, length limit, required. (Flat
# rather than a tuple per field: on a 64-bit MicroPython every small tuple
# costs 48 bytes of heap.)
_S, _I, _B, _D, _L, _O, _LO, _E = "s", "i", "b", "d", "l", "o", "L", "e"
# LiveKit's RpcError.code is a uint32
MAX_RPC_CODE = 0xFFFFFFFF


def _device_messages():
    # Messages a device sends. Built on first use (module __getattr__): only
    # the gateway validates them, so the firmware never pays for this table.
    return {
        "hello": ("v", _I, 0, True, "token", _S, _MAX_TOKEN, True, "codec", _S, 8, True,
                  "max_text", _I, 0, False, "device", _D, 8, False, "muted", _B, 0, False),
        "resume": ("v", _I, 0, True, "session", _S, _MAX_ID, True, "key", _S, _MAX_ID, True,
                   "codec", _S, 8, False),
        "data": ("topic", _S, _MAX_TOPIC, False, "text", _S, _MAX_PAYLOAD, False,
                 "b64", _S, _MAX_PAYLOAD * 4 // 3 + 4, False, "to", _L, _MAX_DESTINATIONS, False,
                 "reliable", _B, 0, False),
        "rpc": ("id", _S, _MAX_ID, True, "to", _S, _MAX_IDENTITY, True, "method", _S, _MAX_METHOD, True,
                "payload", _S, _MAX_PAYLOAD, False, "timeout_ms", _I, 0, False),
        "rpc_result": ("id", _S, _MAX_ID, True, "payload", _S, _MAX_PAYLOAD, False, "error", _E, 0, False),
        "mute": ("muted", _B, 0, True),
        "attributes": ("attributes", _D, _MAX_ATTRIBUTES, True),
        "ping": ("id", _I, 0, False),
        "leave": ("reason", _S, _MAX_REASON, False),
    }


def __getattr__(name):
    if name == "DEVICE_MESSAGES":
        d = globals()["DEVICE_MESSAGES"] = _device_messages()
        return d
    raise AttributeError(name)


# Messages the gateway sends.
GATEWAY_MESSAGES = {
    "welcome": ("v", _I, 0, True, "session", _S, _MAX_ID, True, "key", _S, _MAX_ID, True,
                "grace_s", _I, 0, True, "codec", _S, 8, True, "room", _O, 0, True,
                "me", _O, 0, True, "participants", _LO, 0, True, "truncated", _O, 0, False),
    "resumed": ("session", _S, _MAX_ID, True, "participants", _LO, 0, True, "truncated", _O, 0, False),
    "joined": ("p", _O, 0, True, "truncated", _O, 0, False),
    "left": ("identity", _S, _MAX_IDENTITY, True, "reason", _S, _MAX_REASON, False),
    "attributes": ("identity", _S, _MAX_IDENTITY, True, "changed", _D, _MAX_ATTRIBUTES, True),
    "agent_state": ("identity", _S, _MAX_IDENTITY, True, "state", _S, 32, True),
    "speakers": ("identities", _L, 64, True),
    "data": ("from", _S, _MAX_IDENTITY, False, "topic", _S, _MAX_TOPIC, False, "text", _S, _MAX_PAYLOAD, False,
             "b64", _S, _MAX_PAYLOAD * 4 // 3 + 4, False),
    "rpc": ("id", _S, _MAX_ID, True, "from", _S, _MAX_IDENTITY, True, "method", _S, _MAX_METHOD, True,
            "payload", _S, _MAX_PAYLOAD, False, "timeout_ms", _I, 0, False),
    "rpc_result": ("id", _S, _MAX_ID, True, "payload", _S, _MAX_PAYLOAD, False, "error", _E, 0, False),
    "token": ("token", _S, _MAX_TOKEN, True),
    "pong": ("id", _I, 0, False),
    "dropped": ("what", _S, 32, True, "size", _I, 0, False, "count", _I, 0, False),
    "error": ("code", _S, 32, True, "message", _S, _MAX_REASON * 2, True, "fatal", _B, 0, True,
              "seq", _I, 0, False, "id", _S, _MAX_ID, False),
    "leave": ("reason", _S, _MAX_REASON, True),
}


def _check_field(t, name, kind, limit, value):
    ok = True
    if kind == _S:
        ok = isinstance(value, str) and len(value) <= limit
    elif kind == _I:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == _B:
        ok = isinstance(value, bool)
    elif kind == _O:
        ok = isinstance(value, dict)
    elif kind == _E:
        ok = isinstance(value, dict)
        if ok:
            code = value.get("code")
            ok = isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= MAX_RPC_CODE
            for k in ("message", "data"):
                v = value.get(k, "")
                if not isinstance(v, str) or len(v) > _MAX_PAYLOAD:
                    ok = False
    elif kind == _LO:
        ok = isinstance(value, list)
        if ok:
            for item in value:
                if not isinstance(item, dict):
                    ok = False
    elif kind == _L:
        ok = isinstance(value, list) and len(value) <= limit
        if ok:
            for item in value:
                if not isinstance(item, str) or len(item) > _MAX_IDENTITY:
                    ok = False
    elif kind == _D:
        ok = isinstance(value, dict) and len(value) <= limit
        if ok:
            for k in value:
                v = value[k]
                if not isinstance(k, str) or not isinstance(v, str) or len(k) > _MAX_IDENTITY or len(v) > _MAX_ATTRIBUTE:
                    ok = False
    if not ok:
        raise ProtocolError(E_MALFORMED, "%s: field %r is not a valid %s" % (t, name, _kind_name(kind)))


def _kind_name(kind):
    # for error messages only: a dict of these would sit on the heap from import on
    if kind == _S:
        return "string within its length limit"
    if kind == _I:
        return "integer"
    if kind == _B:
        return "boolean"
    if kind == _O:
        return "object"
    if kind == _LO:
        return "list of objects"
    if kind == _L:
        return "list of strings within its limits"
    if kind == _D:
        return "object of strings within its limits"
    return "RPC error: code 0..4294967295, message and data strings"


def validate(msg, schema):
    """Check a decoded message against a schema table; returns its type."""
    if not isinstance(msg, dict):
        raise ProtocolError(E_MALFORMED, "a control message must be a JSON object")
    t = msg.get("t")
    if not isinstance(t, str):
        raise ProtocolError(E_MALFORMED, "a control message needs a string field 't'")
    fields = schema.get(t)
    if fields is None:
        raise ProtocolError(E_MALFORMED, "unknown message type %r" % (t[:32],))
    try:
        for i in range(0, len(fields), 4):
            name = fields[i]
            if name in msg:
                _check_field(t, name, fields[i + 1], fields[i + 2], msg[name])
            elif fields[i + 3]:
                raise ProtocolError(E_MALFORMED, "%s: missing field %r" % (t, name))
    except ProtocolError as e:
        rid = msg.get("id")
        if (t == "rpc" or t == "rpc_result") and isinstance(rid, str):
            e.id = rid
        raise
    return t


def decode_message(text, schema, limit=_MAX_TEXT_FRAME):
    """Parse one text frame (str or UTF-8 bytes) and validate it."""
    if len(text) > limit:
        raise ProtocolError(E_TOO_LARGE, "text frame of %d bytes exceeds the %d-byte limit" % (len(text), limit))
    try:
        msg = json.loads(text)
    except ValueError:
        raise ProtocolError(E_MALFORMED, "text frame is not valid JSON")
    except _TOO_DEEP:
        raise ProtocolError(E_MALFORMED, "text frame nests too deeply")
    validate(msg, schema)
    return msg


def encode_message(msg):
    return json.dumps(msg)


def error_message(code, message, fatal, seq=None, id=None):
    msg = {"t": "error", "code": code, "message": message, "fatal": fatal}
    if seq is not None:
        msg["seq"] = seq
    if id is not None:
        msg["id"] = id
    return msg


try:
    import micropython  # noqa: F401
except ImportError:  # CPython: the limits under their public names, the other error codes, the close codes
    for _k in [k for k in globals() if k.startswith("_MAX_") or k.endswith("_DEVICE_TEXT")]:
        globals()[_k[1:]] = globals()[_k]
    if __package__:  # lkdevice.device_protocol
        from ._protocol_names import *  # noqa: E402,F401,F403
    else:  # on sys.path as the board has it (tests that run the firmware's modules on CPython)
        from _protocol_names import *  # noqa: E402,F401,F403
