"""Scenario `fuzz`: mutated device-protocol frames against the gateway while a device stays in a call through it.

The device under test joins a room through the target's gateway (GATEWAY) and
plays a 440 Hz tone; a far-side peer (the official SDK) hears it. Meanwhile a
fuzz client, in a process of its own (so its work does not delay the harness's
far side), opens links to the same gateway, a few at a time, and sends the
cases of fuzz_cases.py: broken first frames on fresh links, and broken frames on
joined sessions (each in a room of its own, so the device's room sees none of
them), resuming its session after each fatal error. Every case's answer is
judged against the spec: the error code, fatal or not, the close code, the rpc
id, within ANSWER_BOUND_S.

Checks: every case answered as the spec says; the gateway still serves a new
device afterwards and never stopped; the device stayed in the room and its tone
kept arriving (the longest wait between two on-pitch frames at the far side);
the gateway's RSS after the fuzz within a bound of before; its open handles back.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import time
from dataclasses import dataclass

import numpy as np

from lkdevice import device_protocol as dp
from lkdevice.host_tools.livekit_server import DEV_API_KEY
from lkdevice.host_tools.tokens import mint_token

from . import target as t
from .audio import CODE_S, CODES, code_of, code_tone
from .fuzz_cases import CLOSE_FOR, Case, FirstFrames, SessionFrames
from .scenario import Context

SUMMARY = ("mutated device-protocol frames against the gateway: each answered as the spec says, the gateway "
           "up, another device's audio on time throughout")
FRAMES = {"ci": 20_000, "full": 1_000_000}
FIRST_WORKERS = 6       # fresh links at once
SESSION_WORKERS = 2     # joined sessions at once (each a LiveKit participant in a room of its own)
ANSWER_BOUND_S = 5.0    # an answer later than this is no answer
REFUSED_BOUND_S = 15.0  # a refused token waits for the LiveKit server's answer (the gateway's join timeout)
# the device's audio at the far side: the longest wait for a new frame. A safety bound, not a target: alone
# the ci fuzz measures 66-99 ms; with the other target's run on the same 2 cores, 339 ms once (a 1 M run: 464)
MAX_GAP_MS = 500.0
MAX_MISSING = 0.02      # of the device's frames, never heard at the far side
RSS_BOUND = 24 * 1024 * 1024  # the gateway after the fuzz, over its RSS before
# the gateway's rate limits (gateway/link.py), kept under so that the fuzz's answers stay defined
CONTROL_PER_S, CONTROL_BURST = 40.0, 50.0
AUDIO_PER_S, AUDIO_BURST = 40.0, 10.0
IGNORED = {"token", "joined", "left", "speakers", "attributes", "agent_state", "data", "dropped"}
_LATENCY_BINS_MS = 10_000


# --- the fuzz client (its own process: `python -m lkdevice.hil.fuzz`)

class Stats:
    """What was sent and answered; every store bounded (latencies in 1 ms bins, 20 examples of each fault)."""

    def __init__(self) -> None:
        self.sent: collections.Counter[str] = collections.Counter()
        self.answers: collections.Counter[str] = collections.Counter()
        self.wrong: collections.Counter[str] = collections.Counter()  # at most 50 different faults
        self.wrong_n = 0
        self.unanswered = 0
        self.links = self.hellos = self.resumes = 0
        self.latency = [0] * (_LATENCY_BINS_MS + 1)
        self.started = time.monotonic()

    def answered(self, code: str, seconds: float) -> None:
        self.answers[code] += 1
        self.latency[min(_LATENCY_BINS_MS, int(seconds * 1000))] += 1

    def fault(self, case: Case, what: str) -> None:
        self.wrong_n += 1
        key = f"{case.kind}: {what}"
        if key in self.wrong or len(self.wrong) < 50:
            self.wrong[key] += 1

    def total(self) -> int:
        return sum(self.sent.values())

    def latency_ms(self, q: float) -> float | None:
        n = sum(self.latency)
        if not n:
            return None
        want, seen = q * n, 0
        for ms, c in enumerate(self.latency):
            seen += c
            if seen >= want:
                return float(ms + 1)
        return float(_LATENCY_BINS_MS)

    def report(self) -> dict:
        elapsed = time.monotonic() - self.started
        return {"sent": self.total(), "elapsed_s": elapsed, "per_s": self.total() / elapsed if elapsed else 0.0,
                "by_kind": dict(self.sent), "answers": dict(self.answers), "wrong": self.wrong_n,
                "wrong_examples": [f"{k} ({n}x)" for k, n in self.wrong.most_common()],
                "unanswered": self.unanswered, "links": self.links,
                "hellos": self.hellos, "resumes": self.resumes, "answer_p99_ms": self.latency_ms(0.99),
                "answer_max_ms": self.latency_ms(1.0)}


class Bucket:
    def __init__(self, rate: float, burst: float):
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, time.monotonic()

    def room(self, n: int = 1) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        return self.tokens >= n

    def take(self, n: int) -> None:
        self.tokens -= n


@dataclass
class Answer:
    msg: dict | None = None
    close: int | None = None
    seconds: float = 0.0
    timed_out: bool = False


async def _connect(url: str):
    from websockets.asyncio.client import connect
    return await connect(url, compression=None, open_timeout=10, ping_interval=None, close_timeout=2,
                         max_size=dp.MAX_TEXT_FRAME * 2, proxy=None)


async def _send(ws, case: Case) -> None:
    await ws.send(case.data, text=not case.binary)


async def _answer(ws, bound: float, t0: float) -> Answer:
    """The first frame that answers (an error, a pong, a welcome...), or the link's close; downlink noise skipped."""
    from websockets.exceptions import ConnectionClosed
    deadline = t0 + bound
    while True:
        try:
            frame = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        except ConnectionClosed:
            return Answer(close=ws.close_code, seconds=time.monotonic() - t0)
        except asyncio.TimeoutError:
            return Answer(timed_out=True, seconds=bound)
        if isinstance(frame, bytes):
            continue
        msg = json.loads(frame)
        if msg.get("t") not in IGNORED:
            return Answer(msg=msg, seconds=time.monotonic() - t0)


