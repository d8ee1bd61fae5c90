"""probe.results.measure on hand-built call timelines: outcome, timings and verdicts, no network."""

from __future__ import annotations

from typing import Any

import pytest

from probe.config.model import Expectations
from probe.results.measure import (
    Outcome,
    Timings,
    classify,
    dial_attempts,
    judge,
    outcome_of_sip_code,
    timings,
)
from probe.results.timeline import CallRecord, Ev, RtpStats
from tests.records import add_events

MONO = 5_000_000_000_000
WALL = 1_795_000_000_000_000_000


def at(ms: float) -> int:
    return MONO + round(ms * 1_000_000)


def record(*events: tuple[Any, ...], rtp: RtpStats | None = None) -> CallRecord:
    """A SIP call record from ``(ms, kind[, code[, reason[, detail]]])`` tuples."""
    r = CallRecord(channel="sip", target="hot", destination="sip:hotline@127.0.0.1",
                   wall_ns=WALL, mono_ns=MONO, rtp=rtp)
    return add_events(r, events, at)


NET = {"from_network": True}
LOCAL = {"from_network": False}


def rtp_stats(received: int) -> RtpStats:
    return RtpStats(codec="PCMU/8000", packets_received=received, packets_lost=0,
                    packets_discarded=0, packets_reordered=0, packets_duplicated=0,
                    jitter_mean_us=200, jitter_max_us=400, packets_sent=received,
                    rtt_mean_us=None)


def refused(code: int, *, attempts: int = 1, provisional: int | None = 180,
            from_network: bool = True) -> CallRecord:
    """Dialled (``attempts`` INVITEs, a 401 between them), maybe rang, then ``code`` as final."""
    events: list[tuple[Any, ...]] = [(0, Ev.DIAL)]
    for n in range(1, attempts):
        events += [(10 * n, Ev.CHALLENGE, 401, "Unauthorized"), (10 * n, Ev.DIAL)]
    if provisional is not None:
        events.append((200, Ev.PROGRESS, provisional, "Ringing"))
    events.append((700, Ev.END, code, "x", NET if from_network else LOCAL))
    return record(*events)


def answered(*, end_ms: float = 3500, rtp: RtpStats | None = None) -> CallRecord:
    return record((0, Ev.DIAL), (300, Ev.PROGRESS, 180, "Ringing"), (1500, Ev.ANSWER, 200, "OK"),
                  (1500.4, Ev.MEDIA_START), (end_ms - 0.2, Ev.HANGUP, None, "hold_done"),
                  (end_ms, Ev.END, 200, "OK", NET), rtp=rtp)


# ------------------------------------------------------------------------------- outcome


@pytest.mark.parametrize(("code", "outcome"), [
    (486, Outcome.BUSY), (600, Outcome.BUSY),
    (404, Outcome.NOT_FOUND), (410, Outcome.NOT_FOUND), (484, Outcome.NOT_FOUND),
    (604, Outcome.NOT_FOUND),
    (401, Outcome.AUTH_FAILED), (407, Outcome.AUTH_FAILED),
    (403, Outcome.REJECTED),  # one INVITE: refused, not a credentials problem
    (408, Outcome.NO_ANSWER),
    (480, Outcome.UNAVAILABLE),
    (503, Outcome.CONGESTION),
    (500, Outcome.SERVER_ERROR), (501, Outcome.SERVER_ERROR), (502, Outcome.SERVER_ERROR),
    (504, Outcome.SERVER_ERROR), (580, Outcome.SERVER_ERROR),
    (603, Outcome.REJECTED), (488, Outcome.REJECTED), (400, Outcome.REJECTED),
    (415, Outcome.REJECTED), (302, Outcome.REJECTED), (699, Outcome.REJECTED),
])
def test_final_code_from_the_network(code: int, outcome: Outcome) -> None:
    assert classify(refused(code)) == outcome
    assert classify(refused(code, provisional=None)) == outcome
    assert outcome_of_sip_code(code) == outcome


