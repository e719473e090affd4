# Run tests/vectors/device_protocol.json through the device protocol module.
#
# The same file, unchanged, under both interpreters, so the two runs are
# literally the same checks:
#   MICROPYPATH=device micropython tests/mp/run_device_protocol_vectors.py [vectors.json]
#   python tests/mp/run_device_protocol_vectors.py [vectors.json]
# Prints one line per failing vector and a final "OK n" or "FAIL n" (n vectors
# run; FAIL counts the failures); exits 1 on any failure.
# tests/unit/test_device_protocol.py runs it under both, and imports it to run
# each vector as its own pytest case.

import binascii
import json
import sys

SECTIONS = ("headers", "ulaw_encode", "ulaw_decode", "streams", "frame_checks",
            "messages", "seq", "codec_ids")


def load_module():
    try:
        import device_protocol
    except ImportError:  # CPython with the package installed
        from lkdevice import device_protocol
    return device_protocol


def unhex(s):
    return binascii.unhexlify(s)


def tohex(b):
    return binascii.hexlify(bytes(b)).decode()


def hexdiff(got, want):
    """Where two hex strings first differ, as a short readable note."""
    n = min(len(got), len(want))
    i = 0
    while i < n and got[i] == want[i]:
        i += 1
    i -= i & 1
    if i == n and len(got) == len(want):
        return "equal"
    return "byte %d: %s, want %s (length %d, want %d)" % (
        i // 2, got[i:i + 16], want[i:i + 16], len(got) // 2, len(want) // 2)


def _protocol_error(dp, fn):
    """Run fn(); return the ProtocolError code it raised, or None."""
    try:
        fn()
    except dp.ProtocolError as e:
        return e.code
    return None


def check_header(dp, v):
    buf = bytearray(8)
    dp.pack_header(buf, v["codec"], v["seq"], v["timestamp"])
    if tohex(buf) != v["hex"]:
        return "pack_header gave %s, want %s" % (tohex(buf), v["hex"])
    if dp.frame_seq(buf) != v["seq"]:
        return "frame_seq read %d, want %d" % (dp.frame_seq(buf), v["seq"])
    if dp.frame_timestamp(buf) != v["timestamp"]:
        return "frame_timestamp read %d, want %d" % (dp.frame_timestamp(buf), v["timestamp"])
    return None


def check_ulaw_encode(dp, v):
    s = v["sample"]
    got = dp.ulaw_encode_sample(s)
    if got != v["byte"]:
        return "ulaw_encode_sample(%d) = 0x%02x, want 0x%02x" % (s, got, v["byte"])
    u = s & 0xFFFF
    pcm = bytearray(2)
    pcm[0] = u & 0xFF
    pcm[1] = u >> 8
    out = bytearray(1)
    dp.ulaw_encode_into(pcm, out, 1)
    if out[0] != v["byte"]:
        return "ulaw_encode_into(%d) = 0x%02x, want 0x%02x" % (s, out[0], v["byte"])
    return None


def check_ulaw_decode(dp, v):
    out = bytearray(2)
    dp.ulaw_decode_into(bytes([v["byte"]]), out, 1)
    got = out[0] | (out[1] << 8)
    if got & 0x8000:
        got -= 0x10000
    if got != v["sample"]:
        return "ulaw decode 0x%02x = %d, want %d" % (v["byte"], got, v["sample"])
    return None


def check_stream(dp, v):
    codec = v["codec"]
    enc = dp.FrameEncoder(codec)
    enc.seq = v["seq"]
    enc.timestamp = v["timestamp"]
    seq = v["seq"]
    ts = v["timestamp"]
    decoded = bytearray(dp.PCM_FRAME_BYTES)
    for k in range(len(v["frames"])):
        f = v["frames"][k]
        pcm = unhex(f["pcm"])
        frame = enc.encode(pcm)
        if tohex(frame) != f["frame"]:
            return "frame %d: encoded frame differs at %s" % (k, hexdiff(tohex(frame), f["frame"]))
        want = unhex(f["frame"])
        got_seq = dp.check_frame(want, codec)
        if got_seq != seq or dp.frame_timestamp(want) != ts:
            return "frame %d: seq/timestamp %d/%d, want %d/%d" % (k, got_seq, dp.frame_timestamp(want), seq, ts)
        # decode the stored frame on its own (a fresh buffer, no shared state)
        for i in range(len(decoded)):
            decoded[i] = 0x55
        dp.decode_payload_into(codec, want, decoded)
        if tohex(decoded) != f["decoded"]:
            return "frame %d: decoded PCM differs at %s" % (k, hexdiff(tohex(decoded), f["decoded"]))
        # and through the lower-level functions, on the bare payload
        payload = want[dp.HEADER_BYTES:]
        if codec == dp.CODEC_ULAW:
            out = bytearray(dp.FRAME_SAMPLES)
            dp.ulaw_encode_into(pcm, out, dp.FRAME_SAMPLES)
            if bytes(out) != payload:
                return "frame %d: ulaw_encode_into differs" % k
            dp.ulaw_decode_into(payload, decoded, dp.FRAME_SAMPLES)
            if tohex(decoded) != f["decoded"]:
                return "frame %d: ulaw_decode_into differs" % k
        elif codec == dp.CODEC_ADPCM:
            dp.adpcm_decode_into(payload, decoded, dp.FRAME_SAMPLES)
            if tohex(decoded) != f["decoded"]:
                return "frame %d: adpcm_decode_into differs" % k
        seq = (seq + 1) & 0xFFFF
        ts = (ts + dp.FRAME_SAMPLES) & 0xFFFFFFFF
    if enc.seq != v["end_seq"] or enc.timestamp != v["end_timestamp"]:
        return "encoder ended at seq %d timestamp %d, want %d %d" % (
            enc.seq, enc.timestamp, v["end_seq"], v["end_timestamp"])
    # an AdpcmEncoder started from the first frame's header state reproduces the stream
    if codec == dp.CODEC_ADPCM:
        first = unhex(v["frames"][0]["frame"])
        a = dp.AdpcmEncoder()
        p = first[8] | (first[9] << 8)
        a.predictor = p - 0x10000 if p & 0x8000 else p
        a.index = first[10]
        out = bytearray(dp.PAYLOAD_BYTES[codec])
        for k in range(len(v["frames"])):
            f = v["frames"][k]
            a.encode_into(unhex(f["pcm"]), out, dp.FRAME_SAMPLES)
            if tohex(out) != f["frame"][2 * dp.HEADER_BYTES:]:
                return "frame %d: AdpcmEncoder.encode_into differs" % k
    return None


def check_frame(dp, v):
    data = unhex(v["hex"])
    codec = v["codec"]
    got = []

    def run():
        got.append(dp.check_frame(data, codec))

    err = _protocol_error(dp, run)
    if err != v.get("error"):
        return "check_frame raised %s, want %s" % (err, v.get("error"))
    if err is None:
        if got[0] != v["seq"]:
            return "check_frame returned seq %d, want %d" % (got[0], v["seq"])
        out = bytearray(dp.PCM_FRAME_BYTES)
        err = _protocol_error(dp, lambda: dp.decode_payload_into(codec, data, out))
        if err != v.get("decode_error"):
            return "decode_payload_into raised %s, want %s" % (err, v.get("decode_error"))
        if err is None and dp.frame_timestamp(data) != v["timestamp"]:
            return "frame_timestamp %d, want %d" % (dp.frame_timestamp(data), v["timestamp"])
    return None


def check_message(dp, v):
    schema = dp.DEVICE_MESSAGES if v["direction"] == "device" else dp.GATEWAY_MESSAGES
    text = v["text"] if "text" in v else unhex(v["hex"])
    got = []

    def run():
        if "limit" in v:
            got.append(dp.decode_message(text, schema, v["limit"]))
        else:
            got.append(dp.decode_message(text, schema))

    err = _protocol_error(dp, run)
    if err != v.get("error"):
        return "decode_message raised %s, want %s" % (err, v.get("error"))
    if err is None:
        msg = got[0]
        if msg.get("t") != v["type"]:
            return "decoded type %r, want %r" % (msg.get("t"), v["type"])
        # what the module encodes it decodes again, unchanged
        again = dp.decode_message(dp.encode_message(msg), schema, 1 << 20)
        if again != msg:
            return "encode_message/decode_message round trip changed the message"
    return None


def check_seq(dp, v):
    a, b = v["a"], v["b"]
    if dp.seq_newer(a, b) != v["newer"]:
        return "seq_newer(%d, %d) = %r, want %r" % (a, b, dp.seq_newer(a, b), v["newer"])
    if dp.seq_distance(a, b) != v["distance"]:
        return "seq_distance(%d, %d) = %d, want %d" % (a, b, dp.seq_distance(a, b), v["distance"])
    return None


def check_codec_id(dp, v):
    got = []
    err = _protocol_error(dp, lambda: got.append(dp.codec_id(v["codec"])))
    if err != v.get("error"):
        return "codec_id(%r) raised %s, want %s" % (v["codec"], err, v.get("error"))
    if err is None and got[0] != v["id"]:
        return "codec_id(%r) = %d, want %d" % (v["codec"], got[0], v["id"])
    return None


CHECKS = {
    "headers": check_header,
    "ulaw_encode": check_ulaw_encode,
    "ulaw_decode": check_ulaw_decode,
    "streams": check_stream,
    "frame_checks": check_frame,
    "messages": check_message,
    "seq": check_seq,
    "codec_ids": check_codec_id,
}


def cases(data):
    """(id, section, vector) for every vector, in file order."""
    out = []
    for section in SECTIONS:
        for v in data[section]:
            out.append((section + "/" + v["name"], section, v))
    return out


def check(dp, section, v):
    """None when the vector passes, else a one-line reason."""
    try:
        return CHECKS[section](dp, v)
    except Exception as e:  # an unexpected exception is a failure, not a crash
        return "raised %s: %s" % (type(e).__name__, e)


def default_path():
    here = __file__.replace("\\", "/")
    i = here.rfind("/")
    d = here[:i] if i >= 0 else "."
    return d + "/../vectors/device_protocol.json"


def load(path):
    with open(path) as f:
        return json.load(f)


def run(dp, data, out=print):
    failures = 0
    all_cases = cases(data)
    for name, section, v in all_cases:
        why = check(dp, section, v)
        if why is not None:
            failures += 1
            out("FAIL %s: %s" % (name, why))
    return len(all_cases), failures


def main(argv):
    path = argv[1] if len(argv) > 1 else default_path()
    n, failures = run(load_module(), load(path))
    if failures:
        print("FAIL %d of %d" % (failures, n))
        return 1
    print("OK %d" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
