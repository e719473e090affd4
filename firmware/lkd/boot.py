# Startup: config and board from flash, watchdog, Wi-Fi, audio, session, app.

import asyncio
import gc
import sys
import machine
import device_protocol  # compile the large shared module first, on an empty heap
from lkd import VERSION, board as boards, config as configs
from lkd.device import Device, log, _unload  # one unloader for the firmware


def _read(path):
    with open(path, "rb") as f:
        return f.read()



async def _run(cfg, board, wdt):
    from lkd.ui import Led, Button
    led = Led(board["led"])
    led.show("connecting")
    ssl_ctx = None
    if cfg["ca"]:
        from lkd.ws import ssl_context
        ssl_ctx = ssl_context(_read(cfg["ca"]))
    token_fetch = None
    token_url = cfg["token_url"]
    device_key = cfg["device_key"]
    if token_url:
        async def token_fetch():
            from lkd.token import fetch  # only boards configured with a token_url load it (device.py unloads it)
            return await fetch(token_url, ssl_ctx, device_key)
    dev = Device(cfg, board, token_fetch=token_fetch, ssl_ctx=ssl_ctx)
    # audio buffers before anything fragments the heap
    from lkd.jitter import JitterBuffer, FrameRing
    from lkd.i2s_setup import open_audio, Unsupported, stop  # boot-time only: unloaded below
    dev.jb = JitterBuffer(size=dev.jb_slot_bytes)
    dev.jb.decode = dev.decode_into
    dev.ring = FrameRing(3)
    try:
        if board["codec"]:
            __import__("lkd.codecchip")  # only boards with codec chips load it
            sys.modules["lkd.codecchip"].setup(board["codec"])
            _unload("lkd.codecchip"[4:])  # sliced: a literal this short would be a qstr on every board
        dev.mic, dev.speaker = open_audio(board, dev.ring, dev.frame_ready, dev.speaker_pull)
    except Unsupported as e:
        await stop(e, board, led, wdt)  # this build cannot drive the board, or its chips do not answer
    open_audio = Unsupported = stop = None
    _unload("i2s_setup")
    dev.speaker.set_volume(cfg["volume"])
    dev.mic_gate = cfg["half_duplex"] or board["shared_pins"]
    button = Button(board["button"]) if cfg["push_to_talk"] and board["button"] else None
    if cfg["push_to_talk"] and button is None:
        log("push_to_talk needs a board with a button; ignored")
    if button:
        dev.muted = True
    wifi = cfg["wifi"]
    # everything is built: the parsed config and board files are not needed any more
    cfg = board = None
    try:
        import app  # user code on flash
        app.setup(dev)
        log("app loaded")
    except ImportError as e:
        if "app" not in str(e):
            log("app error %r" % e)
    except Exception as e:
        log("app error %r" % e)
    gc.collect()
    from lkd import net
    dev.wlan = await net.join(wifi["ssid"], wifi.get("password"), wdt.feed)
    net = wifi = None
    _unload("net")
    gc.collect()
    asyncio.create_task(dev.mic.run())
    asyncio.create_task(dev.speaker.run())
    asyncio.create_task(dev.run())
    tick = 0
    while True:
        await asyncio.sleep_ms(50)
        tick += 1
        if button:
            dev.set_muted(not button.pressed())
        if tick % 5 == 0:
            wdt.feed()
            if dev.stopped:
                led.show("stopped")
            elif not dev.online:
                led.show("connecting")
            elif dev.speaker.active or dev.agent_state == "speaking":
                led.show("speaking")
            elif dev.agent_state == "thinking":
                led.show("thinking")
            elif dev.agent_state == "listening" and not dev.muted:
                led.show("listening")
            else:
                led.show("idle")
            led.tick()
        if tick % 200 == 0:
            jb = dev.jb
            log("stats tx=%d rx=%d played=%d late=%d lost=%d underruns=%d target_ms=%d mic_drops=%d heap_free=%d"
                % (dev.tx_frames, dev.rx_frames, jb.played, jb.late, jb.lost, jb.underruns, jb.target * 20,
                   dev.ring.overflows, gc.mem_free()))


def main():
    global boards, configs
    cfg = configs.load("config.json", "refresh_token.json")  # and the token saved there
    board = boards.load("board.json")
    # the loaders are done: give their code back to the heap
    boards = configs = None
    _unload("board")
    _unload("config")
    gc.collect()
    from lkd.codec import IMPL
    log("boot firmware=%s board=%s chip=%s codec=%s codecs=%s"
        % (VERSION, board["name"], board["chip"], cfg["codec"], IMPL))
    wdt = machine.WDT(timeout=cfg["wdt_ms"])
    run = _run(cfg, board, wdt)
    cfg = board = None  # _run drops them once the device is built
    asyncio.run(run)
