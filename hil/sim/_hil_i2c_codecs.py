# Simulated I2C bus with codec chips, the `machine.I2C` of hil/sim/machine.py
# (loaded on first use). LKD_HIL_I2C: the devices on the bus, "ADDR=CHIP,..."
# (default: an ESP32-S3-BOX-3's ES8311 at 0x18 and ES7210 at 0x40; "" for
# none). A chip answers its ID registers; an absent address NACKs with
# OSError(ENODEV) as the ESP32 port does. LKD_HIL_I2C_LOG: every transfer, one
# line "w|r ADDR REG VALUE".

import os

_I2C_IDS = {"es8311": ((0xFD, 0x83), (0xFE, 0x11)), "es7210": ((0x3D, 0x72), (0x3E, 0x10))}
_ENODEV = 19


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("invalid id")
        self.freq = freq
        self.devices = {}
        spec = os.getenv("LKD_HIL_I2C")
        if spec is None:
            spec = "0x18=es8311,0x40=es7210"
        for item in spec.split(","):
            addr, _, chip = item.strip().partition("=")
            if addr:
                regs = bytearray(256)
                for reg, val in _I2C_IDS.get(chip, ()):
                    regs[reg] = val
                self.devices[int(addr, 0)] = regs
        path = os.getenv("LKD_HIL_I2C_LOG")
        self._log = open(path, "a") if path else None

    def _regs(self, addr):
        regs = self.devices.get(addr)
        if regs is None:
            raise OSError(_ENODEV)  # nobody acknowledged the address
        return regs

    def _note(self, op, addr, reg, val):
        if self._log:
            self._log.write("%s 0x%02x 0x%02x 0x%02x\n" % (op, addr, reg, val))

    def scan(self):
        return sorted(self.devices)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        regs = self._regs(addr)
        for i in range(len(buf)):
            reg = (memaddr + i) & 0xFF
            regs[reg] = buf[i]
            self._note("w", addr, reg, buf[i])

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        regs = self._regs(addr)
        for i in range(len(buf)):
            reg = (memaddr + i) & 0xFF
            buf[i] = regs[reg]
            self._note("r", addr, reg, buf[i])

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto(self, addr, buf, stop=True):
        self._regs(addr)
        if len(buf):
            self.writeto_mem(addr, buf[0], memoryview(buf)[1:])
        return len(buf)
