# Startup: config and board from flash, watchdog, Wi-Fi, audio, session, app.
# Then the supervision loop: the watchdog is fed only while every long-lived
# task makes progress (lkd/supervise.py), and Wi-Fi is rejoined when lost.

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



async def setup(cfg, board, wdt):
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
    try:
        import app  # user code on flash
        app.setup(dev)
        log("app loaded")
    except ImportError as e:
        if "app" not in str(e):
            log("app error %r" % e)
    except Exception as e:
        log("app error %r" % e)
    return dev, led, button, board["shared_pins"]


async def _run(cfg, board, wdt, wdt_ms):
    global setup, _read
    ssid = cfg["wifi"]["ssid"]
    password = cfg["wifi"].get("password")
    dev, led, button, shared = await setup(cfg, board, wdt)
    cfg = board = None
    setup = _read = None  # their code back to the heap: boot keeps only this loop
    from lkd.supervise import Supervisor
    from lkd.net import Wifi
    wifi = Wifi(ssid, password, False)  # joining; None while the link is up
    dev.wlan = wlan = wifi.wlan
    sup = Supervisor()
    gc.collect()
    mic = spk = ses = -1
    starving = False
    tick = 0
    # this loop is the LED/button task and the supervisor: if it stalls, nobody feeds the watchdog
    while True:
        await asyncio.sleep_ms(50)
        tick += 1
        try:
            if button:
                dev.set_muted(not button.pressed())
            if tick % 5:
                continue
            if wifi is None:
                if not wlan.isconnected():
                    dev.net(False)  # drop the session link now
                    from lkd.net import Wifi
                    wifi = Wifi(ssid, password, True)
            elif wifi.poll():
                wifi = Wifi = None
                _unload("net")  # its code back to the heap until the next loss
                dev.net(True)  # reconnect now, not at the end of a backoff
                if ses < 0:
                    # the tasks start once Wi-Fi is up; each is watched from then on
                    task = asyncio.create_task
                    if shared:  # one I2S peripheral, one direction at a time
                        mic = spk = sup.add("audio", 2000)
                        task(dev.mic.run())
                        task(dev.speaker.run())
                    else:
                        mic = sup.add("mic", 2000, task(dev.mic.run()))
                        spk = sup.add("speaker", 2000, task(dev.speaker.run()))
                    # the session: received messages, or sent frames when not muted, or a join
                    # step within its deadline (dev.expect)
                    ses = sup.add("session", 20000, task(dev.run()))
                    dev.expect = lambda timeout_ms, what: sup.expect(ses, timeout_ms, what)
            if ses >= 0:
                if shared:
                    sup.count(mic, dev.mic.frames + dev.speaker.frames)
                else:
                    sup.count(mic, dev.mic.frames)
                    sup.count(spk, dev.speaker.frames)
                if dev.online:
                    sup.count(ses, dev._last_rx if dev.muted else dev.tx_frames)
            if sup.poll():
                wdt.feed()
            elif not starving:
                starving = True
                log("watchdog not fed: reset within %d ms" % wdt_ms)
            if sup.failed:
                led.show("error")
            elif dev.stopped:
                led.show("stopped")
            elif not dev.online:
                led.show("connecting")
            elif dev.agent_speaking():
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
        except Exception as e:
            # the LED/button code failed: say so once, and feed no more
            if sup.failed is None:
                sup.failed = "fault task=ui reason=died error=%r" % e
                log(sup.failed)


def main():
    global boards, configs
    cfg = configs.load("config.json", "refresh_token.json")  # and the token saved there
    board = boards.load("board.json")
    # the loaders are done: give their code back to the heap
    boards = configs = None
    _unload("board")
    _unload("config")
    _unload("keep")  # loaded again at a token refresh
    gc.collect()
    from lkd.codec import IMPL
    log("boot firmware=%s board=%s chip=%s codec=%s codecs=%s"
        % (VERSION, board["name"], board["chip"], cfg["codec"], IMPL))
    if cfg["codec"] == "pcm16":
        _unload("codec")  # pcm16 needs no codec: its code back to the heap
        _unload("_codec_viper")
    wdt_ms = cfg["wdt_ms"]
    wdt = machine.WDT(timeout=wdt_ms)
    run = _run(cfg, board, wdt, wdt_ms)
    cfg = board = None  # _run drops them once the device is built
    asyncio.run(run)