@pytest.mark.parametrize(("code", "attempts", "outcome"), [
    (403, 1, Outcome.REJECTED),
    (403, 2, Outcome.AUTH_FAILED),  # 403 to our credentials
    (401, 2, Outcome.AUTH_FAILED),  # credentials answered, challenged again
    (407, 2, Outcome.AUTH_FAILED),
    (486, 2, Outcome.BUSY),  # authenticated, then busy: not an auth problem
    (603, 2, Outcome.REJECTED),
])
def test_final_code_after_a_digest_challenge(code: int, attempts: int, outcome: Outcome) -> None:
    r = refused(code, attempts=attempts)
    assert dial_attempts(r) == attempts
    assert classify(r) == outcome
    assert outcome_of_sip_code(code, retried_with_credentials=attempts > 1) == outcome


@pytest.mark.parametrize("code", [100, 180, 200, 299, 700, 999])
def test_codes_that_are_not_refusals_are_failed(code: int) -> None:
    assert outcome_of_sip_code(code) == Outcome.FAILED


@pytest.mark.parametrize("code", [408, 503, 500, 486, 404])
def test_final_made_up_by_the_stack_is_unreachable(code: int) -> None:
    """Timer B (408) or a transport error (503) pjsip reports itself: nothing came back."""
    assert classify(refused(code, provisional=None, from_network=False)) == Outcome.UNREACHABLE


def test_final_without_from_network_detail_is_not_trusted() -> None:
    r = record((0, Ev.DIAL), (32000, Ev.END, 408, "Request Timeout"))
    assert classify(r) == Outcome.UNREACHABLE


@pytest.mark.parametrize(("events", "outcome"), [
    # rang past the target's limit: the probe cancelled
    ([(0, Ev.DIAL), (200, Ev.PROGRESS, 180), (30200, Ev.HANGUP, None, "max_ring"),
      (30201, Ev.END, 487, "Request Terminated", NET)], Outcome.NO_ANSWER),
    # max_ring wins even if the stack's final is local
    ([(0, Ev.DIAL), (200, Ev.PROGRESS, 180), (30200, Ev.HANGUP, None, "max_ring"),
      (30201, Ev.END, 487, "Request Terminated", LOCAL)], Outcome.NO_ANSWER),
    # nothing at all came back before the silence limit
    ([(0, Ev.DIAL), (6000, Ev.HANGUP, None, "no_progress"),
      (6001, Ev.END, 487, "x", LOCAL)], Outcome.UNREACHABLE),
    # only 100 Trying: the server is there but never progressed — still nothing for a caller
    ([(0, Ev.DIAL), (5, Ev.PROGRESS, 100, "Trying"), (6000, Ev.HANGUP, None, "no_progress"),
      (6001, Ev.END, 487, "x", NET)], Outcome.UNREACHABLE),
    # 183 progress without ringing, then the probe gave up: the hotline is there, unanswered
    ([(0, Ev.DIAL), (300, Ev.PROGRESS, 183), (6000, Ev.HANGUP, None, "no_progress"),
      (6001, Ev.END, 487, "x", NET)], Outcome.NO_ANSWER),
    # the probe stopped the call itself (shutdown): no verdict on the hotline
    ([(0, Ev.DIAL), (200, Ev.PROGRESS, 180), (900, Ev.HANGUP, None, "aborted"),
      (901, Ev.END, 487, "Request Terminated", NET)], Outcome.ABORTED),
    # no END at all (the dialer died mid-call)
    ([(0, Ev.DIAL), (200, Ev.PROGRESS, 180)], Outcome.FAILED),
    # END without a code: the call could not be placed (makeCall raised)
    ([(0, Ev.END, None, "Invalid URI", LOCAL)], Outcome.FAILED),
    ([], Outcome.FAILED),
    # answered wins over whatever followed
    ([(0, Ev.DIAL), (500, Ev.ANSWER, 200), (900, Ev.REMOTE_HANGUP),
      (901, Ev.END, 200, "OK", NET)], Outcome.ANSWERED),
    ([(0, Ev.DIAL), (500, Ev.ANSWER, 200), (1500, Ev.HANGUP, None, "hold_done"),
      (11500, Ev.END, None, "call did not end after hang-up", LOCAL)], Outcome.ANSWERED),
])
def test_local_hangups_and_missing_ends(events: list[tuple[Any, ...]], outcome: Outcome) -> None:
    assert classify(record(*events)) == outcome


SIP_OUTCOMES = {
    Outcome.ANSWERED, Outcome.BUSY, Outcome.NO_ANSWER, Outcome.REJECTED, Outcome.NOT_FOUND,
    Outcome.UNAVAILABLE, Outcome.CONGESTION, Outcome.SERVER_ERROR, Outcome.AUTH_FAILED,
    Outcome.UNREACHABLE, Outcome.FAILED, Outcome.ABORTED,
}


