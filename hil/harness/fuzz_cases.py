"""What the protocol fuzz sends a gateway, and the answer the spec gives for each (docs/device-protocol.md).

A `Case` is one frame: the bytes, text or binary, its kind (for the figures), and
what the gateway must answer: the error codes the spec names, whether the link
then closes, or nothing at all (a later ping is answered). Two families:

- first frames, on a fresh link: hellos and resumes broken field by field or
  character by character, other messages first, binary first, frames too large,
  text that is not UTF-8 or not JSON;
- frames on a joined session: audio frames of the wrong kind, codec, length or
  order, control messages broken the same ways, hello again.

Character-level mutations have no answer known in advance: the protocol module
itself decodes the mutated text (the validator is one module on both sides by
design) and the spec's order of checks for a first message gives the answer.
Everything here is pure: a seeded `random.Random` in, cases out.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from lkdevice import device_protocol as dp

# the spec's close code for each fatal error (its "Errors" table)
CLOSE_FOR = {
    dp.E_MALFORMED: 4400, dp.E_TOO_LARGE: 4413, dp.E_STATE: 4400, dp.E_VERSION: 4400, dp.E_CODEC: 4400,
    dp.E_TOKEN: 4401, dp.E_UNREACHABLE: 4502, dp.E_FULL: 1013, dp.E_SESSION: 4404, dp.E_BAD_FRAME: 4400,
    dp.E_OUT_OF_ORDER: 4400, dp.E_RATE: 4400,
}
# WebSocket closes the socket layer makes before any protocol message: bad UTF-8, over the frame limit
CLOSE_BAD_UTF8 = 1007
CLOSE_TOO_BIG = 1009
SOCKET_MAX_FRAME = 4 * dp.MAX_TEXT_FRAME  # the gateway's websockets max_size (server.py)

CODEC = dp.CODEC_PCM16
FRAME_BYTES = dp.HEADER_BYTES + dp.PAYLOAD_BYTES[CODEC]
_JSON_CHARS = '{}[]":,.-+0123456789 truelfasn\\/tvx\u00e9'


@dataclass(frozen=True)
class Case:
    kind: str
    data: str | bytes
    binary: bool = False                 # a binary frame (else text; bytes then are sent as they are)
    expect: frozenset[str] = frozenset()  # error codes the spec allows; empty: no error at all
    fatal: bool | None = True            # True: the link closes after the error; None: either (a strike)
    close: int | None = None             # a close with no error message (the socket layer's own)
    reply: str | None = None             # a message type that answers it instead of an error (pong)
    rpc_id: str | None = None            # a malformed rpc/rpc_result: the error carries this id
    control_tokens: int = 0              # control messages the gateway's rate limit counts
    audio_tokens: int = 0                # audio frames its frame rate limit counts

    @property
    def silent(self) -> bool:
        return not self.expect and self.close is None and self.reply is None


def _msg(**kw) -> str:
    return json.dumps(kw, separators=(",", ":"))


def _frame(seq: int, *, kind: int = dp.FRAME_AUDIO, codec: int = CODEC, length: int = FRAME_BYTES) -> bytes:
    buf = bytearray(max(length, dp.HEADER_BYTES))
    dp.pack_header(buf, codec, seq & 0xFFFF, (seq * dp.FRAME_SAMPLES) & 0xFFFFFFFF)
    buf[0] = kind
    return bytes(buf[:length])


# --- field-level breakage, by the schema's field kinds

def _wrong_values(kind: str, limit: int, rng: random.Random) -> list:
    over = "x" * (limit + 1 + rng.randrange(20))
    return {
        "s": [5, None, [], {}, True, over],
        "i": ["1", 1.5, True, None, []],
        "b": [0, 1, "true", None],
        "d": [[], "x", {"k": 1}, {"k": None}, {f"k{i}": "v" for i in range(limit + 1)}],
        "l": ["x", [1], [None], ["x"] * (limit + 1)],
        "o": [[], "x", 1],
        "L": [{}, [1], "x"],
        "e": [{"code": -1}, {"code": 2 ** 32}, {"code": "1500"}, {"code": True}, {"code": 1, "message": 5},
              {"message": "m"}, [], {"code": 1500, "data": ["d"]}],
    }[kind]


def _fields(t: str) -> list[tuple[str, str, int, bool]]:
    f = dp.DEVICE_MESSAGES[t]
    return [(f[i], f[i + 1], f[i + 2], f[i + 3]) for i in range(0, len(f), 4)]


def break_field(base: dict, rng: random.Random) -> tuple[str, dict]:
    """`base` with one field missing (if required) or of the wrong type or length: `malformed` by the schema."""
    msg = dict(base)
    fields = _fields(msg["t"])
    required = [f for f in fields if f[3]]
    if required and rng.random() < 0.3:
        name = rng.choice(required)[0]
        del msg[name]
        return "missing-field", msg
    name, kind, limit, _ = rng.choice(fields)
    msg[name] = rng.choice(_wrong_values(kind, limit, rng))
    return "wrong-field", msg


def mutate_text(text: str, rng: random.Random) -> str:
    """One to four character edits: delete, insert, replace, cut short, duplicate a run."""
    s = list(text)
    for _ in range(rng.randint(1, 4)):
        if not s:
            break
        i = rng.randrange(len(s))
        op = rng.randrange(5)
        if op == 0:
            del s[i]
        elif op == 1:
            s.insert(i, rng.choice(_JSON_CHARS))
        elif op == 2:
            s[i] = rng.choice(_JSON_CHARS)
        elif op == 3:
            del s[i:]
        else:
            j = min(len(s), i + rng.randint(1, 12))
            s[i:i] = s[i:j] * rng.randint(1, 3)
    return "".join(s)


def answer_of_first(text: str) -> tuple[str, str | None]:
    """The spec's answer to `text` as a link's first frame: (error code, rpc id of a malformed rpc)."""
    try:
        msg = dp.decode_message(text.encode(), dp.DEVICE_MESSAGES)
    except dp.ProtocolError as e:
        return e.code, e.id
    t = msg["t"]
    if t not in ("hello", "resume"):
        return dp.E_STATE, None
    if msg["v"] != dp.PROTOCOL_VERSION:
        return dp.E_VERSION, None
    if t == "resume":
        return dp.E_SESSION, None  # the fuzz never holds a real session's key on a fresh link
    try:
        dp.codec_id(msg["codec"])
    except dp.ProtocolError:
        return dp.E_CODEC, None
    return dp.E_TOKEN, None  # the fuzz's hellos carry a token the server refuses


# --- first frames (a fresh link, no session)

@dataclass
class FirstFrames:
    bad_token: str  # a token the LiveKit server refuses (signed with another secret)
    rng: random.Random = field(default_factory=random.Random)

    def hello(self) -> dict:
        return {"t": "hello", "v": 1, "token": self.bad_token, "codec": self.rng.choice(dp.CODEC_NAMES),
                "max_text": self.rng.choice([1024, 4096, 16384, 10 ** 9, -5]),
                "device": {"board": "fuzz", "firmware": "0"}}

    def resume(self) -> dict:
        return {"t": "resume", "v": 1, "session": "s" * self.rng.randint(1, 64),
                "key": "k" * self.rng.randint(1, 64)}

    def _other(self) -> dict:
        return self.rng.choice([{"t": "ping", "id": 1}, {"t": "data", "text": "x"}, {"t": "mute", "muted": True},
                                {"t": "leave"}, {"t": "rpc_result", "id": "r1", "payload": ""}])

    def case(self) -> Case:
        r, rng = self.rng.random(), self.rng
        if r < 0.03:
            return self._json("hello/refused-token", self.hello())  # a LiveKit round trip: kept rare
        if r < 0.25:
            how, msg = break_field(rng.choice([self.hello(), self.resume()]), rng)
            return self._json(f"{msg['t'] if 't' in msg else '?'}/{how}", msg)
        if r < 0.30:
            msg = dict(self.hello() if rng.random() < 0.7 else self.resume(), v=rng.choice([0, 2, -1, 2 ** 40]))
            return self._json(f"{msg['t']}/version", msg)
        if r < 0.34:
            return self._json("hello/codec", dict(self.hello(), codec=rng.choice(["opus", "", "PCM16", "g722"])))
        if r < 0.42:
            return self._json("resume/unknown-session", self.resume())
        if r < 0.48:
            return self._json("first/not-hello", self._other())
        if r < 0.52:
            return self._json("first/unknown-type", {"t": rng.choice(["helo", "", "welcome", "x" * 40]), "v": 1})
        if r < 0.75:
            base = json.dumps(rng.choice([self.hello(), self.resume(), self._other()]))
            return self._text("first/mutated-text", mutate_text(base, rng))
        if r < 0.80:
            return self._text("first/not-json", rng.choice(["", "[]", "1", "null", '"hello"', "{", "{'t':'hello'}",
                                                            "\x00", "{\"t\":\"hello\",}"]))
        if r < 0.83:
            depth = rng.randint(1100, 5000)
            return self._text("first/deep", "[" * depth + "]" * depth)
        if r < 0.87:
            pad = "x" * rng.randint(dp.MAX_TEXT_FRAME + 1, SOCKET_MAX_FRAME - 100)  # the pad alone is over
            return Case("first/too-large", _msg(t="hello", v=1, token=pad, codec="pcm16"),
                        expect=frozenset({dp.E_TOO_LARGE}))
        if r < 0.88:
            return Case("first/over-socket-limit", "x" * (SOCKET_MAX_FRAME + 1 + rng.randrange(1000)),
                        close=CLOSE_TOO_BIG)
        if r < 0.92:
            raw = json.dumps(self.hello()).encode()
            i = rng.randrange(len(raw))
            bad = raw[:i] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]) + raw[i:]
            return Case("first/bad-utf8", bad, close=CLOSE_BAD_UTF8)
        n = rng.choice([0, 1, 7, 8, FRAME_BYTES, dp.MAX_BINARY_FRAME + 1, 2000])
        return Case("first/binary", _frame(0, length=n) if n >= 8 else bytes(n), binary=True,
                    expect=frozenset({dp.E_STATE}))

    def _json(self, kind: str, msg: dict) -> Case:
        return self._text(kind, json.dumps(msg))

    def _text(self, kind: str, text: str) -> Case:
        code, _ = answer_of_first(text)  # (no session: a malformed first rpc_result has no call to fail)
        return Case(kind, text, expect=frozenset({code}))


# --- frames on a joined session

SAFE_VALID = ("ping", "mute", "rpc_result")  # valid messages the fuzz may send: no room traffic, no call made


@dataclass
class SessionFrames:
    rng: random.Random = field(default_factory=random.Random)
    seq: int = 0
    sent_on_link: bool = False  # a good frame since the link attached: order is defined from there
    _ping: int = 0

    def new_link(self) -> None:
        self.sent_on_link = False
        self.seq = self.rng.randrange(0x10000)  # the device may restart its seq anywhere after resume

    def ping(self) -> Case:
        self._ping += 1
        return Case("session/ping", _msg(t="ping", id=self._ping), expect=frozenset(), reply="pong",
                    control_tokens=1)

    def good_audio(self) -> Case:
        self.seq = (self.seq + 1) & 0xFFFF
        self.sent_on_link = True
        return Case("audio/good", _frame(self.seq), binary=True, fatal=False, audio_tokens=1)

    def _base(self) -> dict:
        rng = self.rng
        return rng.choice([
            {"t": "data", "topic": "fuzz", "text": "x", "to": ["nobody"], "reliable": False},
            {"t": "data", "b64": "eA==", "to": ["nobody"]},
            {"t": "rpc", "id": f"r{rng.randrange(1000)}", "to": "nobody", "method": "m", "payload": "",
             "timeout_ms": 500},
            {"t": "rpc_result", "id": f"r{rng.randrange(1000)}", "payload": "p"},
            {"t": "rpc_result", "id": f"r{rng.randrange(1000)}", "error": {"code": 1500, "message": "m"}},
            {"t": "mute", "muted": rng.random() < 0.5},
            {"t": "attributes", "attributes": {"k": "v"}},
            {"t": "ping", "id": 3},
            {"t": "leave", "reason": "r"},
        ])

    def case(self, control_left: bool, audio_left: bool) -> Case:
        """The next frame; `*_left`: whether the gateway's rate limits leave room for one more."""
        rng = self.rng
        r = rng.random()
        if r < 0.10 and audio_left:
            return self.good_audio()
        if r < 0.16:
            return Case("audio/kind", _frame(self.seq, kind=rng.choice([0, 2, 0x7F, 0xFF])), binary=True,
                        expect=frozenset({dp.E_BAD_FRAME}), fatal=None)
        if r < 0.20:
            return Case("audio/codec", _frame(self.seq, codec=rng.choice([1, 2, 3, 0xFF])), binary=True,
                        expect=frozenset({dp.E_BAD_FRAME}), fatal=None)
        if r < 0.26:
            # (a PCM16 frame is the largest there is: longer is too_large, below)
            n = rng.choice([0, 1, 7, 8, 9, 172, 328, 600, FRAME_BYTES - 1])
            return Case("audio/length", _frame(self.seq, length=n) if n >= 8 else bytes(n), binary=True,
                        expect=frozenset({dp.E_BAD_FRAME}), fatal=None)
        if r < 0.30:
            n = rng.randint(dp.MAX_BINARY_FRAME + 1, 8192)
            return Case("audio/too-large", _frame(self.seq, length=n), binary=True,
                        expect=frozenset({dp.E_TOO_LARGE}))
        if r < 0.34 and self.sent_on_link:
            back = rng.choice([0, 1, 2, 1000, 0x7FFF])
            return Case("audio/out-of-order", _frame(self.seq - back), binary=True,
                        expect=frozenset({dp.E_OUT_OF_ORDER}), fatal=None)
        if r < 0.60:
            how, msg = break_field(self._base(), rng)
            text = json.dumps(msg)
            try:  # a field over its limit may make the frame too large instead
                dp.decode_message(text.encode(), dp.DEVICE_MESSAGES)
            except dp.ProtocolError as e:
                return Case(f"{msg['t']}/{how}", text, expect=frozenset({e.code}), rpc_id=e.id)
            return self._again()
        if r < 0.80:
            text = mutate_text(json.dumps(self._base()), rng)
            try:
                msg = dp.decode_message(text.encode(), dp.DEVICE_MESSAGES)
            except dp.ProtocolError as e:
                return Case("session/mutated-text", text, expect=frozenset({e.code}), rpc_id=e.id)
            if msg["t"] in SAFE_VALID and control_left:
                return Case("session/mutated-still-valid", text, reply="pong" if msg["t"] == "ping" else None,
                            fatal=False, control_tokens=1)
            return self.ping() if control_left else self._again()
        if r < 0.84 and control_left:
            return Case("session/hello-again", json.dumps({"t": rng.choice(["hello", "resume"]), "v": 1,
                                                           "token": "t", "codec": "pcm16", "session": "s",
                                                           "key": "k"}),
                        expect=frozenset({dp.E_STATE}), control_tokens=1)
        if r < 0.87:
            pad = "x" * rng.randint(dp.MAX_TEXT_FRAME + 1, SOCKET_MAX_FRAME - 100)
            return Case("session/too-large", _msg(t="data", text=pad), expect=frozenset({dp.E_TOO_LARGE}))
        if r < 0.90 and control_left:
            return Case("data/bad-b64", _msg(t="data", b64=rng.choice(["!!!!", "eA=", "e", "eA==\n=="]),
                                             to=["nobody"]),
                        expect=frozenset({dp.E_DATA}), fatal=False, control_tokens=1)
        if r < 0.93:
            return Case("session/not-json", rng.choice(["{", "[]", "7", "\"t\"", "{\"t\":\"ping\",}"]),
                        expect=frozenset({dp.E_MALFORMED}))
        if r < 0.95:
            depth = rng.randint(1100, 2700)  # within the 16 KB frame: past it the answer is too_large
            return Case("session/deep", "{\"t\":" * depth + "1" + "}" * depth, expect=frozenset({dp.E_MALFORMED}))
        if r < 0.97 and control_left:
            return Case("rpc_result/unknown-id", _msg(t="rpc_result", id=f"nope{rng.randrange(10 ** 6)}", payload=""),
                        fatal=False, control_tokens=1)
        if r < 0.99:
            raw = _msg(t="ping", id=1).encode()
            return Case("session/bad-utf8", raw[:5] + b"\xff\xfe" + raw[5:], close=CLOSE_BAD_UTF8)
        return self.ping() if control_left else self._again()

    def _again(self) -> Case:
        # nothing rate-limited left: a frame the gateway rejects before counting it
        return Case("session/not-json", "{", expect=frozenset({dp.E_MALFORMED}))
