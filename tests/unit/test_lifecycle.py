"""rtc/lifecycle.py: connect, resume, rejoin, retry and close, on a fake clock.

Each test drives the machine as `Room` does (events in, actions out) and checks
what a user of `Room` would notice: the events emitted, whether it retries,
how long it waits, and that it stops when closed.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import websockets

from lkdevice.rtc.backoff import Backoff
from lkdevice.rtc.errors import ServerUnreachable, TokenRejected
from lkdevice.rtc.lifecycle import (
    AbortAttempt, AnswerReceived, AttemptFailed, Close, CloseRequested, ConnectRequested, Emit, JoinSucceeded,
    LeaveReceived, MediaFailed, OfferSent, ResendOffer, ResumeRefused, ResumeSucceeded, ScheduleRetry,
    SessionLifecycle, SignalLost, StartJoin, StartRejoin, StartResume, TokenRefreshed,
)
from lkdevice.rtc.signaling import LeaveAction


class Extreme:
    """Backoff draws at the top of the range: the longest waits allowed."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Driver:
    """The machine plus a fake clock, recording what a Room user would see."""

    def __init__(self, **kwargs):
        self.lc = SessionLifecycle(**kwargs)
        self.now = 1000.0
        self.emitted: list[tuple] = []
        self.actions: list = []

    def feed(self, event) -> list:
        out = self.lc.handle(event, self.now)
        self._record(out)
        return out

    def _record(self, out: list) -> None:
        self.actions += out
        self.emitted += [(a.name, *a.args) for a in out if isinstance(a, Emit)]

    def wait(self) -> list:
        """Sleep until the machine's next deadline, as Room does, and fire it."""
        deadline = self.lc.next_deadline()
        assert deadline is not None, "the machine has nothing scheduled"
        self.now = max(self.now, deadline)
        out = self.lc.handle_timer(self.now)
        self._record(out)
        return out

    def connected(self) -> "Driver":
        (start,) = self.feed(ConnectRequested())
        assert isinstance(start, StartJoin)
        assert self.feed(JoinSucceeded(start.attempt)) == [Emit("connected")]
        return self

    def started(self, out: list, kind):
        starts = [a for a in out if isinstance(a, kind)]
        assert len(starts) == 1, out
        return starts[0].attempt


def test_connect_emits_connected():
    d = Driver().connected()
    assert d.lc.state == "connected"
    assert d.emitted == [("connected",)]
    assert d.lc.next_deadline() is None


def test_connect_that_fails_ends_without_a_disconnected_event():
    # connect() raises the error itself; nobody was told "connected"
    d = Driver()
    (start,) = d.feed(ConnectRequested())
    out = d.feed(AttemptFailed.from_exception(start.attempt, ServerUnreachable("no answer")))
    assert out == [Close("no answer")]
    assert d.lc.state == "disconnected" and d.emitted == []


def test_signal_lost_while_joining_aborts_the_join():
    d = Driver()
    (start,) = d.feed(ConnectRequested())
    out = d.feed(SignalLost("signal socket closed"))
    assert isinstance(out[0], AbortAttempt) and out[0].attempt == start.attempt
    assert d.lc.state == "disconnected"
    assert "signal socket closed" in d.lc.reason
    assert d.feed(JoinSucceeded(start.attempt)) == []  # a late success changes nothing


# -- drop during an offer -------------------------------------------------------------
def test_offer_in_flight_when_the_signal_drops_is_sent_again_after_resume():
    d = Driver().connected()
    d.feed(OfferSent(3))  # e.g. publish_audio, or the server asked for more receivers
    out = d.feed(SignalLost("signal socket closed (no close frame)"))
    assert out[0] == Emit("reconnecting", ("resume",))
    attempt = d.started(out, StartResume)
    out = d.feed(ResumeSucceeded(attempt))
    # the offer goes out again before the user hears "reconnected", so a
    # handler that publishes straight away queues behind it
    assert out == [ResendOffer(3), Emit("reconnected", ("resume",))]
    d.feed(AnswerReceived(3))
    assert d.lc.offer_outstanding is None
    # the next drop has nothing to resend
    attempt = d.started(d.feed(SignalLost("again")), StartResume)
    assert d.feed(ResumeSucceeded(attempt)) == [Emit("reconnected", ("resume",))]


