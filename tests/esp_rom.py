"""A stand-in for an ESP32's ROM bootloader (and esptool's flasher stub) at the far end of a PTY.

It speaks the serial protocol esptool documents (SLIP frames: direction, command,
size, checksum, data; replies with a value and status bytes): SYNC, the
chip-detect reads (ESP32: the magic register; ESP32-S3: GET_SECURITY_INFO's
chip id), RAM upload of the stub (answered with OHAI), SPI attach, flash
writes (plain and deflated) into a bytearray that stands for the flash, and
SPI_FLASH_MD5 over it, so esptool's own verification checks what was written.
Hardware only is faked here: esptool runs unchanged.
"""

from __future__ import annotations

import hashlib
import os
import pty
import select
import struct
import threading
import tty
import zlib
from collections import deque
from dataclasses import dataclass

SYNC, READ_REG, WRITE_REG = 0x08, 0x0A, 0x09
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END = 0x10, 0x11, 0x12
SPI_FLASH_MD5, GET_SECURITY_INFO, ERASE_FLASH = 0x13, 0x14, 0xD0
INVALID_COMMAND = 0x05


@dataclass(frozen=True)
class ChipModel:
    name: str
    magic: int | None        # the value at 0x40001000 (chips detected by magic)
    chip_id: int | None      # GET_SECURITY_INFO's chip id (ESP32-S3 and later)
    spi_w0: int              # where a SPI flash command's answer is read


CHIP_MODELS = {
    "esp32": ChipModel("esp32", 0x00F01D83, None, 0x3FF42000 + 0x80),
    "esp32s3": ChipModel("esp32s3", None, 9, 0x60002000 + 0x58),
    "esp32c3": ChipModel("esp32c3", None, 5, 0x60002000 + 0x58),
}
CHIP_DETECT_MAGIC_REG = 0x40001000
FLASH_ID = 0x164020  # JEDEC: manufacturer 0x20, 4 MB


def slip(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class FakeRom:
    """`with FakeRom("esp32") as rom:` then give esptool `rom.port`; `rom.flash` is what was written."""

    def __init__(self, chip: str = "esp32", flash_size: int = 4 * 1024 * 1024, fail_writes_after: int | None = None):
        self.model = CHIP_MODELS[chip]
        self.fail_writes_after = fail_writes_after  # a flash that stops taking blocks (a bad cable, say)
        self._blocks_taken = 0
        self.flash = bytearray(b"\xff" * flash_size)
        self.commands: deque[int] = deque(maxlen=100_000)  # the commands received, in order
        self.stub = False
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-esp-rom")
        self._inflate = None
        self._write_at = 0
        self._block = 0

    def __enter__(self) -> "FakeRom":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self._master)
        os.close(self._slave)

    def wrote(self, command: int) -> bool:
        return command in self.commands

    # -- the wire ----------------------------------------------------------------------
    def _serve(self) -> None:
        frame, escaped, inside = bytearray(), False, False
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self._master, 65536)
            except OSError:
                return
            for b in data:
                if b == 0xC0:
                    if inside and frame:
                        self._packet(bytes(frame))
                    frame, inside = bytearray(), True
                    continue
                if not inside:
                    continue
                if escaped:
                    frame.append({0xDC: 0xC0, 0xDD: 0xDB}.get(b, b))
                    escaped = False
                elif b == 0xDB:
                    escaped = True
                else:
                    frame.append(b)

    def _send(self, packet: bytes) -> None:
        os.write(self._master, slip(packet))

    def _reply(self, op: int, value: int = 0, payload: bytes = b"", error: int = 0) -> None:
        # the ROM has 4 status bytes, the stub 2
        status = bytes([1 if error else 0, error]) + (b"" if self.stub else b"\0\0")
        data = payload + status
        self._send(struct.pack("<BBHI", 1, op, len(data), value) + data)

    # -- the commands ------------------------------------------------------------------
    def _packet(self, pkt: bytes) -> None:
        if len(pkt) < 8 or pkt[0] != 0:
            return
        _, op, size, _chk = struct.unpack("<BBHI", pkt[:8])
        data = pkt[8:8 + size]
        self.commands.append(op)
        handler = getattr(self, f"_op_{op:02x}", None)
        if handler is None:
            self._reply(op, error=INVALID_COMMAND)
        else:
            handler(op, data)

    def _op_08(self, op, data):  # SYNC: the ROM answers eight times, with a non-zero value
        for _ in range(8):
            self._reply(op, 0 if self.stub else 0x20120707)

    def _op_0a(self, op, data):  # READ_REG
        (addr,) = struct.unpack("<I", data[:4])
        value = 0
        if addr == CHIP_DETECT_MAGIC_REG and self.model.magic is not None:
            value = self.model.magic
        elif addr == self.model.spi_w0:
            value = FLASH_ID
        self._reply(op, value)

    def _op_14(self, op, data):  # GET_SECURITY_INFO: not in the ESP32's ROM
        if self.model.chip_id is None:
            self._reply(op, error=INVALID_COMMAND)
        else:
            self._reply(op, payload=struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.model.chip_id, 0))

    def _ack(self, op, data):
        self._reply(op)

    _op_09 = _op_0b = _op_0d = _op_05 = _op_07 = _op_0f = _ack  # WRITE_REG, SPI params/attach, RAM upload, baud

    def _op_06(self, op, data):  # MEM_END: the uploaded stub starts and says hello
        self._reply(op)
        self.stub = True
        self._send(b"OHAI")

    def _op_02(self, op, data):  # FLASH_BEGIN
        _erase, _blocks, self._block, self._write_at = struct.unpack("<IIII", data[:16])
        self._inflate = None
        self._reply(op)

    def _op_03(self, op, data):  # FLASH_DATA
        if self._refuse_block(op):
            return
        length, seq = struct.unpack("<II", data[:8])
        block = data[16:16 + length]
        start = self._write_at + seq * self._block
        self.flash[start:start + len(block)] = block
        self._reply(op)

    def _op_10(self, op, data):  # FLASH_DEFL_BEGIN
        _size, _blocks, _blocksize, self._write_at = struct.unpack("<IIII", data[:16])
        self._inflate = zlib.decompressobj()
        self._reply(op)

    def _refuse_block(self, op) -> bool:
        self._blocks_taken += 1
        if self.fail_writes_after is not None and self._blocks_taken > self.fail_writes_after:
            self._reply(op, error=0x08)
            return True
        return False

    def _op_11(self, op, data):  # FLASH_DEFL_DATA
        if self._refuse_block(op):
            return
        (length,) = struct.unpack("<I", data[:4])
        plain = self._inflate.decompress(data[16:16 + length])
        self.flash[self._write_at:self._write_at + len(plain)] = plain
        self._write_at += len(plain)
        self._reply(op)

    _op_04 = _op_12 = _ack  # FLASH_END, FLASH_DEFL_END

    def _op_13(self, op, data):  # SPI_FLASH_MD5: the stub sends the digest, the ROM its hex
        addr, size = struct.unpack("<II", data[:8])
        digest = hashlib.md5(self.flash[addr:addr + size])
        self._reply(op, payload=digest.digest() if self.stub else digest.hexdigest().encode())

    def _op_d0(self, op, data):  # ERASE_FLASH (stub)
        self.flash[:] = b"\xff" * len(self.flash)
        self._reply(op)
