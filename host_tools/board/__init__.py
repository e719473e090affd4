"""Board tools: what puts the firmware on a real ESP32 and checks it (`lkdevice flash`, `install`, `provision`, `monitor`, `doctor`)."""