def test_answered_offer_is_not_sent_again():
    d = Driver().connected()
    d.feed(OfferSent(1))
    d.feed(AnswerReceived(1))
    attempt = d.started(d.feed(SignalLost("x")), StartResume)
    assert not any(isinstance(a, ResendOffer) for a in d.feed(ResumeSucceeded(attempt)))


def test_answer_to_a_superseded_offer_leaves_the_newer_one_outstanding():
    d = Driver().connected()
    d.feed(OfferSent(1))
    d.feed(OfferSent(2))
    d.feed(AnswerReceived(1))
    assert d.lc.offer_outstanding == 2


def test_offer_of_a_peer_connection_replaced_by_a_rejoin_is_not_resent():
    d = Driver().connected()
    d.feed(OfferSent(4))
    out = d.feed(LeaveReceived(LeaveAction.RECONNECT, "MIGRATION"))
    attempt = d.started(out, StartRejoin)
    assert d.feed(JoinSucceeded(attempt)) == [Emit("reconnected", ("rejoin",))]


# -- resume refused, leave{RESUME}, leave{RECONNECT}, media failed -------------------------------
def test_resume_refused_rejoins_at_once_and_says_rejoin():
    d = Driver().connected()
    resume = d.started(d.feed(SignalLost("signal socket closed")), StartResume)
    out = d.feed(ResumeRefused(resume, "STATE_MISMATCH"))
    rejoin = d.started(out, StartRejoin)  # no backoff: the server just answered
    assert d.lc.next_deadline() == d.now + d.lc.attempt_timeout
    assert d.feed(JoinSucceeded(rejoin)) == [Emit("reconnected", ("rejoin",))]
    assert d.emitted == [("connected",), ("reconnecting", "resume"), ("reconnected", "rejoin")]
    assert d.lc.state == "connected"


def test_leave_resume_resumes():
    d = Driver().connected()
    out = d.feed(LeaveReceived(LeaveAction.RESUME, "SIGNAL_SOURCE_CLOSE"))
    assert out[0] == Emit("reconnecting", ("resume",))
    attempt = d.started(out, StartResume)
    assert d.feed(ResumeSucceeded(attempt)) == [Emit("reconnected", ("resume",))]


def test_leave_reconnect_rejoins():
    d = Driver().connected()
    out = d.feed(LeaveReceived(LeaveAction.RECONNECT, "MIGRATION"))
    assert out[0] == Emit("reconnecting", ("rejoin",))
    attempt = d.started(out, StartRejoin)
    assert d.feed(JoinSucceeded(attempt)) == [Emit("reconnected", ("rejoin",))]


def test_leave_reconnect_during_a_resume_switches_to_rejoin():
    d = Driver().connected()
    resume = d.started(d.feed(SignalLost("x")), StartResume)
    out = d.feed(LeaveReceived(LeaveAction.RECONNECT, "MIGRATION"))
    assert out[0] == AbortAttempt(resume, "MIGRATION")
    rejoin = d.started(out, StartRejoin)
    assert d.feed(ResumeSucceeded(resume)) == []  # the aborted attempt's late report
    assert d.feed(JoinSucceeded(rejoin)) == [Emit("reconnected", ("rejoin",))]


def test_leave_disconnect_ends_the_session_with_the_server_reason():
    d = Driver().connected()
    assert d.feed(LeaveReceived(LeaveAction.DISCONNECT, "PARTICIPANT_REMOVED")) == [
        Close("PARTICIPANT_REMOVED"), Emit("disconnected", ("PARTICIPANT_REMOVED",))]
    assert d.lc.state == "disconnected"


def test_media_failed_rejoins():
    d = Driver().connected()
    out = d.feed(MediaFailed())
    assert out[0] == Emit("reconnecting", ("rejoin",))
    attempt = d.started(out, StartRejoin)
    assert d.feed(JoinSucceeded(attempt)) == [Emit("reconnected", ("rejoin",))]


