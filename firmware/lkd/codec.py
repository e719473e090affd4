# The firmware's frame codecs: viper (lkd._codec_viper) where the port has the
# native emitter, else device_protocol's plain Python, which stays the
# reference (tests/mp/check_codec_viper.py holds the two to the same bytes).
# Same names and signatures as device_protocol's.
import device_protocol as dp

try:
    from lkd import _codec_viper as _v
except (ImportError, SyntaxError, ValueError, NotImplementedError):
    _v = None

if _v is None:
    IMPL = "python"
    FrameEncoder = dp.FrameEncoder
    ulaw_encode_into = dp.ulaw_encode_into
    ulaw_decode_into = dp.ulaw_decode_into
    adpcm_decode_into = dp.adpcm_decode_into
    decode_payload_into = dp.decode_payload_into
else:
    IMPL = "viper"
    _ulaw_enc = _v.ulaw_encode
    _ulaw_dec = _v.ulaw_decode
    _adpcm_enc = _v.adpcm_encode
    _adpcm_dec = _v.adpcm_decode

    def ulaw_encode_into(pcm, out, n):
        _ulaw_enc(pcm, out, n)

    def ulaw_decode_into(src, out, n, off=0):
        _ulaw_dec(src, out, n, off)

    def adpcm_decode_into(src, out, n, off=0):
        index = src[off + 2]
        if index > 88:
            raise dp.ProtocolError(dp.E_BAD_FRAME, "ADPCM step index %d is out of range 0..88" % index)
        _adpcm_dec(src, out, n, off)

    def decode_payload_into(codec, frame, out):
        if codec == dp.CODEC_ULAW:
            _ulaw_dec(frame, out, dp.FRAME_SAMPLES, dp.HEADER_BYTES)
        elif codec == dp.CODEC_ADPCM:
            adpcm_decode_into(frame, out, dp.FRAME_SAMPLES, dp.HEADER_BYTES)
        else:
            dp.decode_payload_into(codec, frame, out)

    class FrameEncoder(dp.FrameEncoder):
        """device_protocol.FrameEncoder with the mu-law and ADPCM payloads in viper."""

        def __init__(self, codec, buf=None):
            dp.FrameEncoder.__init__(self, codec, buf)
            self._state = 0  # ADPCM predictor | step index << 16, as _codec_viper keeps it

        def _encode_payload(self, pcm):
            codec = self.codec
            if codec == dp.CODEC_ULAW:
                _ulaw_enc(pcm, self._payload, dp.FRAME_SAMPLES)
            elif codec == dp.CODEC_ADPCM:
                self._state = _adpcm_enc(pcm, self._payload, dp.FRAME_SAMPLES, self._state)
            else:
                self._payload[:] = pcm