def test_every_sip_outcome_is_reachable_from_a_timeline() -> None:
    seen = {classify(refused(code)) for code in (486, 404, 401, 408, 480, 503, 500, 603)}
    seen |= {classify(answered()), classify(refused(408, from_network=False)),
             classify(record((0, Ev.DIAL))),
             classify(record((0, Ev.DIAL), (100, Ev.HANGUP, None, "aborted"),
                             (101, Ev.END, 487, "x", LOCAL)))}
    assert seen == SIP_OUTCOMES


# ------------------------------------------------------------------------------- timings


def test_timings_of_an_answered_call_are_exact_milliseconds() -> None:
    assert timings(answered(end_ms=3500)) == Timings(
        post_dial_delay_ms=300, time_to_answer_ms=1500, ring_duration_ms=1200,
        talk_duration_ms=2000, call_duration_ms=3500)


def test_100_trying_is_not_the_post_dial_delay() -> None:
    r = record((0, Ev.DIAL), (3, Ev.PROGRESS, 100, "Trying"), (250, Ev.PROGRESS, 183),
               (300, Ev.PROGRESS, 180), (900, Ev.ANSWER, 200), (1900, Ev.END, 200, "OK", NET))
    t = timings(r)
    assert t.post_dial_delay_ms == 250  # first non-100 provisional (RFC 6076)
    assert t.ring_duration_ms == 650  # from the first 18x
    assert t.time_to_answer_ms == 900


def test_timings_count_from_the_first_invite_across_a_challenge() -> None:
    r = record((0, Ev.DIAL), (40, Ev.CHALLENGE, 401), (40.1, Ev.DIAL), (340, Ev.PROGRESS, 180),
               (1340, Ev.ANSWER, 200), (2340, Ev.END, 200, "OK", NET))
    t = timings(r)
    assert (t.post_dial_delay_ms, t.time_to_answer_ms, t.call_duration_ms) == (340, 1340, 2340)


def test_answered_without_provisional_times_the_answer() -> None:
    r = record((0, Ev.DIAL), (420, Ev.ANSWER, 200), (1420, Ev.END, 200, "OK", NET))
    t = timings(r)
    assert t.post_dial_delay_ms == 420  # no 18x: the 200 itself
    assert t.ring_duration_ms is None
    assert t.talk_duration_ms == 1000


def test_refused_after_ringing() -> None:
    t = timings(refused(486))
    assert t == Timings(post_dial_delay_ms=200, time_to_answer_ms=None, ring_duration_ms=500,
                        talk_duration_ms=None, call_duration_ms=700)


def test_refused_at_once_times_the_final_response() -> None:
    t = timings(refused(486, provisional=None))
    assert t.post_dial_delay_ms == 700
    assert t.ring_duration_ms is None


def test_unanswered_rings_until_the_probe_cancels() -> None:
    r = record((0, Ev.DIAL), (200, Ev.PROGRESS, 180), (2200, Ev.HANGUP, None, "max_ring"),
               (2203, Ev.END, 487, "Request Terminated", NET))
    t = timings(r)
    assert t.ring_duration_ms == 2000  # to the CANCEL, not to the 487
    assert t.call_duration_ms == 2203
    assert t.time_to_answer_ms is None and t.talk_duration_ms is None


def test_a_local_final_is_no_post_dial_delay() -> None:
    r = record((0, Ev.DIAL), (32000, Ev.END, 408, "Request Timeout", LOCAL))
    t = timings(r)
    assert t.post_dial_delay_ms is None
    assert t.call_duration_ms == 32000


def test_no_dial_means_no_timings() -> None:
    assert timings(record((0, Ev.END, None, "Invalid URI", LOCAL))) == Timings(
        None, None, None, None, None)


@pytest.mark.parametrize(("ms", "rounded"), [(300.4, 300), (300.6, 301), (0.2, 0), (999.5, 1000)])
def test_milliseconds_are_rounded(ms: float, rounded: int) -> None:
    r = record((0, Ev.DIAL), (ms, Ev.PROGRESS, 180))
    assert timings(r).post_dial_delay_ms == rounded


# ------------------------------------------------------------------------------- judge