def test_media_failed_during_a_resume_rejoins_instead():
    d = Driver().connected()
    resume = d.started(d.feed(SignalLost("x")), StartResume)
    out = d.feed(MediaFailed())
    assert out[0] == AbortAttempt(resume, "media connection failed")
    d.started(out, StartRejoin)
    assert d.emitted.count(("reconnecting", "resume")) == 1 and ("reconnecting", "rejoin") not in d.emitted


def test_signal_lost_after_media_failed_rejoins_rather_than_resumes():
    d = Driver().connected()
    rejoin = d.started(d.feed(MediaFailed()), StartRejoin)
    out = d.feed(AttemptFailed(rejoin, "server unreachable"))
    assert out == [ScheduleRetry("rejoin", out[0].delay)]
    d.started(d.wait(), StartRejoin)


# -- failures during the outage ----------------------------------------------------------
@pytest.mark.parametrize("exc", [
    websockets.exceptions.ConnectionClosedError(None, None),
    asyncio.TimeoutError(),
    RuntimeError("RTCPeerConnection is closed"),
    ServerUnreachable("cannot reach ws://x"),
], ids=["ConnectionClosed", "TimeoutError", "RuntimeError", "ServerUnreachable"])
def test_any_exception_in_an_attempt_is_a_failed_attempt_and_retried(exc):
    d = Driver().connected()
    resume = d.started(d.feed(SignalLost("x")), StartResume)
    failed = AttemptFailed.from_exception(resume, exc)
    assert not failed.fatal
    out = d.feed(failed)
    assert [type(a) for a in out] == [ScheduleRetry]
    assert d.lc.state == "reconnecting"
    d.started(d.wait(), StartResume)


def test_signal_lost_during_an_attempt_fails_that_attempt():
    # today's Room ignored it outside "connected" and could end "connected" on a dead socket
    d = Driver().connected()
    rejoin = d.started(d.feed(LeaveReceived(LeaveAction.RECONNECT, "x")), StartRejoin)
    out = d.feed(SignalLost("signal socket closed"))
    assert out[0] == AbortAttempt(rejoin, "signal socket closed")
    assert isinstance(out[1], ScheduleRetry)
    assert d.feed(JoinSucceeded(rejoin)) == []
    assert d.lc.state == "reconnecting"
    assert d.feed(SignalLost("the dead socket again")) == []  # nothing in flight: nothing to fail


def test_an_attempt_that_never_reports_is_aborted_and_retried():
    d = Driver(attempt_timeout=20.0).connected()
    resume = d.started(d.feed(SignalLost("x")), StartResume)
    out = d.wait()
    assert d.now == 1000.0 + 20.0
    assert out[0] == AbortAttempt(resume, "attempt timed out")
    assert isinstance(out[1], ScheduleRetry)
    d.started(d.wait(), StartResume)


def test_server_gone_for_ten_minutes_keeps_retrying_within_the_cap():
    d = Driver(backoff=Backoff(initial=0.3, maximum=10.0, rng=random.Random())).connected()
    attempt = d.started(d.feed(SignalLost("signal socket closed")), StartResume)
    lost_at = d.now
    delays, caps = [], []
    while d.now - lost_at < 600:
        d.now += 1.0  # each attempt takes a second to fail
        caps.append(d.lc.backoff.cap())
        (retry,) = d.feed(AttemptFailed.from_exception(attempt, ServerUnreachable("cannot reach")))
        assert isinstance(retry, ScheduleRetry)
        delays.append(retry.delay)
        attempt = d.started(d.wait(), StartResume)
    assert d.lc.state == "reconnecting"
    assert not any(isinstance(a, Close) for a in d.actions)
    assert all(0 <= delay <= cap <= 10.0 for delay, cap in zip(delays, caps))
    assert len(delays) >= 600 / 11  # never waits more than the cap between attempts
    # the server comes back, but forgot us: rejoin
    rejoin = d.started(d.feed(ResumeRefused(attempt, "STATE_MISMATCH")), StartRejoin)
    assert d.feed(JoinSucceeded(rejoin)) == [Emit("reconnected", ("rejoin",))]
    assert d.emitted.count(("reconnecting", "resume")) == 1


