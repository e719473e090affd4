"""Build tests/vectors/device_protocol.json: test vectors for device/device_protocol.py.

Expected values come from the module, and every mu-law and IMA ADPCM value is
cross-checked against CPython's audioop (an independent implementation of the
same algorithms), so the vectors are confirmed, not just self-consistent:

- mu-law: payload == audioop.lin2ulaw(pcm, 2); decode == audioop.ulaw2lin.
- ADPCM: our frame = 4-byte state header (predictor int16 LE, step index, 0)
  + codes packed LOW nibble first; audioop.lin2adpcm has no header and packs
  the HIGH nibble first, so the codes are compared nibble-swapped, with the
  header equal to the state audioop carried in.

Run: python tests/vectors/make_device_protocol_vectors.py [--check]
(--check compares with the stored file instead of writing it.)
"""

import binascii
import json
import math
import os
import struct
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from lkdevice import device_protocol as dp

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "device_protocol.json")


def hx(b):
    return binascii.hexlify(bytes(b)).decode()


def pcm_bytes(samples):
    return struct.pack("<%dh" % len(samples), *samples)


def swap_nibbles(b):
    return bytes(((x & 0x0F) << 4) | (x >> 4) for x in b)


class Mismatch(AssertionError):
    pass


def confirm(cond, what):
    if not cond:
        raise Mismatch("audioop disagrees with device_protocol: " + what)


# --- signals (stored as PCM hex in the vectors, so no float maths on the device) ---

N = dp.FRAME_SAMPLES


def sine(freq, amp, start, n=N, rate=dp.SAMPLE_RATE):
    return [int(round(amp * math.sin(2 * math.pi * freq * (start + i) / rate))) for i in range(n)]