async def _closed(ws, bound: float) -> int | None:
    try:
        await asyncio.wait_for(ws.wait_closed(), bound)
    except asyncio.TimeoutError:
        return None
    return ws.close_code


async def _judge(ws, case: Case, stats: Stats, secrets: list[str]) -> bool:
    """Read and judge the answer to `case`; True if the link is still open after it."""
    bound = REFUSED_BOUND_S if case.expect == {dp.E_TOKEN} else ANSWER_BOUND_S
    t0 = time.monotonic()
    ans = await _answer(ws, bound, t0)
    if ans.timed_out:
        stats.unanswered += 1
        stats.fault(case, f"no answer within {bound:g} s")
        await ws.close()
        return False
    if case.close is not None:  # the socket layer's own close, no message first
        got = f"close {ans.close}" if ans.msg is None else f"message {ans.msg.get('t')}:{ans.msg.get('code')}"
        stats.answered(got, ans.seconds)
        if ans.close != case.close:
            stats.fault(case, f"wanted close {case.close}, got {got}")
        return False
    if ans.msg is None:
        stats.answered(f"close {ans.close}", ans.seconds)
        stats.fault(case, f"the link closed ({ans.close}) with no answer; wanted "
                          f"{case.reply or sorted(case.expect)}")
        return False
    msg = ans.msg
    if case.reply is not None:
        stats.answered(msg.get("t", "?"), ans.seconds)
        if msg.get("t") != case.reply:
            stats.fault(case, f"wanted {case.reply}, got {msg.get('t')}:{msg.get('code', '')}")
            return not msg.get("fatal", False)
        return True
    code = msg.get("code", "?") if msg.get("t") == "error" else msg.get("t", "?")
    stats.answered(code, ans.seconds)
    fatal = bool(msg.get("fatal"))
    problems = []
    if msg.get("t") != "error" or code not in case.expect:
        problems.append(f"wanted error {sorted(case.expect)}, got {code}")
    if case.fatal is not None and fatal != case.fatal:
        problems.append(f"fatal={fatal}, the spec says {case.fatal}")
    if case.rpc_id is not None and msg.get("id") != case.rpc_id:
        problems.append(f"error without the call's id {case.rpc_id[:20]!r}")
    if any(s and s in str(msg.get("message", "")) for s in secrets):
        problems.append("the error message holds the token")
    if fatal:
        close = await _closed(ws, ANSWER_BOUND_S)
        want = CLOSE_FOR.get(code)
        if close != want:
            problems.append(f"closed with {close}, the spec says {want} for {code}")
    if problems:
        stats.fault(case, "; ".join(problems))
    return not fatal