def verdict_checks(record_: CallRecord, expect: Expectations) -> dict[str, tuple[bool, Any, Any]]:
    verdict = judge(classify(record_), timings(record_), record_, expect)
    return {c.check: (c.met, c.limit, c.measured) for c in verdict.checks}


def test_a_good_call_meets_every_check() -> None:
    r = answered(rtp=rtp_stats(100))
    verdict = judge(classify(r), timings(r), r, Expectations())
    assert verdict.met
    assert {c.check: (c.met, c.limit, c.measured) for c in verdict.checks} == {
        "answered": (True, "answered", "answered"),
        "post_dial_delay_ms": (True, 5000, 300),
        "ring_duration_ms": (True, 30000, 1200),
        "media_received": (True, "RTP packets > 0", 100),
    }


@pytest.mark.parametrize(("limit_ms", "met"), [(299, False), (300, True), (301, True)])
def test_post_dial_delay_limit(limit_ms: int, met: bool) -> None:
    r = answered(rtp=rtp_stats(100))
    checks = verdict_checks(r, Expectations(max_post_dial_delay_ms=limit_ms))
    assert checks["post_dial_delay_ms"] == (met, limit_ms, 300)
    verdict = judge(classify(r), timings(r), r, Expectations(max_post_dial_delay_ms=limit_ms))
    assert verdict.met is met


def test_answered_without_any_pdd_fails_the_pdd_check() -> None:
    """An answer with no INVITE recorded cannot prove its delay."""
    r = record((500, Ev.ANSWER, 200), (900, Ev.END, 200, "OK", NET), rtp=rtp_stats(5))
    assert verdict_checks(r, Expectations())["post_dial_delay_ms"] == (False, 5000, None)


@pytest.mark.parametrize(("rtp", "require", "expected"), [
    (rtp_stats(100), True, (True, "RTP packets > 0", 100)),
    (rtp_stats(0), True, (False, "RTP packets > 0", 0)),
    (None, True, (False, "RTP packets > 0", 0)),
    (rtp_stats(0), False, None),
    (None, False, None),
])
def test_media_required(rtp: RtpStats | None, require: bool,
                        expected: tuple[bool, Any, Any] | None) -> None:
    checks = verdict_checks(answered(rtp=rtp), Expectations(require_media=require))
    assert checks.get("media_received") == expected


@pytest.mark.parametrize(("ring_ms", "limit_s", "met"), [
    (1200, 30, True), (1999, 2, True), (2000, 2, False), (2500, 2, False), (1500, 1.5, False),
])
def test_ring_limit_on_answered_calls(ring_ms: int, limit_s: float, met: bool) -> None:
    r = record((0, Ev.DIAL), (100, Ev.PROGRESS, 180), (100 + ring_ms, Ev.ANSWER, 200),
               (1100 + ring_ms, Ev.END, 200, "OK", NET), rtp=rtp_stats(50))
    checks = verdict_checks(r, Expectations(max_ring_s=limit_s))
    assert checks["ring_duration_ms"] == (met, round(limit_s * 1000), ring_ms)


def test_no_answer_fails_the_ring_limit() -> None:
    r = record((0, Ev.DIAL), (200, Ev.PROGRESS, 180), (2200, Ev.HANGUP, None, "max_ring"),
               (2201, Ev.END, 487, "Request Terminated", NET))
    checks = verdict_checks(r, Expectations(max_ring_s=2))
    assert checks["answered"] == (False, "answered", "no_answer")
    assert checks["ring_duration_ms"] == (False, 2000, 2000)
    assert "media_received" not in checks


def test_refusal_fails_only_on_answered() -> None:
    checks = verdict_checks(refused(486), Expectations())
    assert checks == {
        "answered": (False, "answered", "busy"),
        "post_dial_delay_ms": (True, 5000, 200),
        "ring_duration_ms": (True, 30000, 500),
    }


def test_unreachable_has_nothing_to_time() -> None:
    r = record((0, Ev.DIAL), (6000, Ev.HANGUP, None, "no_progress"),
               (6001, Ev.END, 487, "x", LOCAL))
    checks = verdict_checks(r, Expectations())
    assert checks == {"answered": (False, "answered", "unreachable")}


def test_slow_refusal_fails_the_pdd_check_too() -> None:
    checks = verdict_checks(refused(503, provisional=None),
                            Expectations(max_post_dial_delay_ms=500))
    assert checks["post_dial_delay_ms"] == (False, 500, 700)
