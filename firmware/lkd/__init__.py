# lkdevice ESP32 firmware package. Kept empty but for the version so that
# importing one module does not pull in (and compile) the others.
VERSION = "0.1.0"