class Budget:
    def __init__(self, count: int, seconds: float):
        self.left = count
        self.deadline = time.monotonic() + seconds

    def take(self) -> bool:
        if self.left <= 0 or time.monotonic() > self.deadline:
            return False
        self.left -= 1
        return True


async def _first_worker(url: str, cases: FirstFrames, budget: Budget, stats: Stats) -> None:
    from websockets.exceptions import ConnectionClosed
    while budget.take():
        case = cases.case()
        stats.sent[case.kind] += 1
        try:
            ws = await _connect(url)
        except (OSError, asyncio.TimeoutError, ConnectionClosed) as e:
            stats.unanswered += 1
            stats.fault(case, f"could not connect: {type(e).__name__}: {e}")
            await asyncio.sleep(0.2)
            continue
        stats.links += 1
        try:
            await _send(ws, case)
            if await _judge(ws, case, stats, [cases.bad_token]):
                stats.fault(case, "the link stayed open after a first frame that is not a hello")
        except ConnectionClosed:
            stats.fault(case, f"the link closed under the send ({ws.close_code})")
        finally:
            await ws.close()


class _Session:
    """One fuzz device: a session kept across fatal errors by resuming it (a new hello when it is gone)."""

    def __init__(self, url: str, token: str, rng: random.Random, stats: Stats):
        self.url, self.token, self.stats = url, token, stats
        self.frames = SessionFrames(rng)
        self.session: tuple[str, str] | None = None
        self.control = Bucket(CONTROL_PER_S, CONTROL_BURST)
        self.audio = Bucket(AUDIO_PER_S, AUDIO_BURST)

    async def attach(self):
        ws = await _connect(self.url)
        self.stats.links += 1
        if self.session is not None:
            sid, key = self.session
            await ws.send(json.dumps({"t": "resume", "v": 1, "session": sid, "key": key}))
            ans = await _answer(ws, ANSWER_BOUND_S, time.monotonic())
            if ans.msg is not None and ans.msg.get("t") == "resumed":
                self.stats.resumes += 1
                self.frames.new_link()
                return ws
            self.session = None  # past its grace: a new session
            await ws.close()
            ws = await _connect(self.url)
            self.stats.links += 1
        await ws.send(json.dumps({"t": "hello", "v": 1, "token": self.token, "codec": "pcm16", "max_text": 16384}))
        ans = await _answer(ws, 30, time.monotonic())
        if ans.msg is None or ans.msg.get("t") != "welcome":
            raise RuntimeError(f"a fuzz device could not join: {ans.msg or ans.close}")
        self.stats.hellos += 1
        self.session = (ans.msg["session"], ans.msg["key"])
        self.control = Bucket(CONTROL_PER_S, CONTROL_BURST)  # a new session, a full bucket at the gateway
        self.frames.new_link()
        return ws

    async def run(self, budget: Budget) -> None:
        from websockets.exceptions import ConnectionClosed
        ws = None
        pending_silent: list[Case] = []
        while True:
            if ws is None:
                ws = await self.attach()
            if pending_silent:  # what shows the gateway took them without a word: the next answer is the probe's
                case = self.frames.ping() if self.control.room() else Case(
                    "session/not-json", "{", expect=frozenset({dp.E_MALFORMED}))
            elif budget.take():
                case = self.frames.case(self.control.room(), self.audio.room())
            else:
                break
            self.control.take(case.control_tokens)
            self.audio.take(case.audio_tokens)
            self.stats.sent[case.kind] += 1
            try:
                await _send(ws, case)
                if case.silent:
                    pending_silent.append(case)
                    continue
                before = self.stats.wrong_n
                open_ = await _judge(ws, case, self.stats, [self.token])
                if self.stats.wrong_n > before and pending_silent:
                    self.stats.fault(pending_silent[-1], "a frame the spec takes silently was answered "
                                                         "(the probe after it got another answer)")
                pending_silent.clear()
            except ConnectionClosed:
                self.stats.fault(case, f"the link closed under the send ({ws.close_code})")
                open_ = False
            if not open_:
                await ws.close()
                ws = None
        if ws is not None:
            await ws.close()