def square(period, start, n=N):
    return [32767 if ((start + i) // (period // 2)) % 2 == 0 else -32768 for i in range(n)]


def alternating(start, n=N):
    return [32767 if (start + i) % 2 == 0 else -32768 for i in range(n)]


class Lcg:
    """Numerical Recipes LCG; samples are the top 16 bits, as int16."""

    def __init__(self, seed):
        self.x = seed

    def samples(self, n=N):
        out = []
        for _ in range(n):
            self.x = (1664525 * self.x + 1013904223) & 0xFFFFFFFF
            v = self.x >> 16
            out.append(v - 0x10000 if v & 0x8000 else v)
        return out


# --- sections ---------------------------------------------------------------------

def headers():
    cases = [
        ("zero", 1, 0, 0),
        ("pcm16", 0, 1, 320),
        ("adpcm", 2, 0x1234, 0x89ABCDEF),
        ("seq_max", 1, 0xFFFF, 0xFFFFFFFF),
        ("seq_wrapped", 1, 0, 0),
        ("ts_near_wrap", 2, 0x7FFF, 0xFFFFFEC0),
        ("seq_8000", 0, 0x8000, 0x80000000),
        ("ts_2_30", 1, 0x00FF, 0x40000000),
        ("bytes_ff00", 2, 0xFF00, 0xFF00FF00),
    ]
    out = []
    for name, codec, seq, ts in cases:
        buf = bytearray(8)
        dp.pack_header(buf, codec, seq, ts)
        expect = struct.pack(">BBHI", 1, codec, seq, ts)
        assert bytes(buf) == expect, name
        out.append({"name": name, "codec": codec, "seq": seq, "timestamp": ts, "hex": hx(buf)})
    return out


def ulaw_encode_samples():
    s = {0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 7, -7, 8, -8, 100, -100, 1000, -1000,
         12345, -12345, 32766, -32766, 32767, -32767, -32768}
    # segment edges: the biased 14-bit magnitude (|s| >> 2) + 33 crosses 64 << k
    for k in range(8):
        edge = (64 << k) - 33  # |s| >> 2 at the first value of segment k + 1
        for base in (edge * 4,):
            for d in (-5, -4, -1, 0, 1, 3, 4):
                v = base + d
                if 0 <= v <= 32767:
                    s.add(v)
                if -32768 <= -v <= 0:
                    s.add(-v)
    # the clip point: |s| >> 2 == 8159
    for v in (32632, 32635, 32636, 32639, 32640):
        s.add(v)
        s.add(-v)
    out = []
    for v in sorted(s):
        b = dp.ulaw_encode_sample(v)
        one = bytearray(1)
        dp.ulaw_encode_into(pcm_bytes([v]), one, 1)
        assert one[0] == b, v
        confirm(audioop.lin2ulaw(pcm_bytes([v]), 2) == bytes([b]), "lin2ulaw(%d)" % v)
        out.append({"name": "s%d" % v, "sample": v, "byte": b})
    return out


def ulaw_decode_values():
    out = []
    for u in range(256):
        pcm = bytearray(2)
        dp.ulaw_decode_into(bytes([u]), pcm, 1)
        v = struct.unpack("<h", bytes(pcm))[0]
        confirm(audioop.ulaw2lin(bytes([u]), 2) == bytes(pcm), "ulaw2lin(0x%02x)" % u)
        out.append({"name": "u%02x" % u, "byte": u, "sample": v})
    return out


def streams():
    """Consecutive frames through FrameEncoder, each frame's decode, per codec."""
    lcg = Lcg(12345)
    specs = [
        # name, codec, start seq, start timestamp, frame sample generator
        ("adpcm_sine440", 2, 0, 0, lambda k: sine(440, 16000, k * N)),
        ("adpcm_silence", 2, 100, 32000, lambda k: [0] * N),
        ("adpcm_square_full_scale", 2, 0xFFFE, 0xFFFFFD80, lambda k: square(40, k * N)),
        ("adpcm_noise_lcg", 2, 7, 2240, lambda k: lcg.samples()),
        ("adpcm_alternating_extremes", 2, 0, 0, lambda k: alternating(k * N)),
        ("adpcm_sine_then_silence", 2, 0, 0, lambda k: sine(1000, 30000, k * N) if k < 2 else [0] * N),
        ("ulaw_sine440", 1, 0xFFFF, 0xFFFFFFC0, lambda k: sine(440, 16000, k * N)),
        ("ulaw_noise_lcg", 1, 0, 0, lambda k: Lcg(99 + k).samples()),
        ("ulaw_square_full_scale", 1, 0, 0, lambda k: square(40, k * N)),
        ("pcm16_sine440", 0, 0xFFFE, 0xFFFFFEC0, lambda k: sine(440, 16000, k * N)),
    ]
    out = []
    for name, codec, seq, ts, gen in specs:
        enc = dp.FrameEncoder(codec)
        enc.seq = seq
        enc.timestamp = ts
        state = None  # audioop's ADPCM state
        frames = []
        for k in range(3):
            pcm = pcm_bytes(gen(k))
            frame = bytes(enc.encode(pcm))
            payload = frame[8:]
            decoded = bytearray(640)
            dp.check_frame(frame, codec)
            dp.decode_payload_into(codec, frame, decoded)
            if codec == dp.CODEC_ULAW:
                confirm(payload == audioop.lin2ulaw(pcm, 2), name + " frame %d encode" % k)
                confirm(bytes(decoded) == audioop.ulaw2lin(payload, 2), name + " frame %d decode" % k)
            elif codec == dp.CODEC_ADPCM:
                pred, index = state if state else (0, 0)
                confirm(payload[:4] == struct.pack("<hBB", pred, index, 0), name + " frame %d header" % k)
                codes, state = audioop.lin2adpcm(pcm, 2, state)
                confirm(swap_nibbles(payload[4:]) == codes, name + " frame %d codes" % k)
                ref, _ = audioop.adpcm2lin(codes, 2, (pred, index))
                confirm(bytes(decoded) == ref, name + " frame %d decode" % k)
            else:
                confirm(bytes(decoded) == pcm, name + " frame %d pcm" % k)
            frames.append({"pcm": hx(pcm), "frame": hx(frame), "decoded": hx(decoded)})
        out.append({"name": name, "codec": codec, "seq": seq, "timestamp": ts,
                    "end_seq": enc.seq, "end_timestamp": enc.timestamp, "frames": frames})
    return out


def frame_checks():
    def frame(kind, codec, seq, payload_len, fill=0):
        return bytes([kind, codec, seq >> 8, seq & 0xFF, 0, 0, 1, 64]) + bytes([fill]) * payload_len

    good_adpcm = bytearray(frame(1, 2, 9, 164))
    bad_index = bytearray(good_adpcm)
    bad_index[8 + 2] = 89
    cases = [
        ("empty", b"", 1),
        ("one_byte", b"\x01", 1),
        ("seven_bytes", frame(1, 1, 5, 0)[:7], 1),
        ("header_only", frame(1, 1, 5, 0), 1),
        ("kind_zero", frame(0, 1, 5, 320), 1),
        ("kind_two", frame(2, 1, 5, 320), 1),
        ("kind_ff", frame(0xFF, 1, 5, 320), 1),
        ("codec_pcm_for_ulaw", frame(1, 0, 5, 320), 1),
        ("codec_adpcm_for_pcm", frame(1, 2, 5, 640), 0),
        ("codec_3", frame(1, 3, 5, 164), 2),
        ("ulaw_319", frame(1, 1, 5, 319), 1),
        ("ulaw_321", frame(1, 1, 5, 321), 1),
        ("pcm_639", frame(1, 0, 5, 639), 0),
        ("pcm_641", frame(1, 0, 5, 641), 0),
        ("adpcm_163", frame(1, 2, 5, 163), 2),
        ("adpcm_165", frame(1, 2, 5, 165), 2),
        ("adpcm_sized_as_ulaw", frame(1, 2, 5, 320), 2),
        ("ok_pcm", frame(1, 0, 0, 640), 0),
        ("ok_ulaw", frame(1, 1, 0xFFFF, 320, 0xFF), 1),
        ("ok_adpcm", bytes(good_adpcm), 2),
        ("adpcm_index_89", bytes(bad_index), 2),
    ]
    out = []
    for name, data, codec in cases:
        v = {"name": name, "codec": codec, "hex": hx(data)}
        try:
            v["seq"] = dp.check_frame(data, codec)
        except dp.ProtocolError as e:
            v["error"] = e.code
        else:
            decoded = bytearray(640)
            try:
                dp.decode_payload_into(codec, data, decoded)
            except dp.ProtocolError as e:
                v["decode_error"] = e.code
            else:
                v["timestamp"] = dp.frame_timestamp(data)
        out.append(v)
    return out


def messages():
    big = lambda n: "x" * n
    dev = [
        # valid device messages
        ("hello_min", {"t": "hello", "v": 1, "token": "eyJ.abc.def", "codec": "adpcm"}),
        ("hello_full", {"t": "hello", "v": 1, "token": big(8192), "codec": "ulaw", "max_text": 4096,
                        "device": {"board": "esp32s3", "firmware": "0.1.0"}, "muted": False}),
        ("hello_unknown_field_ignored", {"t": "hello", "v": 1, "token": "t", "codec": "pcm16", "extra": [1, 2]}),
        ("resume", {"t": "resume", "v": 1, "session": "s" * 64, "key": "k" * 64}),
        ("resume_codec", {"t": "resume", "v": 1, "session": "s1", "key": "k1", "codec": "ulaw"}),
        ("data_text", {"t": "data", "topic": "chat", "text": "h\u00e9llo \u2713", "to": ["alice", "bob"], "reliable": False}),
        ("data_b64", {"t": "data", "b64": "AAEC/w=="}),
        ("data_max_payload", {"t": "data", "text": big(15360)}),
        ("data_16_destinations", {"t": "data", "text": "x", "to": ["p%d" % i for i in range(16)]}),
        ("rpc", {"t": "rpc", "id": "1", "to": "agent", "method": "m" * 64, "payload": "{}", "timeout_ms": 5000}),
        ("rpc_result_payload", {"t": "rpc_result", "id": "r1", "payload": "ok"}),
        ("rpc_result_error", {"t": "rpc_result", "id": "r1", "error": {"code": 1500, "message": "no"}}),
        ("rpc_result_error_code_max", {"t": "rpc_result", "id": "r1", "error": {"code": 2 ** 32 - 1, "message": ""}}),
        ("rpc_result_error_code_only", {"t": "rpc_result", "id": "r1", "error": {"code": 0}}),
        ("mute_true", {"t": "mute", "muted": True}),
        ("attributes_32", {"t": "attributes", "attributes": dict(("k%d" % i, big(100)) for i in range(32))}),
        ("attributes_value_1024_key_256", {"t": "attributes", "attributes": {big(256): big(1024)}}),
        ("attributes_empty", {"t": "attributes", "attributes": {}}),
        ("ping", {"t": "ping"}),
        ("ping_id", {"t": "ping", "id": 7}),
        ("leave", {"t": "leave", "reason": big(256)}),
        ("leave_bare", {"t": "leave"}),
        # invalid device messages
        ("missing_t", {"v": 1, "token": "t", "codec": "ulaw"}),
        ("t_not_string", {"t": 1}),
        ("t_null", {"t": None}),
        ("unknown_type", {"t": "shout"}),
        ("gateway_type_from_device", {"t": "welcome", "v": 1}),
        ("hello_missing_token", {"t": "hello", "v": 1, "codec": "ulaw"}),
        ("hello_missing_v", {"t": "hello", "token": "t", "codec": "ulaw"}),
        ("hello_v_string", {"t": "hello", "v": "1", "token": "t", "codec": "ulaw"}),
        ("hello_v_bool", {"t": "hello", "v": True, "token": "t", "codec": "ulaw"}),
        ("hello_v_float", {"t": "hello", "v": 1.0, "token": "t", "codec": "ulaw"}),
        ("hello_token_8193", {"t": "hello", "v": 1, "token": big(8193), "codec": "ulaw"}),
        ("hello_token_int", {"t": "hello", "v": 1, "token": 5, "codec": "ulaw"}),
        ("hello_device_not_object", {"t": "hello", "v": 1, "token": "t", "codec": "ulaw", "device": "esp32"}),
        ("hello_device_value_int", {"t": "hello", "v": 1, "token": "t", "codec": "ulaw", "device": {"board": 3}}),
        ("hello_device_9_entries", {"t": "hello", "v": 1, "token": "t", "codec": "ulaw",
                                    "device": dict(("k%d" % i, "v") for i in range(9))}),
        ("hello_muted_int", {"t": "hello", "v": 1, "token": "t", "codec": "ulaw", "muted": 0}),
        ("hello_max_text_null", {"t": "hello", "v": 1, "token": "t", "codec": "ulaw", "max_text": None}),
        ("resume_session_65", {"t": "resume", "v": 1, "session": "s" * 65, "key": "k"}),
        ("resume_missing_key", {"t": "resume", "v": 1, "session": "s"}),
        ("data_topic_129", {"t": "data", "topic": big(129), "text": "x"}),
        ("data_text_15361", {"t": "data", "text": big(15361)}),
        ("data_to_string", {"t": "data", "text": "x", "to": "alice"}),
        ("data_17_destinations", {"t": "data", "text": "x", "to": ["p%d" % i for i in range(17)]}),
        ("data_destination_257", {"t": "data", "text": "x", "to": [big(257)]}),
        ("data_destination_int", {"t": "data", "text": "x", "to": ["a", 2]}),
        ("data_reliable_int", {"t": "data", "text": "x", "reliable": 1}),
        ("rpc_missing_method", {"t": "rpc", "id": "1", "to": "agent"}),
        ("rpc_id_65", {"t": "rpc", "id": "i" * 65, "to": "a", "method": "m"}),
        ("rpc_to_257", {"t": "rpc", "id": "1", "to": big(257), "method": "m"}),
        ("rpc_method_65", {"t": "rpc", "id": "1", "to": "a", "method": "m" * 65}),
        ("rpc_payload_object", {"t": "rpc", "id": "1", "to": "a", "method": "m", "payload": {"a": 1}}),
        ("rpc_timeout_string", {"t": "rpc", "id": "1", "to": "a", "method": "m", "timeout_ms": "10"}),
        ("rpc_timeout_float", {"t": "rpc", "id": "1", "to": "a", "method": "m", "timeout_ms": 1.5}),
        ("rpc_result_id_int", {"t": "rpc_result", "id": 1, "payload": "ok"}),
        ("rpc_result_error_string", {"t": "rpc_result", "id": "1", "error": "boom"}),
        # an RPC error code is LiveKit's uint32
        ("rpc_result_error_code_2_32", {"t": "rpc_result", "id": "1", "error": {"code": 2 ** 32, "message": "m"}}),
        ("rpc_result_error_code_negative", {"t": "rpc_result", "id": "1", "error": {"code": -1, "message": "m"}}),
        ("rpc_result_error_code_string", {"t": "rpc_result", "id": "1", "error": {"code": "1500", "message": "m"}}),
        ("rpc_result_error_code_bool", {"t": "rpc_result", "id": "1", "error": {"code": True, "message": "m"}}),
        ("rpc_result_error_code_float", {"t": "rpc_result", "id": "1", "error": {"code": 1.0, "message": "m"}}),
        ("rpc_result_error_missing_code", {"t": "rpc_result", "id": "1", "error": {"message": "m"}}),
        ("rpc_result_error_message_int", {"t": "rpc_result", "id": "1", "error": {"code": 1, "message": 2}}),
        ("rpc_result_error_data_int", {"t": "rpc_result", "id": "1", "error": {"code": 1, "message": "", "data": 3}}),
        ("mute_int_1", {"t": "mute", "muted": 1}),
        ("mute_int_0", {"t": "mute", "muted": 0}),
        ("mute_string", {"t": "mute", "muted": "true"}),
        ("mute_missing", {"t": "mute"}),
        ("attributes_33", {"t": "attributes", "attributes": dict(("k%d" % i, "v") for i in range(33))}),
        ("attributes_value_1025", {"t": "attributes", "attributes": {"k": big(1025)}}),
        ("attributes_key_257", {"t": "attributes", "attributes": {big(257): "v"}}),
        ("attributes_value_int", {"t": "attributes", "attributes": {"k": 1}}),
        ("attributes_value_null", {"t": "attributes", "attributes": {"k": None}}),
        ("attributes_value_bool", {"t": "attributes", "attributes": {"k": True}}),
        ("attributes_list", {"t": "attributes", "attributes": [["k", "v"]]}),
        ("ping_id_string", {"t": "ping", "id": "7"}),
        ("ping_id_bool", {"t": "ping", "id": False}),
        ("leave_reason_257", {"t": "leave", "reason": big(257)}),
    ]
    gw = [
        ("welcome", {"t": "welcome", "v": 1, "session": "s", "key": "k", "grace_s": 15, "codec": "adpcm",
                     "room": {"name": "r", "sid": "RM_1", "metadata": ""},
                     "me": {"sid": "PA_1", "identity": "dev", "name": "Device"},
                     "participants": [{"sid": "PA_2", "identity": "agent", "name": "", "kind": "agent",
                                       "attributes": {}, "agent_state": "listening"}]}),
        ("resumed", {"t": "resumed", "session": "s", "participants": []}),
        ("joined", {"t": "joined", "p": {"sid": "PA_2", "identity": "a"}}),
        # trimmed to the device's max_text: what was left out is counted
        ("welcome_truncated", {"t": "welcome", "v": 1, "session": "s", "key": "k", "grace_s": 15, "codec": "ulaw",
                               "room": {"name": "r", "sid": "RM_1", "metadata": ""},
                               "me": {"sid": "PA_1", "identity": "dev", "name": ""},
                               "participants": [{"sid": "PA_2", "identity": "agent", "name": "", "kind": "agent"}],
                               "truncated": {"participants": 41, "attributes": 1, "metadata": True}}),
        ("resumed_truncated", {"t": "resumed", "session": "s", "participants": [], "truncated": {"participants": 9}}),
        ("joined_truncated", {"t": "joined", "p": {"sid": "PA_3", "identity": "b", "kind": "standard"},
                              "truncated": {"attributes": 1}}),
        ("left", {"t": "left", "identity": "a", "reason": "disconnected"}),
        ("attributes", {"t": "attributes", "identity": "a", "changed": {"x": "", "y": "2"}}),
        ("agent_state", {"t": "agent_state", "identity": "a", "state": "thinking"}),
        ("speakers", {"t": "speakers", "identities": ["a", "b"]}),
        ("speakers_64", {"t": "speakers", "identities": ["p%d" % i for i in range(64)]}),
        ("data_b64", {"t": "data", "from": "a", "topic": "t", "b64": "AAEC"}),
        ("rpc", {"t": "rpc", "id": "1", "from": "a", "method": "m", "payload": "", "timeout_ms": 10000}),
        ("rpc_result_error", {"t": "rpc_result", "id": "1", "error": {"code": 1, "message": "x", "data": "d"}}),
        ("token", {"t": "token", "token": "eyJ.x.y"}),
        ("pong", {"t": "pong", "id": 7}),
        ("dropped", {"t": "dropped", "what": "data", "size": 20000}),
        ("dropped_count", {"t": "dropped", "what": "audio", "count": 3}),
        ("error", {"t": "error", "code": "bad_frame", "message": "m", "fatal": False, "seq": 65535}),
        ("error_rpc", {"t": "error", "code": "rpc_failed", "message": "m", "fatal": False, "id": "r1"}),
        ("leave", {"t": "leave", "reason": "room closed"}),
        # invalid gateway messages
        ("device_type_from_gateway", {"t": "hello", "v": 1, "token": "t", "codec": "ulaw"}),
        ("welcome_missing_me", {"t": "welcome", "v": 1, "session": "s", "key": "k", "grace_s": 15,
                                "codec": "adpcm", "room": {}, "participants": []}),
        ("welcome_participants_not_objects", {"t": "welcome", "v": 1, "session": "s", "key": "k", "grace_s": 15,
                                              "codec": "adpcm", "room": {}, "me": {}, "participants": ["a"]}),
        ("resumed_participants_object", {"t": "resumed", "session": "s", "participants": {}}),
        ("speakers_65", {"t": "speakers", "identities": ["p%d" % i for i in range(65)]}),
        ("error_fatal_int", {"t": "error", "code": "x", "message": "m", "fatal": 1}),
        ("error_seq_bool", {"t": "error", "code": "x", "message": "m", "fatal": True, "seq": True}),
        ("error_message_513", {"t": "error", "code": "x", "message": big(513), "fatal": True}),
        ("leave_missing_reason", {"t": "leave"}),
        ("attributes_changed_33", {"t": "attributes", "identity": "a",
                                   "changed": dict(("k%d" % i, "v") for i in range(33))}),
        ("pong_id_string", {"t": "pong", "id": "7"}),
    ]
    raw = [
        # text that is not a JSON object, or over a limit; (name, direction, text, limit)
        ("empty_text", "device", "", None),
        ("not_json", "device", "hello", None),
        ("truncated_json", "device", '{"t": "ping"', None),
        ("single_quotes", "device", "{'t': 'ping'}", None),
        ("unquoted_key", "device", "{t: 1}", None),
        ("trailing_garbage", "device", '{"t": "ping"} x', None),
        ("two_objects", "device", '{"t": "ping"}{}', None),
        ("bad_literal", "device", '{"t": "ping", "id": tru}', None),
        ("json_array", "device", '["ping"]', None),
        ("json_string", "device", '"ping"', None),
        ("json_number", "device", "7", None),
        ("json_null", "device", "null", None),
        ("json_true", "gateway", "true", None),
        ("open_brace", "gateway", "{", None),
        ("whitespace_around", "device", '  {"t": "ping"}\n', None),
        ("escaped_unicode", "device", '{"t": "data", "text": "\\u00e9\\u2713"}', None),
        ("ping_id_exponent", "device", '{"t": "ping", "id": 1e3}', None),
        # 5000 levels: a RecursionError in CPython's json, parsed by MicroPython's; malformed on both
        ("deeply_nested", "device", '{"t": "ping", "id": ' + "[" * 5000 + "]" * 5000 + "}", None),
        ("deeply_nested_objects", "device", '{"t": "rpc_result", "id": "1", "error": ' + '{"a": ' * 2000 + "1"
         + "}" * 2000 + "}", None),
        # '{"t": "ping", "pad": "' + pad + '"}' is 24 characters + the pad
        ("too_large_16385", "device", '{"t": "ping", "pad": "' + big(16385 - 24) + '"}', None),
        ("at_limit_16384", "device", '{"t": "ping", "pad": "' + big(16384 - 24) + '"}', None),
        ("too_large_device_max_text", "gateway", '{"t": "pong", "pad": "' + big(1025 - 24) + '"}', 1024),
        ("at_device_max_text", "gateway", '{"t": "pong", "pad": "' + big(1024 - 24) + '"}', 1024),
    ]
    # text frames given as UTF-8 bytes (what a WebSocket library may hand over)
    raw_bytes = [
        ("bytes_escaped_unicode", "device", b'{"t": "data", "text": "h\\u00e9llo \\u2713"}', None),
        ("bytes_utf8", "device", u'{"t": "data", "text": "h\u00e9llo \u2713"}'.encode("utf-8"), None),
        # 5524 characters but 16524 bytes: the limit counts the bytes it is given
        ("bytes_too_large_multibyte", "device", (u'{"t": "ping", "pad": "' + u"\u2713" * 5500 + u'"}').encode("utf-8"), None),
        ("bytes_not_utf8", "device", b'{"t": "data", "text": "\xff\xfe"}', None),
    ]
    out = []
    for direction, cases in (("device", dev), ("gateway", gw)):
        for name, msg in cases:
            out.append((direction + "_" + name, direction, json.dumps(msg), None))
    for name, direction, text, limit in raw:
        out.append((direction + "_" + name, direction, text, limit))
    for name, direction, text, limit in raw_bytes:
        out.append((direction + "_" + name, direction, text, limit, True))
    vectors = []
    for case in out:
        name, direction, text, limit = case[:4]
        as_bytes = len(case) > 4
        schema = dp.DEVICE_MESSAGES if direction == "device" else dp.GATEWAY_MESSAGES
        v = {"name": name, "direction": direction}
        if as_bytes:
            data = text
            v["hex"] = hx(data)
        else:
            data = text
            v["text"] = text
        if limit is not None:
            v["limit"] = limit
        try:
            if limit is None:
                msg = dp.decode_message(data, schema)
            else:
                msg = dp.decode_message(data, schema, limit)
        except dp.ProtocolError as e:
            v["error"] = e.code
        else:
            v["type"] = msg["t"]
        vectors.append(v)
    return vectors


def seq_cases():
    pairs = [(0, 0), (1, 0), (0, 1), (0, 0xFFFF), (0xFFFF, 0), (5, 0xFFFB), (0xFFFB, 5),
             (0x7FFF, 0), (0x8000, 0), (0x8001, 0), (0, 0x8000), (0, 0x7FFF), (0x1234, 0x1233),
             (100, 200), (200, 100), (0xFFFF, 0xFFFE), (0x8000, 0xFFFF), (0xFFFF, 0x8000)]
    out = []
    for a, b in pairs:
        d = ((a - b + 0x8000) & 0xFFFF) - 0x8000  # independent formula
        newer = 0 < ((a - b) & 0xFFFF) < 0x8000
        assert dp.seq_distance(a, b) == d and dp.seq_newer(a, b) == newer, (a, b)
        out.append({"name": "%d_%d" % (a, b), "a": a, "b": b, "newer": newer, "distance": d})
    return out


def codec_ids():
    out = []
    for name in ("pcm16", "ulaw", "adpcm", "opus", "PCM16", ""):
        v = {"name": name or "empty", "codec": name}
        try:
            v["id"] = dp.codec_id(name)
        except dp.ProtocolError as e:
            v["error"] = e.code
        out.append(v)
    return out


def build():
    return {
        "about": "Test vectors for device/device_protocol.py (docs/device-protocol.md); "
                 "mu-law and ADPCM values confirmed against CPython's audioop. "
                 "Generated by tests/vectors/make_device_protocol_vectors.py; do not edit.",
        "headers": headers(),
        "ulaw_encode": ulaw_encode_samples(),
        "ulaw_decode": ulaw_decode_values(),
        "streams": streams(),
        "frame_checks": frame_checks(),
        "messages": messages(),
        "seq": seq_cases(),
        "codec_ids": codec_ids(),
    }


def dumps(data):
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def main(argv):
    text = dumps(build())
    if "--check" in argv:
        with open(OUT) as f:
            same = f.read() == text
        print("up to date" if same else "STALE: rerun without --check")
        return 0 if same else 1
    with open(OUT, "w") as f:
        f.write(text)
    data = json.loads(text)
    print("wrote %s: %s" % (OUT, ", ".join("%s %d" % (k, len(v)) for k, v in sorted(data.items()) if isinstance(v, list))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
