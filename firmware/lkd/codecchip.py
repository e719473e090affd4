# Codec chips that need I2C set-up before any sound (board file "codec"
# section; loaded at boot only by boards that have one, then unloaded).
# Drivers for the ES8311 (mono DAC, I2C 0x18 with CE low) and the ES7210
# (4-channel microphone ADC, 0x40 with AD0/AD1 low), both as I2S slaves of the
# ESP32 at 16 kHz, written from the register maps in Everest's datasheets and
# the clock tables of Espressif's public drivers; or a plain register list.

import time
from machine import I2C, Pin
from lkd.i2s_setup import Unsupported

_ENODEV = 19  # the ESP32 port's errno when nobody acknowledges the address


class _Chip:
    def __init__(self, i2c, addr, name):
        self.i2c = i2c
        self.addr = addr
        self.name = name
        self.b = bytearray(1)

    def _fail(self, e):
        if e.args and e.args[0] == _ENODEV:
            return Unsupported("%s at I2C 0x%02x does not answer (no ACK): check codec.i2c sda/scl and the address"
                               % (self.name, self.addr))
        return Unsupported("%s at I2C 0x%02x: %r" % (self.name, self.addr, e))

    def w(self, reg, val):
        self.b[0] = val
        try:
            self.i2c.writeto_mem(self.addr, reg, self.b)
        except OSError as e:
            raise self._fail(e)

    def r(self, reg):
        try:
            self.i2c.readfrom_mem_into(self.addr, reg, self.b)
        except OSError as e:
            raise self._fail(e)
        return self.b[0]


def es8311(c, d):
    """DAC for the speaker. Internal MCLK 4.096 MHz = 256 fs at 16 kHz, from the
    BCLK pin (64 fs: 32-bit slots, x4) or from the MCLK pin (256 fs, x1)."""
    i1, i2 = c.r(0xFD), c.r(0xFE)
    if (i1, i2) != (0x83, 0x11):
        raise Unsupported("%s at I2C 0x%02x answers chip id %02x%02x, not 8311" % (c.name, c.addr, i1, i2))
    bclk = d["mclk"] == "bclk"
    c.w(0x00, 0x1F)  # reset the digital blocks
    time.sleep_ms(20)
    c.w(0x00, 0x00)
    c.w(0x00, 0x80)  # power on, slave serial port
    c.w(0x01, 0xBF if bclk else 0x3F)  # all clocks on; bit 7: MCLK taken from BCLK
    c.w(0x02, 0x10 if bclk else 0x00)  # pre-divider 1, multiplier x4 (BCLK) or x1 (MCLK pin)
    c.w(0x03, 0x10)  # single speed, ADC oversampling 16
    c.w(0x04, 0x10)  # DAC oversampling 16
    c.w(0x05, 0x00)  # ADC and DAC clock dividers 1
    c.w(0x06, 0x03)  # BCLK divider 4 (used in master mode only), not inverted
    c.w(0x07, 0x00)  # LRCK divider 256 (high bits)
    c.w(0x08, 0xFF)  # (low byte: divider - 1)
    wl = 0x10 if d["bits"] == 32 else 0x0C  # word length: 32 or 16 bits, the ESP32's TX slot
    c.w(0x09, wl)  # serial data in: I2S
    c.w(0x0A, wl)  # serial data out: the same
    c.w(0x0D, 0x01)  # power up the analog circuits
    c.w(0x0E, 0x02)  # PGA and ADC modulator on
    c.w(0x12, 0x00)  # DAC powered up
    c.w(0x13, 0x10)  # output drive enabled
    c.w(0x1C, 0x6A)  # ADC: equalizer bypassed, DC offset cancelled
    c.w(0x37, 0x08)  # DAC equalizer bypassed
    c.w(0x32, max(0, min(0xFF, 0xBF + 2 * d["volume_db"])))  # DAC volume: 0xBF = 0 dB, 0.5 dB steps
    c.w(0x31, 0x00)  # DAC unmuted


def es7210(c, d):
    """ADC for microphones 1 and 2 (left and right of SDOUT1), I2S 32-bit words."""
    if c.r(0x3D) != 0x72:
        print("[lkd] codec %s at I2C 0x%02x: unexpected chip id; configuring anyway" % (c.name, c.addr))
    g = d["gain_db"]
    g = g // 3 if g <= 33 else 12 if g < 36 else 13 if g < 37 else 14  # PGA code: 3 dB steps, then 34.5/36/37.5
    c.w(0x00, 0xFF)  # reset everything
    c.w(0x00, 0x41)
    c.w(0x01, 0x3F)  # clocks off while configuring
    c.w(0x09, 0x30)  # chip state cycle
    c.w(0x0A, 0x30)  # power-on state cycle
    c.w(0x23, 0x2A)  # high-pass filters, ADC 1/2 and 3/4
    c.w(0x22, 0x0A)
    c.w(0x20, 0x0A)
    c.w(0x21, 0x2A)
    c.w(0x08, c.r(0x08) & 0xFE)  # slave: clocks come from the ESP32
    c.w(0x40, 0x43)  # analog: VDDA 3.3 V, VMID 5 kohm start
    c.w(0x41, 0x70)  # mic bias 1/2: 2.87 V
    c.w(0x42, 0x70)  # mic bias 3/4
    c.w(0x07, 0x20)  # oversampling
    c.w(0x02, 0xC1)  # main clock: DLL and doubler state cleared, ADC divider 1
    c.w(0x11, 0x80)  # serial port: I2S, 32-bit words (MicroPython's RX slot)
    c.w(0x12, 0x00)  # no TDM: two microphones on one line
    c.w(0x43, 0x10 | g)  # MIC1: PGA on, gain
    c.w(0x44, 0x10 | g)  # MIC2
    for reg in (0x47, 0x48, 0x49, 0x4A):
        c.w(reg, 0x08)  # per-mic power
    c.w(0x4B, 0x00)  # MIC1/2 bias, ADC and PGA powered
    c.w(0x4C, 0xFF)  # MIC3/4 off
    c.w(0x06, 0x00)  # out of power down
    c.w(0x01, 0x34)  # clocks on for ADC 1/2
    c.w(0x00, 0x71)  # restart the state machine
    c.w(0x00, 0x41)


def setup(codec):
    """Configure every chip of a validated board "codec" section; raises Unsupported."""
    i = codec["i2c"]
    i2c = I2C(i["id"], scl=Pin(i["scl"]), sda=Pin(i["sda"]), freq=i["freq"])
    for d in codec["chips"]:
        name = d.get("chip") or "codec"
        c = _Chip(i2c, d["addr"], name.upper())
        if name == "es8311":
            es8311(c, d)
        elif name == "es7210":
            es7210(c, d)
        else:
            c.r(0x00)  # present?
            for reg, val in d["init"]:
                c.w(reg, val)
        print("[lkd] codec %s at I2C 0x%02x ready" % (c.name, c.addr))