async def _progress(stats: Stats, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        print(f"progress {stats.total()} {stats.wrong_n} {stats.unanswered}", flush=True)


async def fuzz(config: dict) -> dict:
    """Run the fuzz as `config` says (url, count, max_s, seed, session_tokens, bad_token); the report."""
    stats = Stats()
    budget = Budget(int(config["count"]), float(config["max_s"]))
    seed = int(config.get("seed", 1))
    url = config["url"]
    tasks = [_first_worker(url, FirstFrames(config["bad_token"], random.Random(seed * 1000 + i)), budget, stats)
             for i in range(int(config.get("first_workers", FIRST_WORKERS)))]
    tasks += [_Session(url, tok, random.Random(seed * 1000 + 500 + i), stats).run(budget)
              for i, tok in enumerate(config["session_tokens"])]
    ticker = asyncio.ensure_future(_progress(stats, float(config.get("progress_s", 2.0))))
    try:
        done = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        ticker.cancel()
    out = stats.report()
    out["worker_errors"] = [f"{type(e).__name__}: {e}" for e in done if isinstance(e, BaseException)][:5]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lkdevice.hil.fuzz",
                                 description="the device-protocol fuzz client (the `fuzz` scenario starts it); "
                                             "reads its configuration, tokens included, as JSON on stdin")
    ap.parse_args(argv)
    config = json.loads(sys.stdin.readline())
    print("result " + json.dumps(asyncio.run(fuzz(config))), flush=True)
    return 0


# --- the scenario (in the harness)

class CodeWatch:
    """The device's track at the far side, carrying audio.code_tone: when each new 20 ms of the device's
    audio arrived (a frame repeated by concealment is not new), and how much of it never came."""

    def __init__(self, limit: int = 200_000):
        self.fresh: collections.deque[tuple[float, int]] = collections.deque(maxlen=limit)  # (arrival, frame no.)
        self.skipped = 0
        self._last: int | None = None
        self._pos = 0
        self.task: asyncio.Task | None = None

    def feed(self, at: float, code: int | None) -> None:
        if code is None:
            return
        if self._last is not None:
            step = (code - self._last) % CODES
            if not 0 < step <= CODES // 2:
                return  # the same frame again, or a garbled one
            self._pos += step
            self.skipped += step - 1
        self._last = code
        self.fresh.append((at, self._pos))

    def start(self, track) -> None:
        from livekit import rtc

        async def watch():
            stream = rtc.AudioStream.from_track(track=track, sample_rate=16000, num_channels=1, frame_size_ms=10)
            async for ev in stream:
                self.feed(time.monotonic(), code_of(np.frombuffer(ev.frame.data, dtype=np.int16), 16000))
        self.task = asyncio.ensure_future(watch())

    def between(self, t0: float, t1: float) -> np.ndarray:
        return np.array([x for x in self.fresh if t0 <= x[0] <= t1], dtype=np.float64).reshape(-1, 2)

    async def close(self) -> None:
        if self.task:
            self.task.cancel()


def _device_track(far, identity: str):
    from livekit import rtc
    for p in far.room.remote_participants.values():
        if p.identity == identity:
            for pub in p.track_publications.values():
                if pub.track is not None and pub.kind == rtc.TrackKind.KIND_AUDIO:
                    return pub.track
    return None


async def _run_client(ctx: Context, config: dict) -> dict:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "lkdevice.hil.fuzz",
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    ctx.on_cleanup(lambda: _end(proc))
    proc.stdin.write((json.dumps(config) + "\n").encode())
    await proc.stdin.drain()
    proc.stdin.close()
    result = None
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            break
        if line.startswith("progress "):
            n, wrong, lost = line.split()[1:4]
            ctx.waiting(f"the fuzz: {n}/{config['count']} frames sent, {wrong} answered wrong, {lost} unanswered")
        elif line.startswith("result "):
            result = json.loads(line[7:])
    await proc.wait()
    if result is None:
        err = (await proc.stderr.read()).decode()[-800:]
        raise RuntimeError(f"the fuzz client ended ({proc.returncode}) without a result: {err}")
    return result


