"""The session lifecycle of a `Room`, with no I/O: events in, actions out.

Connect, resume, rejoin, retry and close are decided here; `Room` performs the
actions (opening sockets, building peer connections, sleeping) and reports
what happened as events. Time is passed in (`now`), randomness is injected
through the backoff, and `next_deadline()` says when `handle_timer(now)` is
due, as in aioquic's connection core.

States: "disconnected" (before connect and after the end), "connecting"
(the first join), "connected", "reconnecting". Every attempt carries a
number; an outcome for an attempt that is no longer current is ignored, so a
late report from an aborted attempt cannot change the state.

A device is not a browser tab: by default it keeps trying until the user
closes it. `window` limits the outage it tolerates; a token the server
refuses ends the session at once, since retrying cannot fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .backoff import Backoff
from .errors import LiveKitError, TokenRejected
from .signaling import LeaveAction


# -- events ------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectRequested:
    pass


@dataclass(frozen=True)
class JoinSucceeded:
    attempt: int


@dataclass(frozen=True)
class ResumeSucceeded:
    attempt: int


@dataclass(frozen=True)
class ResumeRefused:
    """The server does not know the session any more (e.g. leave{STATE_MISMATCH})."""
    attempt: int
    reason: str


@dataclass(frozen=True)
class AttemptFailed:
    attempt: int
    error: str
    fatal: bool = False  # the token was refused: no retry can succeed

    @classmethod
    def from_exception(cls, attempt: int, exc: BaseException) -> "AttemptFailed":
        """Any exception fails the attempt; only a refused token ends the session."""
        if isinstance(exc, TokenRejected):
            return cls(attempt, exc.reason, fatal=True)
        if isinstance(exc, LiveKitError):
            return cls(attempt, str(exc))
        return cls(attempt, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


@dataclass(frozen=True)
class SignalLost:
    reason: str


@dataclass(frozen=True)
class LeaveReceived:
    action: int  # LeaveAction
    reason: str


@dataclass(frozen=True)
class MediaFailed:
    pass


@dataclass(frozen=True)
class CloseRequested:
    reason: str


@dataclass(frozen=True)
class TokenRefreshed:
    token: str


@dataclass(frozen=True)
class OfferSent:
    offer_id: int


@dataclass(frozen=True)
class AnswerReceived:
    offer_id: int


Event = Union[ConnectRequested, JoinSucceeded, ResumeSucceeded, ResumeRefused, AttemptFailed, SignalLost,
              LeaveReceived, MediaFailed, CloseRequested, TokenRefreshed, OfferSent, AnswerReceived]


# -- actions -----------------------------------------------------------------------
@dataclass(frozen=True)
class StartJoin:
    """The first join of this session."""
    attempt: int


@dataclass(frozen=True)
class StartResume:
    """Reopen signaling for the same participant; the peer connection stays."""
    attempt: int


@dataclass(frozen=True)
class StartRejoin:
    """Drop signal and peer connection, join from scratch, republish."""
    attempt: int


@dataclass(frozen=True)
class AbortAttempt:
    attempt: int
    reason: str


@dataclass(frozen=True)
class ResendOffer:
    """The offer `offer_id` went out on a signal link that died unanswered."""
    offer_id: int


@dataclass(frozen=True)
class ScheduleRetry:
    attempt_kind: str  # "resume" or "rejoin"
    delay: float


@dataclass(frozen=True)
class Emit:
    name: str
    args: tuple = ()


@dataclass(frozen=True)
class Close:
    """Tear everything down; the session is over."""
    reason: str


Action = Union[StartJoin, StartResume, StartRejoin, AbortAttempt, ResendOffer, ScheduleRetry, Emit, Close]


@dataclass
class SessionLifecycle:
    # None: keep trying until closed; seconds: give up after an outage this long
    window: float | None = None
    # an attempt that reports nothing for this long is aborted and counts as failed
    attempt_timeout: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)

    state: str = field(default="disconnected", init=False)
    reason: str | None = field(default=None, init=False)  # why the session ended
    _attempt: int = field(default=0, init=False)  # the newest attempt's number
    _attempt_kind: str | None = field(default=None, init=False)  # in flight: "join", "resume", "rejoin"
    _attempt_deadline: float | None = field(default=None, init=False)
    _retry_at: float | None = field(default=None, init=False)
    _next_kind: str = field(default="resume", init=False)
    _lost_at: float | None = field(default=None, init=False)
    _lost_reason: str = field(default="", init=False)
    _media_up: bool = field(default=False, init=False)
    _offer: int | None = field(default=None, init=False)  # sent, not yet answered

    # -- the interface ----------------------------------------------------------------
    def handle(self, event: Event, now: float) -> list[Action]:
        method = getattr(self, "_on_" + type(event).__name__)
        return method(event, now)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._retry_at, self._attempt_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[Action]:
        if self._attempt_deadline is not None and now >= self._attempt_deadline:
            kind = self._attempt_kind
            actions: list[Action] = [AbortAttempt(self._attempt, "attempt timed out")]
            self._attempt_over()
            if self.state == "connecting":
                return actions + self._end(f"no answer within {self.attempt_timeout:.0f}s", emit=False)
            return actions + self._failed(now, f"{kind} attempt timed out after {self.attempt_timeout:.0f}s")
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            if self._window_over(now):
                return self._give_up()
            return [self._start(self._next_kind, now)]
        return []

    @property
    def attempt_in_flight(self) -> int | None:
        return self._attempt if self._attempt_kind is not None else None

    @property
    def offer_outstanding(self) -> int | None:
        return self._offer

    # -- events -----------------------------------------------------------------------
    def _on_ConnectRequested(self, ev: ConnectRequested, now: float) -> list[Action]:
        if self.state != "disconnected":
            return []
        self.state, self.reason = "connecting", None
        return [self._start("join", now)]

    def _on_JoinSucceeded(self, ev: JoinSucceeded, now: float) -> list[Action]:
        if not self._current(ev.attempt) or self._attempt_kind not in ("join", "rejoin"):
            return []
        first = self._attempt_kind == "join"
        self._attempt_over()
        self._media_up = True
        self._recovered()
        return [Emit("connected")] if first else [Emit("reconnected", ("rejoin",))]

    def _on_ResumeSucceeded(self, ev: ResumeSucceeded, now: float) -> list[Action]:
        if not self._current(ev.attempt) or self._attempt_kind != "resume":
            return []
        self._attempt_over()
        self._recovered()
        actions: list[Action] = []
        if self._offer is not None:
            # its answer, if any, died with the old socket; without one the peer
            # connection never returns to stable and later offers wait for ever
            actions.append(ResendOffer(self._offer))
        return actions + [Emit("reconnected", ("resume",))]

    def _on_ResumeRefused(self, ev: ResumeRefused, now: float) -> list[Action]:
        if not self._current(ev.attempt):
            return []
        self._attempt_over()
        # the server answered, so it is up: rejoin at once
        return [self._start("rejoin", now)]

    def _on_AttemptFailed(self, ev: AttemptFailed, now: float) -> list[Action]:
        if not self._current(ev.attempt):
            return []
        self._attempt_over()
        if self.state == "connecting":
            return self._end(ev.error, emit=False)  # connect() raises the error itself
        if ev.fatal:
            return self._end(f"token rejected while reconnecting: {ev.error}")
        return self._failed(now, ev.error)

    def _on_SignalLost(self, ev: SignalLost, now: float) -> list[Action]:
        if self.state == "connected":
            return self._lost(ev.reason, "resume" if self._media_up else "rejoin", now)
        if self.state == "connecting":
            return self._abort_connect(f"signal connection lost while joining: {ev.reason}")
        if self.state == "reconnecting" and self._attempt_kind is not None:
            # the attempt's own socket died: the attempt failed
            actions: list[Action] = [AbortAttempt(self._attempt, ev.reason)]
            self._attempt_over()
            return actions + self._failed(now, ev.reason)
        return []

    def _on_LeaveReceived(self, ev: LeaveReceived, now: float) -> list[Action]:
        if ev.action == LeaveAction.RESUME:
            kind = "resume" if self._media_up else "rejoin"
        elif ev.action == LeaveAction.RECONNECT:
            kind = "rejoin"
        else:
            if self.state == "connecting":
                return self._abort_connect(f"server removed us while joining: {ev.reason}")
            return self._close(ev.reason)
        if self.state == "connected":
            return self._lost(f"server asked to {kind} ({ev.reason})", kind, now)
        if self.state == "connecting":
            return self._abort_connect(f"server asked to {kind} while joining ({ev.reason})")
        if self.state == "reconnecting":
            actions: list[Action] = []
            if self._attempt_kind is not None:
                actions.append(AbortAttempt(self._attempt, ev.reason))
                self._attempt_over()
            self._retry_at = None
            return actions + [self._start(kind, now)]
        return []

    def _on_MediaFailed(self, ev: MediaFailed, now: float) -> list[Action]:
        self._media_up = False
        if self.state == "connected":
            return self._lost("media connection failed", "rejoin", now)
        if self.state == "connecting":
            return self._abort_connect("media connection failed while joining")
        if self.state == "reconnecting":
            self._next_kind = "rejoin"
            if self._attempt_kind == "resume":
                actions: list[Action] = [AbortAttempt(self._attempt, "media connection failed")]
                self._attempt_over()
                return actions + [self._start("rejoin", now)]
            if self._attempt_kind == "rejoin":
                actions = [AbortAttempt(self._attempt, "media connection failed")]
                self._attempt_over()
                return actions + self._failed(now, "media connection failed while rejoining")
        return []

    def _on_CloseRequested(self, ev: CloseRequested, now: float) -> list[Action]:
        return self._close(ev.reason)

    def _on_TokenRefreshed(self, ev: TokenRefreshed, now: float) -> list[Action]:
        return [] if self.state == "disconnected" else [Emit("token_refreshed", (ev.token,))]

    def _on_OfferSent(self, ev: OfferSent, now: float) -> list[Action]:
        self._offer = ev.offer_id
        return []

    def _on_AnswerReceived(self, ev: AnswerReceived, now: float) -> list[Action]:
        if self._offer is not None and ev.offer_id in (0, self._offer):
            self._offer = None
        return []

    # -- helpers ----------------------------------------------------------------------
    def _current(self, attempt: int) -> bool:
        return self._attempt_kind is not None and attempt == self._attempt

    def _start(self, kind: str, now: float) -> Action:
        self._attempt += 1
        self._attempt_kind = kind
        self._attempt_deadline = now + self.attempt_timeout
        self._next_kind = kind
        if kind in ("join", "rejoin"):
            self._offer = None  # a new peer connection: old offers are moot
        return {"join": StartJoin, "resume": StartResume, "rejoin": StartRejoin}[kind](self._attempt)

    def _attempt_over(self) -> None:
        self._attempt_kind = None
        self._attempt_deadline = None

    def _lost(self, reason: str, kind: str, now: float) -> list[Action]:
        self.state = "reconnecting"
        self._lost_at = now
        self._lost_reason = reason
        self.backoff.reset()
        return [Emit("reconnecting", (kind,)), self._start(kind, now)]

    def _failed(self, now: float, error: str) -> list[Action]:
        if self._window_over(now):
            return self._give_up()
        delay = self.backoff.next_delay()
        self._retry_at = now + delay
        return [ScheduleRetry(self._next_kind, delay)]

    def _window_over(self, now: float) -> bool:
        return self.window is not None and self._lost_at is not None and now - self._lost_at >= self.window

    def _give_up(self) -> list[Action]:
        return self._end(f"could not reconnect within {self.window:.0f}s: {self._lost_reason}")

    def _recovered(self) -> None:
        self.state = "connected"
        self._retry_at = None
        self._lost_at = None
        self.backoff.reset()

    def _abort_connect(self, reason: str) -> list[Action]:
        actions: list[Action] = []
        if self._attempt_kind is not None:
            actions.append(AbortAttempt(self._attempt, reason))
            self._attempt_over()
        return actions + self._end(reason, emit=False)

    def _close(self, reason: str) -> list[Action]:
        if self.state == "disconnected":
            return []
        actions: list[Action] = []
        if self._attempt_kind is not None:
            actions.append(AbortAttempt(self._attempt, reason))
            self._attempt_over()
        return actions + self._end(reason)

    def _end(self, reason: str, emit: bool = True) -> list[Action]:
        self.state = "disconnected"
        self.reason = reason
        self._retry_at = None
        self._attempt_over()
        return [Close(reason)] + ([Emit("disconnected", (reason,))] if emit else [])
