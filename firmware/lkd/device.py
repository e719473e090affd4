# Device protocol client: session, resume, reconnect, audio streaming, data,
# RPC and the API that user code (app.py) gets. Spec: docs/device-protocol.md.

import asyncio
import binascii
import gc
import json
import random
import time
from micropython import const
import device_protocol as dp
from lkd import VERSION
fcodec = None  # lkd.codec (viper mu-law/ADPCM, ~1.9 KB of heap): loaded for those codecs only
from lkd.ws import WebSocket, WsClosed, WsError, OP_TEXT, OP_BINARY

_PING_MS = const(5000)
_SILENT_MS = const(15000)  # the gateway answers pings; this long without a byte: dead link
_RX_TEXT = const(4096)  # our hello.max_text
_BACKOFF_MIN = const(250)
_BACKOFF_MAX = const(15000)
_MAX_PARTICIPANTS = const(16)  # identities kept; agents first
# how long each step of joining may take before the board is deemed hung
# (the supervisor stops feeding the watchdog past it); above the steps' own timeouts
_TOKEN_MS = const(30000)
_CONNECT_MS = const(30000)  # DNS + TCP (+ TLS) + WebSocket handshake
_HELLO_MS = const(25000)  # hello -> welcome (20 s wait)


class RpcError(Exception):
    """Raise from an RPC handler to answer with an error; raised by perform_rpc."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def log(line):
    print("[lkd] " + line)


def _unload(name):
    # give a rarely used module's code back to the heap
    import sys
    import lkd
    sys.modules.pop("lkd." + name, None)
    try:
        delattr(lkd, name)
    except (AttributeError, KeyError):  # KeyError: MicroPython's, for a name never set (a failed import)
        pass


def _short(s, n=200):
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[:n] + "..."


class Device:
    """One device in one room, through the gateway. What app.py's setup(device) gets."""

    def __init__(self, cfg, board, token_fetch=None, ssl_ctx=None):
        # only what the session needs from the config and board files: boot
        # drops the parsed files once everything is built
        self.board = {"name": board["name"], "chip": board["chip"]}
        self.codec = codec = dp.codec_id(cfg["codec"])
        self.url = cfg["gateway"]
        self._token_fetch = token_fetch
        self.stopped = None  # why the board stopped rejoining (lkd.stop), else None
        self.token = cfg["token"]
        # [nbf, exp] of the token saved on flash, the digest naming the token it
        # descends from, whether self.token is config.json's own (or token_url's),
        # stopped_poll_s: lkd/config.py; one attribute, as each name costs a qstr
        self._saved = cfg.get("_saved") or [0, 0, "", True, 30]
        self._ssl = ssl_ctx
        payload = dp.PAYLOAD_BYTES[codec]
        self.frame_bytes = n = dp.HEADER_BYTES + payload
        self.ws = ws = WebSocket(rx_limit=_RX_TEXT, tx_max=dp.MAX_BINARY_FRAME)
        # the encoder writes each frame straight into the socket's audio slot
        global fcodec
        if codec != dp.CODEC_PCM16 and fcodec is None:
            from lkd import codec as fcodec
        self.enc = (fcodec or dp).FrameEncoder(codec, ws.tx_payload(n))
        # the jitter buffer keeps frames encoded, slots sized for the negotiated codec
        self.jb_slot_bytes = payload
        self._rx_frame = ws.rxmv[:n]
        self._rx_payload = ws.rxmv[dp.HEADER_BYTES:n]
        self.session = None
        self.key = None
        self.grace_ms = 0
        self.dropped_at = 0
        self.identity = None
        self.room = None
        self.participants = {}  # identity -> kind, at most _MAX_PARTICIPANTS
        self.untracked = 0  # participants seen but not kept (the map was full)
        self.agent_state = None
        self.online = False
        self.muted = False
        self.mic_gate = False  # half duplex: mic closed while the agent talks
        self.wlan = None
        self.mic = None
        self.speaker = None
        self.jb = None
        self.ring = None
        self._frame_ready = asyncio.Event()
        ws.room_event = self._frame_ready  # the writer took a frame: send the next
        self._handlers = {}
        self._rpc = {"lkdevice.info": self._rpc_info, "lkdevice.set_volume": self._rpc_set_volume}
        self._calls = {}
        self._call_id = 0
        self._ping_id = 0
        self._last_rx = 0
        self.tx_frames = 0
        self.rx_frames = 0
        self.bad_frames = 0
        self.started = time.ticks_ms()
        self._wake = asyncio.Event()  # cuts a reconnect backoff short (Wi-Fi is back)

    # --- the app API

    def on(self, event, handler):
        """Call handler(*args) on an event: welcome, resumed, joined, left,
        agent_state, attributes, speakers, data, token, error, leave, online, offline."""
        self._handlers.setdefault(event, []).append(handler)

    def register_rpc(self, method, handler):
        """handler(caller_identity, payload) -> str (or a coroutine); raise RpcError to fail."""
        self._rpc[method] = handler

    def send_data(self, payload, topic=None, to=None, reliable=True):
        msg = {"t": "data"}
        if isinstance(payload, str):
            msg["text"] = payload
        else:
            try:
                msg["text"] = bytes(payload).decode()
            except UnicodeError:
                msg["b64"] = binascii.b2a_base64(payload)[:-1].decode()
        if topic is not None:
            msg["topic"] = topic
        if to:
            msg["to"] = list(to) if not isinstance(to, str) else [to]
        if not reliable:
            msg["reliable"] = False
        return self._send(msg)

    def set_attributes(self, attributes):
        return self._send({"t": "attributes", "attributes": attributes})

    def set_muted(self, muted):
        if muted != self.muted:
            self.muted = muted
            log("mute muted=%d" % muted)
            if self.online:
                self._send({"t": "mute", "muted": muted}, True)

    async def perform_rpc(self, to, method, payload="", timeout_ms=10000):
        """Call `method` on participant `to`; returns the response payload or raises RpcError."""
        self._call_id += 1
        cid = "d%d" % self._call_id
        ev = asyncio.Event()
        slot = [ev, None]
        self._calls[cid] = slot
        if not self._send({"t": "rpc", "id": cid, "to": to, "method": method, "payload": payload,
                           "timeout_ms": timeout_ms}):
            del self._calls[cid]
            raise RpcError(1503, "device is offline" if not self.online else "send queue full")
        try:
            await asyncio.wait_for_ms(ev.wait(), timeout_ms + 2000)
        except asyncio.TimeoutError:
            raise RpcError(1502, "response timeout")
        finally:
            self._calls.pop(cid, None)
        res = slot[1]
        err = res.get("error")
        if err:
            raise RpcError(err.get("code", 1500), err.get("message", ""), err.get("data"))
        return res.get("payload", "")

    # --- internals

    def _emit(self, event, *args):
        for h in self._handlers.get(event, ()):
            try:
                r = h(*args)
                if r is not None and hasattr(r, "send"):
                    asyncio.create_task(r)
            except Exception as e:
                log("app error in %s handler: %r" % (event, e))

    def _send(self, msg, essential=False):
        if not self.online:
            return False
        try:
            if self.ws.send_text(json.dumps(msg), essential):
                return True
            log("dropped what=%s (send queue full)" % msg["t"])
            return False
        except (OSError, WsError) as e:
            log("send failed: %r" % e)
            return False

    def expect(self, timeout_ms, what):
        """This step of joining may take timeout_ms (0: joined; -1: no deadline,
        not rejoining on purpose). Boot replaces it with the supervisor's, which
        stops feeding the watchdog past the deadline."""

    def net(self, on):
        """Wi-Fi came back (reconnect now) or is gone (drop the link now)."""
        if on:
            self._wake.set()
        else:
            self.ws._fail("wifi connection lost")

    def frame_ready(self):
        # the mic committed a frame; wake the sender
        self._frame_ready.set()

    def speaker_pull(self, buf):
        return self.jb.pop_into(buf)

    def decode_into(self, payload, out):
        # a jitter buffer slot (one frame's payload) into 640 bytes of PCM
        codec = self.codec
        if codec == dp.CODEC_PCM16:
            out[:] = payload
        elif codec == dp.CODEC_ULAW:
            fcodec.ulaw_decode_into(payload, out, dp.FRAME_SAMPLES)
        else:
            fcodec.adpcm_decode_into(payload, out, dp.FRAME_SAMPLES)

    def _rpc_info(self, caller, payload):
        gc.collect()
        try:
            rssi = self.wlan.status("rssi")
        except Exception:
            rssi = None
        return json.dumps({"board": self.board["name"], "chip": self.board["chip"], "firmware": VERSION,
                           "codec": dp.CODEC_NAMES[self.codec], "codec_implementation": fcodec.IMPL if fcodec else None,
                           "heap_free": gc.mem_free(),
                           "heap_alloc": gc.mem_alloc(), "rssi": rssi,
                           "uptime_s": time.ticks_diff(time.ticks_ms(), self.started) // 1000,
                           "volume": self.speaker.gain * 100 // 256 if self.speaker else None})

    def _rpc_set_volume(self, caller, payload):
        v = payload.strip()
        if v.startswith("{"):
            v = json.loads(v).get("volume")
        try:
            v = int(v)
        except (TypeError, ValueError):
            raise RpcError(1500, "volume must be 0..100")
        v = self.speaker.set_volume(v)
        log("volume %d" % v)
        return str(v)

    async def _answer_rpc(self, m):
        rid = m["id"]
        method = m["method"]
        caller = m["from"]
        log("rpc from=%s method=%s id=%s" % (caller, method, rid))
        h = self._rpc.get(method)
        res = {"t": "rpc_result", "id": rid}
        if h is None:
            res["error"] = {"code": 1400, "message": "Method not supported at destination"}
        else:
            try:
                r = h(caller, m.get("payload", ""))
                if r is not None and hasattr(r, "send"):
                    r = await r
                res["payload"] = "" if r is None else str(r)
            except RpcError as e:
                res["error"] = {"code": e.code, "message": e.message}
            except Exception as e:
                res["error"] = {"code": 1500, "message": "Application error in method handler: %r" % e}
        log("rpc_result id=%s %s" % (rid, "error=%s" % res["error"]["code"] if "error" in res else "ok"))
        self._send(res, True)  # the caller waits for it: it gets out or the link is given up

    def agent_speaking(self):
        # an agent's own state wins over the speaker: a LiveKit Agents session keeps its
        # track sending between turns, so "frames arrive" does not mean "it speaks"
        s = self.agent_state
        return s == "speaking" if s else self.speaker.active

    def _set_agent_state(self, identity, state):
        self.agent_state = state
        log("agent_state agent=%s state=%s" % (identity, state))
        self._emit("agent_state", identity, state)

    def _track(self, p):
        # keep identity -> kind only; when full an agent displaces a non-agent,
        # anyone else goes uncounted (the gateway's events still reach the app)
        ps = self.participants
        ident = p.get("identity")
        kind = p.get("kind")
        if ident not in ps and len(ps) >= _MAX_PARTICIPANTS:
            victim = None
            if kind == "AGENT":
                for i, k in ps.items():
                    if k != "AGENT":
                        victim = i
                        break
            if victim is None:
                self.untracked += 1
                return
            del ps[victim]
            self.untracked += 1
        ps[ident] = kind

    def _participants(self, plist):
        self.participants = {}
        self.untracked = 0
        for p in plist:
            self._track(p)
            if p.get("agent_state"):
                self._set_agent_state(p.get("identity"), p["agent_state"])

    def _handle(self, m):
        t = m["t"]
        if t == "data":
            if "text" in m:
                what = "text=" + _short(m["text"])
                payload = m["text"]
            else:
                payload = binascii.a2b_base64(m.get("b64", ""))
                what = "bytes=%d" % len(payload)
            log("data from=%s topic=%s %s" % (m.get("from"), m.get("topic"), what))
            self._emit("data", payload, m.get("from"), m.get("topic"))
        elif t == "rpc":
            asyncio.create_task(self._answer_rpc(m))
        elif t == "rpc_result":
            log("rpc_result id=%s %s" % (m["id"], "error=%s" % m["error"].get("code") if m.get("error") else "ok"))
            slot = self._calls.get(m["id"])
            if slot:
                slot[1] = m
                slot[0].set()
        elif t == "agent_state":
            self._set_agent_state(m["identity"], m["state"])
        elif t == "joined":
            p = m["p"]
            self._track(p)
            log("joined identity=%s kind=%s" % (p.get("identity"), p.get("kind")))
            self._emit("joined", p)
            if p.get("agent_state"):
                self._set_agent_state(p.get("identity"), p["agent_state"])
        elif t == "left":
            self.participants.pop(m["identity"], None)
            log("left identity=%s reason=%s" % (m["identity"], m.get("reason")))
            self._emit("left", m["identity"], m.get("reason"))
        elif t == "attributes":
            log("attributes identity=%s changed=%s" % (m["identity"], ",".join(m["changed"])))
            self._emit("attributes", m["identity"], m["changed"])
        elif t == "speakers":
            self._emit("speakers", m["identities"])
        elif t == "token":
            self.token = m["token"]  # newest token, for the next hello
            log("token refreshed")
            try:
                from lkd.keep import keep  # loaded for this only; small pieces of code (not config.py's)
                keep(self)
            except MemoryError as e:  # kept for the next hello all the same; not worth the link
                log("token not saved: %r" % e)
            _unload("keep")
            self._emit("token", self.token)
        elif t == "pong":
            pass
        elif t == "dropped":
            log("dropped what=%s size=%s count=%s" % (m["what"], m.get("size"), m.get("count")))
        elif t == "error":
            log("error code=%s fatal=%d message=%s" % (m["code"], m["fatal"], _short(m["message"])))
            self._emit("error", m["code"], m["message"], m["fatal"])
            if m["fatal"]:
                return m["code"]
        elif t == "leave":
            r = m["reason"]
            log("leave reason=%s" % r)
            self.session = None
            # LiveKit DisconnectReason names (the gateway's "room left: NAME") that
            # rejoining would not change, or would make worse: a duplicate identity
            # rejoining throws the other one out, and so on forever (lkd/stop.py)
            for name in ("PARTICIPANT_REMOVED", "DUPLICATE_IDENTITY", "ROOM_DELETED"):
                if name in r:
                    self.stopped = name
            self._emit("leave", m["reason"])
            return "leave"
        return None

    def _decode(self, n):
        """The text message in ws.rx[:n], validated; None for unknown types."""
        m = json.loads(self.ws.rxmv[:n])
        t = m.get("t") if isinstance(m, dict) else None
        if t not in dp.GATEWAY_MESSAGES:
            return None  # newer gateway: unknown types are ignored
        dp.validate(m, dp.GATEWAY_MESSAGES)
        return m

    def _on_audio(self, n):
        # views made once: slicing rx here would allocate on every frame
        frame = self._rx_frame
        try:
            if n != self.frame_bytes:
                raise dp.ProtocolError(dp.E_BAD_FRAME, "length")
            seq = dp.check_frame(frame, self.codec)
        except dp.ProtocolError:
            self.bad_frames += 1
            return
        if self.codec == dp.CODEC_ADPCM and frame[dp.HEADER_BYTES + 2] > 88:
            self.bad_frames += 1  # ADPCM step index out of range: checked now, decoded when played
            return
        slot = self.jb.put(seq, time.ticks_ms())
        if slot is not None:
            slot[:] = self._rx_payload  # kept encoded until it is played
        self.rx_frames += 1

    async def _connect(self):
        if not self.token and self._token_fetch:
            self.expect(_TOKEN_MS, "token_url")
            try:
                self.token = await self._token_fetch()
            finally:
                _unload("token")  # loaded again for the next fetch
            self._saved[3] = True
        log("connecting url=%s" % self.url)
        self.expect(_CONNECT_MS, "connect")
        await self.ws.connect(self.url, self._ssl)
        self.expect(_HELLO_MS, "hello")
        self._last_rx = time.ticks_ms()
        resuming = self.session is not None and \
            time.ticks_diff(time.ticks_ms(), self.dropped_at) < self.grace_ms - 1000
        if resuming:
            first = {"t": "resume", "v": dp.PROTOCOL_VERSION, "session": self.session, "key": self.key,
                     "codec": dp.CODEC_NAMES[self.codec]}
        else:
            self.session = None
            first = {"t": "hello", "v": dp.PROTOCOL_VERSION,
                     "codec": dp.CODEC_NAMES[self.codec], "max_text": _RX_TEXT, "muted": self.muted,
                     "device": {"board": self.board["name"], "firmware": VERSION}}
            tok = self.token
            plain = True
            for c in memoryview(tok):  # bytes: a quote, a backslash, a control char need escaping
                if c == 34 or c == 92 or c < 32:
                    plain = False
            if not plain:
                first["token"] = tok  # (a JWT never does)
            else:
                # the token goes into the frame as it is, not through json.dumps:
                # its ~550 bytes once, not three times
                first = memoryview(json.dumps(first))
                self.ws.send_text(first[:-1], True, b', "token": "', tok, b'"}')  # bytes: no qstrs
                first = None
        if first is not None:
            self.ws.send_text(json.dumps(first), True)
        first = None
        while True:
            op = await asyncio.wait_for_ms(self.ws.recv(), 20000)
            if op != OP_TEXT:
                continue
            m = self._decode(self.ws.n)
            if m is None:
                continue
            t = m["t"]
            if t == "welcome":
                self.session = m["session"]
                self.key = m["key"]
                self.grace_ms = m["grace_s"] * 1000
                self.room = m["room"].get("name")
                self.identity = m["me"].get("identity")
                self.jb.reset()
                log("welcome room=%s identity=%s session=%s grace=%d codec=%s participants=%d"
                    % (self.room, self.identity, self.session, m["grace_s"], m["codec"], len(m["participants"])))
                self.online = True
                self.expect(0, None)
                self._participants(m["participants"])
                self._emit("welcome", m)
                return
            if t == "resumed":
                self.jb.reset()
                log("resumed session=%s participants=%d" % (m["session"], len(m["participants"])))
                self.online = True
                self.expect(0, None)
                self._participants(m["participants"])
                self._emit("resumed", m)
                return
            if t == "error":
                self._handle(m)
                raise WsClosed(4000, m["code"])
            self._handle(m)

    async def _receiver(self):
        ws = self.ws
        while True:
            op = await ws.recv()
            self._last_rx = time.ticks_ms()
            if op == OP_BINARY:
                self._on_audio(ws.n)
            else:
                m = self._decode(ws.n)
                if m is not None:
                    r = self._handle(m)
                    if r:
                        raise WsClosed(4000, r)

    async def _sender(self):
        ring = self.ring
        ws = self.ws
        enc = self.enc
        n = self.frame_bytes
        ev = self._frame_ready
        while True:
            await ev.wait()
            ev.clear()
            while ws.tx_free():  # else the mic ring keeps the backlog (oldest dropped)
                pcm = ring.readable()
                if pcm is None:
                    break
                gated = self.muted or (self.mic_gate and self.agent_speaking())
                if gated and not self.muted:
                    pcm[:] = self.jb.zero  # half duplex: keep time, send silence
                if not self.muted:
                    enc.encode(pcm)  # into the socket's audio slot
                    ws.send_tx(n)  # queued; the writer task sends it
                    self.tx_frames += 1
                ring.release()

    async def _session(self):
        """One connection: returns (or raises) when it ends."""
        await self._connect()
        self.ring.clear()
        self._emit("online")
        self._task_err = None
        rx = asyncio.create_task(self._guard(self._receiver()))
        tx = asyncio.create_task(self._guard(self._sender()))
        err = None
        try:
            last_ping = time.ticks_ms()
            while True:
                await asyncio.sleep_ms(250)
                if self.ws.failed:  # first: its socket closed, the reader's EBADF is only the echo
                    err = self.ws.failed
                    break
                if rx.done() or tx.done():
                    break
                now = time.ticks_ms()
                if time.ticks_diff(now, self._last_rx) > _SILENT_MS:
                    err = "gateway silent"
                    break
                if time.ticks_diff(now, last_ping) >= _PING_MS:
                    last_ping = now
                    self._ping_id += 1
                    self._send({"t": "ping", "id": self._ping_id})
        finally:
            self.online = False
            for task in (rx, tx):
                if not task.done():
                    task.cancel()
            self.ws.abort()
            self._emit("offline")
        for task in (rx, tx):
            try:
                await task
            except asyncio.CancelledError:
                pass
        e = self._task_err
        if isinstance(e, WsClosed):
            if e.reason in ("unknown_session", "leave", "token_rejected", "unsupported_codec",
                            "unsupported_version"):
                raise e
            err = "%s %s" % (e.code, e.reason)
        elif e is not None and err is None:
            err = repr(e)
        return err

    async def _guard(self, coro):
        # keep a task's exception for _session (an unawaited failed task
        # would make asyncio print "Task exception wasn't retrieved")
        try:
            await coro
        except Exception as e:
            self._task_err = e

    async def run(self):
        """Connect, stream, and reconnect forever with backoff (resume within the grace period)."""
        fails = 0
        while True:
            welcomed = False
            reason = None
            try:
                reason = await self._session()
                welcomed = True
            except WsClosed as e:
                reason = e.reason or str(e.code)
                if e.reason == "unknown_session":
                    log("resume refused; hello")
                    self.session = None
                    fails = 0
                    continue
                if e.reason == "token_rejected":
                    if not self._saved[3]:
                        from lkd import stop  # a saved or refreshed token, expired: config.json's
                        stop.reset(self)
                        _unload("stop")
                        fails = 0
                        continue
                    self.stopped = e.reason
                elif not e.code:  # a configuration error (lkd.ws, lkd.token): retrying will not help
                    self.stopped = e.reason
                    log("config error: " + e.reason)
                    self.ws.abort()
            except Exception as e:  # incl. MemoryError from TLS: never stop trying
                reason = repr(e)
                self.ws.abort()
            if self.stopped:
                gc.collect()
                self.expect(-1, "stopped")  # waiting on purpose: no deadline, no reset
                try:
                    from lkd import stop  # until a new token, a config change or a reset
                    await stop.wait(self)
                except Exception as e:  # MemoryError, say: wait, then try again
                    log("stopped: %r" % e)
                    self.stopped = None
                    await asyncio.sleep_ms(_BACKOFF_MAX)
                _unload("stop")
                fails = 0
                continue
            if welcomed:
                fails = 0
            self.online = False
            self.dropped_at = time.ticks_ms()
            if self.session:
                log("link lost; resuming (%s)" % reason)
            else:
                log("link lost; reconnecting (%s)" % reason)
            fails += 1
            delay = min(_BACKOFF_MAX, _BACKOFF_MIN << min(fails - 1, 6))
            delay = delay // 2 + random.getrandbits(12) % (delay // 2 + 1)  # jitter: 50..100 %
            gc.collect()
            self.expect(delay + 5000, "reconnect backoff")
            self._wake.clear()
            while delay > 0 and not self._wake.is_set():
                await asyncio.sleep_ms(250)
                delay -= 250
