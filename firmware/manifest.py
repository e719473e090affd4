# Frozen-firmware manifest for MicroPython's build (FROZEN_MANIFEST=...).
#
# Freezing puts the firmware's bytecode, constants and strings in the image
# (flash, read in place), so none of it is on the heap: what a board without
# PSRAM needs. See firmware/README.md ("Frozen firmware") for the commands:
#
#   esp32: make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/abs/path/firmware/manifest.py
#   unix:  make -C ports/unix MICROPY_PY_BTREE=0 MPY_CROSS_FLAGS=-march=x64 \
#              FROZEN_MANIFEST=/abs/path/firmware/manifest.py
#
# main.py, config.json, board.json (and app.py, a CA file) stay on the flash.
# Nothing of lkd/ or device_protocol may be left on the flash: "" comes before
# ".frozen" on sys.path, so a copy there would be loaded (onto the heap) instead.

import os
import sys


def _path_var(name):
    # makemanifest.py gets the build's path variables as "-v NAME=VALUE"; the
    # manifest API substitutes them in paths but does not hand them out.
    for i, arg in enumerate(sys.argv[:-1]):
        if arg in ("-v", "--var") and sys.argv[i + 1].startswith(name + "="):
            return sys.argv[i + 1][len(name) + 1:]
    return ""


# 1. What the port freezes by default, so that the image is the stock one plus
#    the firmware. On the esp32 port that is essential: its _boot.py mounts the
#    flash filesystem (and it brings neopixel, ssl, ...).
_port = os.path.basename(os.path.normpath(_path_var("PORT_DIR")))
_board = _path_var("BOARD_DIR")
if _port == "unix":
    # the standard variant's set: asyncio, ssl, mip
    include("$(PORT_DIR)/variants/standard/manifest.py")
elif _board and os.path.isfile(os.path.join(_board, "manifest.py")):
    include("$(BOARD_DIR)/manifest.py")
elif os.path.isfile(os.path.join(_path_var("PORT_DIR"), "boards", "manifest.py")):
    include("$(PORT_DIR)/boards/manifest.py")

# 2. asyncio, which the firmware runs on (a no-op when step 1 included it).
include("$(MPY_DIR)/extmod/asyncio")

# 3. The firmware: lkd/ and the device protocol shared with the gateway (one
#    source: the module the gateway imports, never a copy). opt=1 as
#    `lkdevice sim` and `lkdevice install` compile them. The viper modules need
#    the port's native arch in mpy-cross's flags: the esp32 port passes
#    -march=xtensawin itself, the unix port needs MPY_CROSS_FLAGS=-march=x64.
package("lkd", opt=1)
module("device_protocol.py", base_path="../device", opt=1)