def test_backoff_starts_over_after_a_recovery():
    d = Driver(backoff=Backoff(initial=0.5, maximum=10.0, rng=Extreme())).connected()
    attempt = d.started(d.feed(SignalLost("x")), StartResume)
    for _ in range(6):
        d.feed(AttemptFailed(attempt, "down"))
        attempt = d.started(d.wait(), StartResume)
    d.feed(ResumeSucceeded(attempt))
    attempt = d.started(d.feed(SignalLost("again")), StartResume)
    assert d.feed(AttemptFailed(attempt, "down")) == [ScheduleRetry("resume", 0.5)]


def test_a_window_when_set_still_ends_the_outage():
    d = Driver(window=60.0, backoff=Backoff(rng=Extreme())).connected()
    attempt = d.started(d.feed(SignalLost("signal socket closed")), StartResume)
    out: list = []
    while not any(isinstance(a, Close) for a in out):
        d.now += 1.0
        out = d.feed(AttemptFailed(attempt, "down"))
        if not any(isinstance(a, Close) for a in out):
            out = d.wait()
            if not any(isinstance(a, Close) for a in out):
                attempt = d.started(out, StartResume)
        assert d.now - 1000.0 < 60 + 10 + 2
    assert d.emitted[-1] == ("disconnected", "could not reconnect within 60s: signal socket closed")
    assert d.lc.next_deadline() is None


def test_token_expired_during_the_outage_ends_with_a_clear_reason():
    # the join token and the server's refresh token both expired while the server was gone
    d = Driver().connected()
    d.feed(TokenRefreshed("eyJhbGciOi.refreshed.sig"))
    resume = d.started(d.feed(SignalLost("signal socket closed")), StartResume)
    d.feed(AttemptFailed(resume, "server unreachable"))
    attempt = d.started(d.wait(), StartResume)
    refused = TokenRejected(401, "invalid token: token is expired (exp)")
    out = d.feed(AttemptFailed.from_exception(attempt, refused))
    reason = "token rejected while reconnecting: invalid token: token is expired (exp)"
    assert out == [Close(reason), Emit("disconnected", (reason,))]
    assert d.lc.next_deadline() is None
    assert d.lc.state == "disconnected"
    assert d.emitted == [("connected",), ("token_refreshed", "eyJhbGciOi.refreshed.sig"),
                         ("reconnecting", "resume"), ("disconnected", reason)]


# -- close ------------------------------------------------------------------------------
def test_close_while_waiting_to_retry_stops_for_good():
    d = Driver().connected()
    attempt = d.started(d.feed(SignalLost("x")), StartResume)
    d.feed(AttemptFailed(attempt, "down"))
    assert d.feed(CloseRequested("CLIENT_INITIATED")) == [
        Close("CLIENT_INITIATED"), Emit("disconnected", ("CLIENT_INITIATED",))]
    assert d.lc.next_deadline() is None
    assert d.lc.handle_timer(d.now + 3600) == []
    assert d.feed(CloseRequested("CLIENT_INITIATED")) == []
    assert d.emitted.count(("disconnected", "CLIENT_INITIATED")) == 1


def test_close_during_an_attempt_aborts_it_and_ignores_its_outcome():
    d = Driver().connected()
    attempt = d.started(d.feed(SignalLost("x")), StartResume)
    out = d.feed(CloseRequested("CLIENT_INITIATED"))
    assert out == [AbortAttempt(attempt, "CLIENT_INITIATED"), Close("CLIENT_INITIATED"),
                   Emit("disconnected", ("CLIENT_INITIATED",))]
    assert d.feed(ResumeSucceeded(attempt)) == []
    assert d.feed(AttemptFailed(attempt, "cancelled")) == []
    assert d.feed(SignalLost("late")) == [] and d.feed(MediaFailed()) == []
    assert ("reconnected", "resume") not in d.emitted
    assert d.emitted.count(("disconnected", "CLIENT_INITIATED")) == 1
    assert d.lc.next_deadline() is None


def test_close_while_joining_aborts_the_join():
    d = Driver()
    (start,) = d.feed(ConnectRequested())
    out = d.feed(CloseRequested("CLIENT_INITIATED"))
    assert out[0] == AbortAttempt(start.attempt, "CLIENT_INITIATED")
    assert d.feed(JoinSucceeded(start.attempt)) == []
    assert ("connected",) not in d.emitted