async def _end(proc) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def _gateway_at(samples: list[t.Sample], when: float, field: str, after: bool) -> float | None:
    pts = [(s.t, getattr(s, field)) for s in samples if getattr(s, field) is not None]
    pts = [p for p in pts if (p[0] >= when if after else p[0] <= when)]
    return None if not pts else float((pts[0] if after else pts[-1])[1])


async def run(ctx: Context) -> None:
    from .scenarios import PEER, boot

    dev, lab = ctx.target, ctx.lab
    count = FRAMES.get(ctx.profile.name, FRAMES["ci"])
    max_s = bound_s(ctx.profile) - 90
    far = await boot(ctx, code_tone(max_s + 120))
    watch = CodeWatch()
    ctx.on_cleanup(watch.close)
    async with ctx.step("the device's tone at the peer"):
        ctx.waiting(f"{dev.identity_name}'s audio track at {PEER}")
        track = await far.until(lambda: _device_track(far, dev.identity_name), 20, "the device's audio track")
        watch.start(track)
        await far.until(lambda: len(watch.fresh) >= 50, 20, "a second of the device's audio at the peer")
        await asyncio.sleep(3)  # samples of the gateway with the device in the call, before the fuzz
    async with ctx.step("fuzz") as step:
        rooms = [f"{ctx.room}-fuzz{i}" for i in range(SESSION_WORKERS)]
        config = {"url": dev.gateway_url(), "count": count, "max_s": max_s, "seed": ctx.repeat,
                  "session_tokens": [lab.token(f"fuzz-{i}", r, ttl=3600) for i, r in enumerate(rooms)],
                  # refused by the server: signed with a secret it does not hold
                  "bad_token": mint_token(DEV_API_KEY, "not-the-servers-secret-" + "x" * 16, identity="fuzz-x",
                                          room=ctx.room)}
        t0 = time.monotonic()
        ctx.waiting(f"the fuzz client ({count} frames)")
        res = await _run_client(ctx, config)
        t1 = time.monotonic()
        step.message = (f"{res['sent']} frames in {res['elapsed_s']:.1f} s ({res['per_s']:.0f}/s) over "
                        f"{res['links']} links")
        ctx.figure("frames_sent", res["sent"], "", step)
        ctx.figure("frames_per_s", res["per_s"], "/s", step)
        ctx.figure("links", res["links"], "", step)
        ctx.figure("session_hellos", res["hellos"], "", step)
        ctx.figure("session_resumes", res["resumes"], "", step)
        ctx.figure("answered_wrong", res["wrong"], "", step)
        ctx.figure("unanswered", res["unanswered"], "", step)
        ctx.figure("answer_p99_ms", res["answer_p99_ms"], "ms", step)
        ctx.figure("answer_max_ms", res["answer_max_ms"], "ms", step)
        for code, n in sorted(res["answers"].items()):
            ctx.figure(f"answers[{code}]", n, "", step)
        for kind, n in sorted(res["by_kind"].items()):
            ctx.figure(f"sent[{kind}]", n, "", step)
        ctx.check(not res["worker_errors"], "the fuzz client failed: " + " | ".join(res["worker_errors"]))
        ctx.check(res["sent"] >= count or res["elapsed_s"] < max_s - 1,
                  f"only {res['sent']} of {count} frames in the {max_s:.0f} s the fuzz may take")
    async with ctx.step("the device's audio through the fuzz") as step:
        got = watch.between(t0, t1)
        ctx.check(len(got) > 0.5 * (t1 - t0) / CODE_S, f"the peer heard only {len(got)} frames of the device's "
                                                       f"audio in {t1 - t0:.0f} s of fuzz")
        gaps = np.diff(got[:, 0]) * 1000
        late = (got[:, 0] - got[:, 1] * CODE_S) * 1000  # arrival against the frame's place in the device's audio
        lost = float(1 - len(got) / (got[-1, 1] - got[0, 1] + 1))
        worst, p99 = float(gaps.max()), float(np.percentile(gaps, 99))
        spread = float(np.percentile(late, 99.5) - np.percentile(late, 0.5))
        ctx.figure("audio_max_gap_ms", worst, "ms", step)
        ctx.figure("audio_interarrival_p99_ms", p99, "ms", step)
        ctx.figure("audio_lateness_spread_ms", spread, "ms", step)
        ctx.figure("audio_frames_missing_pct", 100 * lost, "%", step)
        ctx.series("device audio: wait for each new frame at the peer", "seconds from the fuzz's start",
                   "ms since the previous new frame", [(a - t0, g) for a, g in zip(got[1:, 0], gaps)][-5000:])
        ctx.check(far.present(dev.identity_name), f"{dev.identity_name} left the room during the fuzz")
        ctx.check(worst <= MAX_GAP_MS, f"the device's audio stopped for {worst:.0f} ms at the peer during the "
                                       f"fuzz (limit {MAX_GAP_MS:.0f} ms; p99 between new frames {p99:.0f} ms)")
        ctx.check(lost <= MAX_MISSING, f"{100 * lost:.1f} % of the device's audio never reached the peer during "
                                       f"the fuzz (limit {100 * MAX_MISSING:.0f} %)")
    async with ctx.step("the gateway afterwards") as step:
        ctx.waiting("a new device to join through the gateway")
        probe = await asyncio.wait_for(_probe(dev.gateway_url(), lab.token("fuzz-probe", f"{ctx.room}-probe")), 40)
        ctx.check(probe == "pong", f"after the fuzz the gateway answered a new device's ping with {probe}")
        ctx.waiting("the gateway's memory after the fuzz")
        await asyncio.sleep(6)  # a sample after the fuzz's links and sessions are gone
        samples = dev.samples()
        rss0, rss1 = _gateway_at(samples, t0, "rss", False), _gateway_at(samples, t1 + 5, "rss", True)
        fd0, fd1 = _gateway_at(samples, t0, "handles", False), _gateway_at(samples, t1 + 5, "handles", True)
        if rss0 is not None and rss1 is not None:
            ctx.figure("gateway_rss_before", rss0, "B", step)
            ctx.figure("gateway_rss_after", rss1, "B", step)
            ctx.figure("gateway_rss_growth", rss1 - rss0, "B", step)
            ctx.check(rss1 - rss0 <= RSS_BOUND, f"the gateway's RSS grew {(rss1 - rss0) / 2 ** 20:.1f} MB over the "
                                                f"fuzz (limit {RSS_BOUND / 2 ** 20:.0f} MB)")
        if fd0 is not None and fd1 is not None:
            ctx.figure("gateway_handles_growth", fd1 - fd0, "", step)
            ctx.check(fd1 - fd0 <= 4, f"the gateway holds {fd1 - fd0:.0f} more open handles after the fuzz")
        rss = [(s.t - t0, float(s.rss)) for s in samples if s.rss is not None]
        if rss:
            ctx.series("gateway RSS over the fuzz", "seconds from the fuzz's start", "RSS (bytes)", rss)
    async with ctx.step("every answer as the spec says"):  # last: the figures above are measured whatever
        ctx.check(res["wrong"] == 0 and res["unanswered"] == 0,
                  f"{res['wrong']} answers not as the spec says ({res['unanswered']} none at all), e.g. "
                  + " | ".join(res["wrong_examples"][:6]))


async def _probe(url: str, token: str) -> str:
    """A well-formed device after the fuzz: hello, then ping; what answered the ping."""
    ws = await _connect(url)
    try:
        await ws.send(json.dumps({"t": "hello", "v": 1, "token": token, "codec": "pcm16"}))
        ans = await _answer(ws, 30, time.monotonic())
        if ans.msg is None or ans.msg.get("t") != "welcome":
            return f"{ans.msg or ans.close} to its hello"
        await ws.send(json.dumps({"t": "ping", "id": 1}))
        ans = await _answer(ws, ANSWER_BOUND_S, time.monotonic())
        return ans.msg.get("t", "?") if ans.msg else f"close {ans.close}"
    finally:
        await ws.close()  # the session goes after the gateway's grace


def bound_s(profile) -> float:
    # ci: 20 000 frames at ~400/s on a loaded machine; full: see hil/README.md for the measured rate
    return {"ci": 150.0}.get(profile.name, 2400.0)


if __name__ == "__main__":
    sys.exit(main())
