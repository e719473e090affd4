"""Issue 11's resilience scenarios: the link dropped 5 s and 30 s, the server restarted, the gateway killed.

Each call has audio both ways: the device's microphone hears a 440 Hz tone, a
far-side peer publishes 1000 Hz. What a user notices is checked: the device
is back in the room by itself, the peer hears the device's tone again and the
device's speaker plays the peer's, within RECOVERY_S; no error line, the
device still running. Figures: `recovered_up_s` (device -> peer) and
`recovered_down_s` (peer -> device) from the moment the network, server or
gateway is back, `back_in_room_s`, and for the link drops `resumed` (yes: the
room never saw the device leave; no: it left and joined again).

A 5 s drop must be a resume for a target that keeps a dropped link's session
15 s (the gateway's default grace; the scenario asks the target for it with
`ask(link_grace_s=15)`, and a target that cannot say, like sim-pi, is only
reported). A drop longer than the grace is a leave and a join: reported, not failed.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from . import target as t
from .audio import sine, tone_levels
from .ear import Ear
from .far_side import FarSide, publish_tone
from .scenario import Context, Failed, Scenario

DEVICE_TONE = 440.0   # what the device's microphone hears
PEER_TONE = 1000.0    # what the far side publishes (far_side.publish_tone)
PRESENT = 700.0       # tone level (RMS, int16) above which it is heard; the tones arrive at ~3000-7000
HOLD_S = 0.5          # heard this long without a gap: "audio again"
RECOVERY_S = 30.0     # link back -> audio again, each way (generous: 2 shared cores)
GATEWAY_GRACE_S = 15.0  # `lkdevice gateway`'s default --grace
RESUME_MARGIN_S = 3.0   # a drop this much shorter than the grace must be a resume (reconnect + Wi-Fi join)
SERIES_BIN_S = 0.1

# the firmware's words (firmware/lkd/device.py) for a target with a gateway
RESUME_REFUSED = r"\[lkd\] resume refused; hello"
WELCOME = r"\[lkd\] welcome "
RESUMED = r"\[lkd\] resumed session="


# --- pure logic (tests/unit/test_hil_resilience.py)

def heard_from(levels: list[tuple[float, float]], after: float, threshold: float = PRESENT,
               hold_s: float = HOLD_S, max_gap_s: float = 0.3) -> float | None:
    """The start of the first run of frames at or after `after`, each at least `threshold`, spanning
    `hold_s` with no gap over `max_gap_s` between frames (a busy event loop hands a peer's frames over in
    bursts: a gap up to 0.3 s is the harness, not the audio); None if there is none."""
    start = last = None
    for ts, level in levels:
        if ts < after:
            continue
        if level < threshold or (last is not None and ts - last > max_gap_s):
            start = None
        if level >= threshold:
            if start is None:
                start = ts
            if ts - start >= hold_s:
                return start
        last = ts
    return None


def heard_share(levels: list[tuple[float, float]], t0: float, t1: float, threshold: float = PRESENT) -> float:
    """The share of frames in [t0, t1] that carry the tone (0 if none arrived)."""
    inside = [lv for ts, lv in levels if t0 <= ts <= t1]
    return sum(lv >= threshold for lv in inside) / len(inside) if inside else 0.0


def binned(levels: list[tuple[float, float]], t0: float, t1: float, zero: float, step: float = SERIES_BIN_S,
           ) -> list[tuple[float, float]]:
    """Mean level per `step` between t0 and t1, times relative to `zero` (a plot's points; empty bins left out)."""
    sums: dict[int, list[float]] = {}
    for ts, lv in levels:
        if t0 <= ts <= t1:
            sums.setdefault(int((ts - t0) / step + 1e-9), []).append(lv)  # a frame on a bin's edge starts it
    return [(t0 - zero + k * step, float(np.mean(v))) for k, v in sorted(sums.items())]


def speaker_levels(rec: t.Recording, since: float, freq: float = PEER_TONE) -> list[tuple[float, float]]:
    """(harness time, level of `freq`) per 20 ms of what the speaker played from `since` on."""
    start = max(since, rec.origin)
    pcm = rec.at(start)
    lv = tone_levels(pcm, rec.rate, freq)
    return [(start + i * 0.02, float(v)) for i, v in enumerate(lv)]


def must_resume(drop_s: float, grace_s: float | None) -> bool:
    """A drop the session outlasts by the margin must be a resume; unknown grace: only reported."""
    return grace_s is not None and drop_s + RESUME_MARGIN_S <= grace_s


# --- shared steps

class Call:
    """The far-side peer of a call: its tone out, its ear on the device."""

    def __init__(self, ctx: Context, far: FarSide):
        self.ctx, self.far = ctx, far
        self.ear = Ear(far.room, ctx.target.identity_name, DEVICE_TONE)
        self.tone: asyncio.Task | None = None

    async def start(self) -> "Call":
        self.tone = await publish_tone(self.far.room, PEER_TONE)
        self.ctx.on_cleanup(self.close)
        return self

    async def close(self) -> None:
        if self.tone is not None:
            self.tone.cancel()
        self.ear.close()
        await self.far.close()

    def down(self, since: float) -> list[tuple[float, float]]:
        return speaker_levels(self.ctx.target.recording(), since)

    async def audio_both_ways(self, since: float, timeout: float) -> tuple[float, float]:
        """When the peer heard the device and the device's speaker played the peer, from `since` on."""
        up = down = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if up is None:
                up = heard_from(list(self.ear.levels), since)
            if down is None:
                down = heard_from(self.down(since), since)
            if up is not None and down is not None:
                return up, down
            if self.ctx.target.console.closed:
                break
            await asyncio.sleep(0.25)
        missing = [w for w, v in (("the peer did not hear the device's tone", up),
                                  ("the device's speaker did not play the peer's tone", down)) if v is None]
        dev = self.ctx.target
        raise Failed(" and ".join(missing) + f" within {timeout:g} s"
                     + (" (the device stopped)" if dev.console.closed else "")
                     + (f"; the device said: {' | '.join(dev.errors()[:3])}" if dev.errors() else ""))


async def _call(ctx: Context, mic_s: float) -> Call:
    from .scenarios import boot
    far = await boot(ctx, sine(DEVICE_TONE, mic_s))
    call = await Call(ctx, far).start()
    async with ctx.step("audio both ways"):
        ctx.waiting("the peer to hear the device's tone and the device's speaker the peer's")
        await call.audio_both_ways(time.monotonic() - 1.0, 40)
    return call


async def _audio_again(ctx: Context, call: Call, back: float, what: str) -> None:
    async with ctx.step("audio again") as step:
        ctx.waiting(f"audio both ways again after {what}")
        up, down = await call.audio_both_ways(back, RECOVERY_S)
        ctx.figure("recovered_up_s", up - back, "s", step)
        ctx.figure("recovered_down_s", down - back, "s", step)
        step.message = f"device -> peer {up - back:.1f} s, peer -> device {down - back:.1f} s after {what}"


def _still_running(ctx: Context) -> None:
    dev = ctx.target
    ctx.check(not dev.console.closed, f"{dev.name} stopped (exited or crashed)")
    why = dev.errors()
    ctx.check(not why, "the device reported: " + " | ".join(why[:3]))


def _plot(ctx: Context, call: Call, zero: float, label: str, before_s: float = 5.0) -> None:
    """The level each way from `before_s` before the event at `zero` until now (one point per 100 ms)."""
    who, t0, t1 = ctx.target.identity_name, zero - before_s, time.monotonic()
    ctx.series(f"the peer hears {who}'s tone {label}", f"seconds ({label} at 0)", "440 Hz level (RMS)",
               binned(list(call.ear.levels), t0, t1, zero))
    ctx.series(f"{who}'s speaker plays the peer's tone {label}", f"seconds ({label} at 0)", "1000 Hz level (RMS)",
               binned(call.down(t0), t0, t1, zero))


async def _present(ctx: Context, far: FarSide, within: str, timeout: float = RECOVERY_S) -> None:
    dev, who = ctx.target, ctx.target.identity_name
    try:
        await far.until(lambda: far.present(who) or dev.console.closed, timeout, f"{who} in the room")
    except TimeoutError:
        raise Failed(f"{who} was not back in the room within {within}") from None
    ctx.check(far.present(who), f"{who} stopped instead of coming back")


async def _line(dev: t.Target, pattern: str, mark: int, what: str) -> float:
    # a Failed saying what was missing, with the console's last lines
    try:
        ts, _ = await dev.expect(pattern, RECOVERY_S, since=mark)
    except TimeoutError as e:
        raise Failed(f"no {what} within {RECOVERY_S:g} s; last lines: {dev.console.tail(6)}") from e
    return ts


# --- link drops

def _link_drop(seconds: float):
    async def run(ctx: Context) -> None:
        dev = ctx.target
        grace = dev.ask(**{t.LINK_GRACE: GATEWAY_GRACE_S})[t.LINK_GRACE]
        ctx.figure("link_grace_s", grace if grace is not None else "unknown", "s" if grace is not None else "")
        call = await _call(ctx, seconds + 150)
        far, who = call.far, dev.identity_name
        mark = dev.console.mark()
        async with ctx.step(f"link gone {seconds:g} s") as step:
            ctx.waiting(f"{seconds:g} s without a network")
            dropped = time.monotonic()
            await dev.drop_link(seconds)
            back = time.monotonic()
            # a drop that did not silence the device tests nothing: the cut must be real
            up = heard_share(list(call.ear.levels), dropped + 1.5, back - 0.2)
            down = heard_share(call.down(dropped), dropped + 1.5, back - 0.2)
            ctx.check(up < 0.2 and down < 0.2, f"the tones went on through the drop (the peer heard the device "
                                               f"{up:.0%} of it, the speaker played the peer {down:.0%}): "
                                               f"the link was not cut")
            step.message = f"link back {back - dropped:.1f} s after it went"
        async with ctx.step("back in the room"):
            ctx.waiting(f"{who} in the room again")
            await _present(ctx, far, f"{RECOVERY_S:g} s after its link came back")
        await _audio_again(ctx, call, back, "the link came back")
        async with ctx.step("resumed or rejoined") as step:
            await asyncio.sleep(1.0)  # a leave the server decides late shows by now
            ctx.check(far.present(who), f"{who} left the room after its audio came back")
            left = [ts for ts, kind, w in far.joins if w == who and kind == "left" and ts >= dropped]
            joined = [ts for ts, kind, w in far.joins if w == who and kind == "joined" and ts >= dropped]
            resumed = not left
            ctx.figure("resumed", "yes" if resumed else "no", "", step)
            own = dev.console.find(RESUMED if resumed else WELCOME, mark)  # the firmware's word, when it has one
            at = joined[-1] if joined and not resumed else own[0] if own else None
            if at is not None:
                ctx.figure("back_in_room_s", max(0.0, at - back), "s", step)
            step.message = ("resumed: the room never saw it leave" if resumed else
                            f"left {left[0] - dropped:.1f} s into the drop and joined again")
            if must_resume(seconds, grace) and not resumed:
                raise Failed(f"the room saw {who} leave {left[0] - dropped:.1f} s into a {seconds:g} s drop: "
                             f"not a resume, though its link grace is {grace:g} s")
        async with ctx.step("no reboot, no error"):
            _still_running(ctx)
        _plot(ctx, call, dropped, "around the drop")
    return run


# --- restarts

async def _server_restart(ctx: Context) -> None:
    from .scenarios import PEER
    dev, lab = ctx.target, ctx.lab
    call = await _call(ctx, 200)
    who = dev.identity_name
    async with ctx.step("server restart") as step:
        await call.close()  # the old peer goes with the server; a new one joins (its SDK would not rejoin)
        ctx.waiting("livekit-server to stop and start again on the same ports")
        stopped = time.monotonic()
        await asyncio.to_thread(lab.restart_server)
        up = time.monotonic()
        ctx.figure("server_down_s", up - stopped, "s", step)
    async with ctx.step("a new peer, and the device back") as step:
        ctx.waiting("the far side to join as a new peer")
        far = await lab.far_side(PEER, ctx.room)
        call = await Call(ctx, far).start()
        ctx.waiting(f"{who} back in the room by itself")
        await _present(ctx, far, "60 s of the server's restart", 60)
        seen = next((ts for ts, kind, w in far.joins if w == who and kind == "joined"), time.monotonic())
        ctx.figure("back_in_room_s", max(0.0, seen - up), "s", step)
    await _audio_again(ctx, call, up, "the server came back")
    async with ctx.step("no reboot, no error"):
        _still_running(ctx)
    _plot(ctx, call, stopped, "around the server's restart")


async def _gateway_restart(ctx: Context) -> None:
    dev = ctx.target
    # with the default grace the firmware tries to resume first: the new gateway must refuse it
    grace = dev.ask(**{t.LINK_GRACE: GATEWAY_GRACE_S})[t.LINK_GRACE]
    call = await _call(ctx, 200)
    who = dev.identity_name
    mark = dev.console.mark()
    async with ctx.step("gateway killed and started again") as step:
        ctx.waiting("the gateway: SIGKILL, then the same command on the same port")
        killed = time.monotonic()
        await dev.restart_gateway()
        up = time.monotonic()
        step.message = f"listening again {up - killed:.1f} s after the kill"
    async with ctx.step("the firmware reconnects") as step:
        if must_resume(0, grace):
            ctx.waiting("the firmware's resume refused by the new gateway, then its hello")
            await _line(dev, RESUME_REFUSED, mark, "the firmware's resume refused by the new gateway")
        ctx.waiting("the firmware's welcome from the new gateway")
        ts = await _line(dev, WELCOME, mark, "a welcome from the new gateway")
        ctx.figure("back_in_room_s", max(0.0, ts - up), "s", step)
        ctx.waiting(f"{who} in the room (seen by the peer)")
        await _present(ctx, call.far, f"{RECOVERY_S:g} s of its welcome")
        step.message = ("resume refused (the new gateway has no session), hello, welcome" if must_resume(0, grace)
                        else "hello, welcome")
    await _audio_again(ctx, call, up, "the gateway came back")
    async with ctx.step("no reboot, no error"):
        _still_running(ctx)
    _plot(ctx, call, killed, "around the gateway's kill")


AUDIO = frozenset({t.JOIN, t.MIC, t.SPEAKER})

LINK_DROP_5S = Scenario("link-drop-5s", AUDIO | {t.LINK_DROP}, _link_drop(5),
                        "the network gone 5 s mid-call: back in the room (a resume), audio both ways again",
                        lambda p: 150)
LINK_DROP_30S = Scenario("link-drop-30s", AUDIO | {t.LINK_DROP}, _link_drop(30),
                         "the network gone 30 s mid-call: back in the room, audio both ways again",
                         lambda p: 180)
SERVER_RESTART = Scenario("server-restart", AUDIO, _server_restart,
                          "livekit-server restarted mid-call: the device back by itself, audio both ways",
                          lambda p: 180)
GATEWAY_RESTART = Scenario("gateway-restart", AUDIO | {t.GATEWAY}, _gateway_restart,
                           "the gateway killed and restarted: resume refused, hello, audio both ways again",
                           lambda p: 150)
