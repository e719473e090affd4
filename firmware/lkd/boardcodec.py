# The "codec" section of a board file (codec chips set up over I2C at boot by
# lkd.codecchip), checked by lkd.board only for boards that have one. Plain
# Python so CPython tests can validate them too.

try:
    from lkd.board import BoardError, _req
except ImportError:
    pass  # run by a board.py loaded on its own, which hands them in

_CHIPS = ("es8311", "es7210")


def validate(c, spk):
    """The validated section, defaults filled; raises BoardError naming the field."""
    if not isinstance(c, dict):
        raise BoardError("codec: must be an object")
    i2c = _req(c, "codec", "i2c", None)
    if not isinstance(i2c, dict):
        raise BoardError("codec.i2c: must be an object {id, sda, scl, freq}")
    i2c["id"] = i2c.get("id", 0)
    if i2c["id"] not in (0, 1):
        raise BoardError("codec.i2c.id: %r is not 0 or 1" % (i2c["id"],))
    _req(i2c, "codec.i2c", "sda", "pin")
    _req(i2c, "codec.i2c", "scl", "pin")
    freq = i2c.get("freq", 100000)
    if not isinstance(freq, int) or isinstance(freq, bool) or not 10000 <= freq <= 1000000:
        raise BoardError("codec.i2c.freq: %r is not 10000..1000000 Hz" % (freq,))
    i2c["freq"] = freq
    chips = _req(c, "codec", "chips", None)
    if not isinstance(chips, list) or not chips:
        raise BoardError("codec.chips: must be a non-empty list")
    for n, d in enumerate(chips):
        where = "codec.chips[%d]" % n
        if not isinstance(d, dict):
            raise BoardError("%s: must be an object" % where)
        addr = _req(d, where, "addr", "int")
        if not 0x08 <= addr <= 0x77:
            raise BoardError("%s.addr: %r is not a 7-bit I2C address 0x08..0x77" % (where, addr))
        chip = d.get("chip")
        if chip is None:
            # a plain register sequence: [[reg, value], ...] written in order
            init = _req(d, where, "init", None)
            if not isinstance(init, list) or not all(
                    isinstance(p, list) and len(p) == 2 and all(isinstance(x, int) and 0 <= x <= 255 for x in p)
                    for p in init):
                raise BoardError("%s.init: must be a list of [register, value] byte pairs" % where)
            continue
        if chip not in _CHIPS:
            raise BoardError("%s.chip: %r is not one of %s (or give an init sequence)" % (where, chip,
                                                                                       ", ".join(_CHIPS)))
        if chip == "es8311":
            vol = d.get("volume_db", 0)
            if not isinstance(vol, int) or isinstance(vol, bool) or not -95 <= vol <= 32:
                raise BoardError("%s.volume_db: %r is not -95..32" % (where, vol))
            d["volume_db"] = vol
            clk = d.get("mclk", "bclk")
            if clk not in ("bclk", "pin"):
                raise BoardError("%s.mclk: %r is neither 'bclk' nor 'pin'" % (where, clk))
            d["mclk"] = clk
            d["bits"] = spk["bits"]  # the serial port's word length follows the speaker's slots
            if clk == "bclk" and spk["bits"] != 32:
                # MicroPython's RX always clocks 32-bit slots (64 fs); the DAC's dividers assume the same in TX
                raise BoardError("%s.mclk: 'bclk' needs speaker.bits 32 (BCLK = 64 x rate)" % where)
            if clk == "pin" and spk["mck"] is None:
                raise BoardError("%s.mclk: 'pin' needs speaker.mck (the MCLK GPIO)" % where)
        else:
            gain = d.get("gain_db", 30)
            if not isinstance(gain, int) or isinstance(gain, bool) or not 0 <= gain <= 37:
                raise BoardError("%s.gain_db: %r is not 0..37" % (where, gain))
            d["gain_db"] = gain
    return c
