"""From a call timeline to what the caller lived: outcome, timings, expectation checks.

Plain functions over :class:`~probe.results.timeline.CallRecord`; no network, no clock.

Timing definitions (all from the *first* INVITE, so an authentication round trip counts, as it
does for a caller):

* ``post_dial_delay`` — RFC 6076 "session request delay": INVITE → first non-100 provisional
  response (180/183…), or the final response when no provisional came.
* ``time_to_answer`` — INVITE → 200 OK.
* ``ring_duration`` — first 18x → answer, or → the end of the attempt when never answered.
* ``talk_duration`` — answer → end of the call.
* ``call_duration`` — INVITE → end of the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from probe.config.model import Expectations
from probe.results.timeline import CallRecord, Ev, Event


class Outcome(StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"  # 486, 600
    NO_ANSWER = "no_answer"  # rang past the limit (the probe gave up), or 408 from the network
    REJECTED = "rejected"  # 403, 603, other 4xx/6xx refusals
    NOT_FOUND = "not_found"  # 404, 410, 484, 604: the number/URI does not exist
    UNAVAILABLE = "unavailable"  # 480: the destination is temporarily unavailable
    CONGESTION = "congestion"  # 503: overload / no circuit on the way
    SERVER_ERROR = "server_error"  # 500, 501, 502, 504 and other 5xx
    AUTH_FAILED = "auth_failed"  # 401/407 as final, or 403 to our credentials
    UNREACHABLE = "unreachable"  # nothing came back from the network (timeout, transport error)
    FAILED = "failed"  # the probe itself could not place the call
    # PSTN (modem) outcomes: see classify_modem
    NO_DIAL_TONE = "no_dial_tone"  # analog: no dial tone (dead line); GSM: no service at dial
    NO_CARRIER = "no_carrier"  # the network cleared the attempt without a more precise cause
    UNASSIGNED_NUMBER = "unassigned_number"  # cause 1/3/22/28, or SIT tones on an analog line
    NOT_REGISTERED = "not_registered"  # GSM: the modem is not registered on a network
    NO_SIM = "no_sim"  # GSM: SIM absent, failed or locked
    MODEM_ERROR = "modem_error"  # the modem did not answer, vanished or refused the dial
    ABORTED = "aborted"  # the probe stopped the call before it ended (shutdown): not a verdict


BUSY_CODES = {486, 600}
NOT_FOUND_CODES = {404, 410, 484, 604}


def classify(record: CallRecord) -> Outcome:
    """The outcome of a call, from its timeline (SIP here; modems: :func:`classify_modem`)."""
    if record.channel != "sip":
        return classify_modem(record)
    if record.has(Ev.ANSWER):
        return Outcome.ANSWERED
    hangup = record.first(Ev.HANGUP)
    if hangup is not None and hangup.reason == "max_ring":
        return Outcome.NO_ANSWER
    if hangup is not None and hangup.reason == "aborted":
        return Outcome.ABORTED
    end = record.first(Ev.END)
    if hangup is not None and hangup.reason == "no_progress":
        return Outcome.UNREACHABLE if not _progressed(record) else Outcome.NO_ANSWER
    if end is None or end.code is None:
        return Outcome.FAILED
    if not end.detail.get("from_network", False):
        # pjsip made the final status up itself (Timer B 408, transport error 503...).
        return Outcome.UNREACHABLE
    return outcome_of_sip_code(end.code, retried_with_credentials=dial_attempts(record) > 1)


def outcome_of_sip_code(code: int, *, retried_with_credentials: bool = False) -> Outcome:
    """Outcome for a final SIP status received from the network."""
    if code in BUSY_CODES:
        return Outcome.BUSY
    if code in NOT_FOUND_CODES:
        return Outcome.NOT_FOUND
    if code in (401, 407) or (code == 403 and retried_with_credentials):
        return Outcome.AUTH_FAILED
    if code == 408:
        return Outcome.NO_ANSWER
    if code == 480:
        return Outcome.UNAVAILABLE
    if code == 503:
        return Outcome.CONGESTION
    if 500 <= code < 600:
        return Outcome.SERVER_ERROR
    if 300 <= code < 700:
        return Outcome.REJECTED
    return Outcome.FAILED


def classify_modem(record: CallRecord) -> Outcome:
    """The outcome of a GSM/analog call, from its timeline and ``facts["modem"]``.

    Order: answered; the probe gave up ringing (no_answer); the modem could not place the call
    (its error); then the network's cause (24.008 / Q.850, from AT+CEER or ^CEND); then the
    final result word (BUSY, NO ANSWER, NO DIALTONE, NO CARRIER).
    """
    from probe.at import causes  # plain data

    modem = record.facts.get("modem") or {}
    if record.has(Ev.ANSWER):
        return Outcome.ANSWERED
    hangup = record.first(Ev.HANGUP)
    if hangup is not None and hangup.reason == "max_ring":
        return Outcome.NO_ANSWER
    if modem.get("through_connected") and modem.get("answer_confirmed") is False:
        return Outcome.NO_ANSWER  # "answered" at ringback; the recording: ringback to the end
    error = modem.get("error")
    if error in MODEM_ERROR_OUTCOMES:
        return MODEM_ERROR_OUTCOMES[error]
    if error is not None:
        return Outcome.MODEM_ERROR
    if hangup is not None and hangup.reason == "no_progress":
        return Outcome.UNREACHABLE
    if modem.get("sit"):
        return Outcome.UNASSIGNED_NUMBER
    cause = modem.get("cause")
    for codes, outcome in ((causes.UNASSIGNED, Outcome.UNASSIGNED_NUMBER),
                           (causes.BUSY, Outcome.BUSY), (causes.NO_ANSWER, Outcome.NO_ANSWER),
                           (causes.CONGESTION, Outcome.CONGESTION),
                           (causes.REJECTED, Outcome.REJECTED)):
        if cause in codes:
            return outcome
    result = modem.get("result")
    by_word = {"BUSY": Outcome.BUSY, "NO ANSWER": Outcome.NO_ANSWER,
               "NO DIALTONE": Outcome.NO_DIAL_TONE, "NO DIAL TONE": Outcome.NO_DIAL_TONE,
               "NO CARRIER": Outcome.NO_CARRIER}
    if result in by_word:
        return by_word[result]
    if cause in causes.NORMAL:
        return Outcome.REJECTED  # cleared normally without ever answering
    return Outcome.FAILED if record.first(Ev.END) is None else Outcome.NO_CARRIER


# Where a modem's signalling says little, what the caller heard decides (the issue of every
# polled modem, and of a network that clears with NO CARRIER and no cause): the clearing
# outcomes below are open to the audio; a cause from the network, an answer or the probe's own
# ring limit are not.
WEAK_OUTCOMES = {Outcome.NO_CARRIER, Outcome.UNREACHABLE}
# A modem's busy word (BUSY, V.253 <DLE>b) says "a busy-like tone": the cadence tells busy
# (slow, e.g. 0.5/0.5 s) from congestion / reorder (fast, e.g. 0.25/0.25 s).
TONE_OUTCOMES = {"busy": Outcome.BUSY, "congestion": Outcome.CONGESTION,
                 "number_unobtainable": Outcome.UNASSIGNED_NUMBER}
# A special information tone's code (Telcordia GR-1162 categories): NC and RO are a network
# that could not complete the path (no circuit, reorder), the others a number that does not
# lead to the subscriber (vacant, changed, ineffective, or the ITU-T Q.35 tone).
SIT_CONGESTION = {"NC'", "NC''", "RO'", "RO''"}


@dataclass(frozen=True)
class OutcomeEvidence:
    """Which evidence decided the outcome: the modem's or network's signalling, or the audio.

    ``signalled`` is what the signalling alone said, ``heard`` what in the audio overruled it
    (None when the signalling decided)."""

    decided_by: str  # "signalling" | "audio"
    signalled: Outcome
    heard: str | None = None


def decide_outcome(outcome: Outcome, record: CallRecord,
                   analysis: dict[str, Any] | None) -> tuple[Outcome, OutcomeEvidence]:
    """The outcome of a modem call once what was heard before the clearing is known.

    Only weak signalling is overruled: NO CARRIER or nothing at all (:data:`WEAK_OUTCOMES`) by
    a SIT, a busy / congestion / number-unobtainable tone, ringback or an announcement; a busy
    word by the tone's cadence (busy or congestion).  SIP's final status is precise, and an
    answered call stays answered (its SIT is a failed expectation, see :func:`judge`)."""
    signalling = OutcomeEvidence("signalling", outcome)
    if record.channel == "sip" or not analysis:
        return outcome, signalling
    tones = [t for t in analysis.get("tones") or [] if t.get("kind")]
    if outcome == Outcome.BUSY and (record.facts.get("modem") or {}).get("cause") is None:
        fast = [t for t in tones if t["kind"] == "congestion"]
        if fast and not any(t["kind"] == "busy" for t in tones):
            return Outcome.CONGESTION, OutcomeEvidence("audio", outcome, _heard_tone(fast[-1]))
        return outcome, signalling
    if outcome not in WEAK_OUTCOMES:
        return outcome, signalling
    sit = next((t for t in tones if t["kind"] == "sit"), None)
    if sit is not None:
        heard = (Outcome.CONGESTION if sit.get("sit_code") in SIT_CONGESTION
                 else Outcome.UNASSIGNED_NUMBER)
        return heard, OutcomeEvidence("audio", outcome, _heard_sit(sit))
    decisive = [t for t in tones if t["kind"] in TONE_OUTCOMES]
    if decisive:  # the last one: what the line settled on before it was cleared
        tone = decisive[-1]
        return TONE_OUTCOMES[tone["kind"]], OutcomeEvidence("audio", outcome, _heard_tone(tone))
    speech = analysis.get("speech") or {}
    if speech.get("present"):  # "the subscriber is unavailable" with no tone before it
        return Outcome.UNAVAILABLE, OutcomeEvidence(
            "audio", outcome, f"an announcement ({speech.get('total_s', 0):.1f} s of speech)")
    ringback = [t for t in tones if t["kind"] == "ringback"]
    if ringback:  # it rang, and the network cleared it unanswered
        return Outcome.NO_ANSWER, OutcomeEvidence("audio", outcome, _heard_tone(ringback[-1]))
    return outcome, signalling


def _heard_tone(tone: dict[str, Any]) -> str:
    """``busy tone 425 Hz 0.5/0.5 s at 2.10 s``."""
    freqs = "+".join(f"{f:g}" for f in tone.get("frequencies_hz") or [])
    cadence = "/".join(f"{c:g}" for c in tone.get("cadence_s") or [])
    return " ".join(part for part in (
        tone["kind"].replace("_", " ") + " tone", f"{freqs} Hz" if freqs else "",
        f"{cadence} s" if cadence else "", f"at {tone.get('start_s', 0):.2f} s") if part)


MODEM_ERROR_OUTCOMES = {
    "modem.not_registered": Outcome.NOT_REGISTERED,
    "modem.no_sim": Outcome.NO_SIM,
    "modem.sim_locked": Outcome.NO_SIM,
    "modem.sim_pin_rejected": Outcome.NO_SIM,
}


def dial_attempts(record: CallRecord) -> int:
    return sum(1 for e in record.events if e.kind == Ev.DIAL)


def _progressed(record: CallRecord) -> bool:
    return record.first(Ev.PROGRESS, codes=range(101, 200)) is not None


@dataclass(frozen=True)
class Timings:
    post_dial_delay_ms: int | None
    time_to_answer_ms: int | None
    ring_duration_ms: int | None
    talk_duration_ms: int | None
    call_duration_ms: int | None


def timings(record: CallRecord) -> Timings:
    dial = record.first(Ev.DIAL)
    if dial is None:
        return Timings(None, None, None, None, None)
    ringing = (record.first(Ev.PROGRESS, codes=range(101, 200)) if record.channel == "sip"
               else record.first(Ev.PROGRESS))  # modems: alerting carries no code
    answer = record.first(Ev.ANSWER)
    end = record.first(Ev.END)
    hangup = record.first(Ev.HANGUP)
    final = answer or (end if end and end.detail.get("from_network") else None)
    first_signal = ringing or final
    # When unanswered, ringing stops when the probe gives up or the final response arrives.
    ring_end = answer or hangup or end
    return Timings(
        post_dial_delay_ms=_ms(dial, first_signal),
        time_to_answer_ms=_ms(dial, answer),
        ring_duration_ms=_ms(ringing, ring_end),
        talk_duration_ms=_ms(answer, end),
        call_duration_ms=_ms(dial, end),
    )


def _ms(start: Event | None, stop: Event | None) -> int | None:
    if start is None or stop is None:
        return None
    return round((stop.t_ns - start.t_ns) / 1e6)


@dataclass(frozen=True)
class Check:
    """One expectation the call was held to, as measured."""

    check: str
    met: bool
    limit: Any
    measured: Any


@dataclass(frozen=True)
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return all(c.met for c in self.checks)


def judge(outcome: Outcome, t: Timings, record: CallRecord, expect: Expectations,
          analysis: dict[str, Any] | None = None) -> Verdict:
    """Hold the call to the target's expectations; every check says what it measured.

    ``analysis`` (what was heard, probe/audio): a call whose audio carries a special
    information tone reached the network's announcement, not the hotline — even when the
    network "answered" it — so a heard call is also checked for one."""
    checks = [Check("answered", outcome == Outcome.ANSWERED, "answered", str(outcome))]
    if t.post_dial_delay_ms is not None or outcome == Outcome.ANSWERED:
        pdd = t.post_dial_delay_ms
        checks.append(Check("post_dial_delay_ms", pdd is not None
                            and pdd <= expect.max_post_dial_delay_ms,
                            expect.max_post_dial_delay_ms, pdd))
    if t.ring_duration_ms is not None:
        limit_ms = round(expect.max_ring_s * 1000)
        # The probe hangs up at the limit, so reaching it (not exceeding it) is the failure.
        checks.append(Check("ring_duration_ms", outcome != Outcome.NO_ANSWER
                            and t.ring_duration_ms < limit_ms, limit_ms, t.ring_duration_ms))
    if outcome == Outcome.ANSWERED and expect.require_media and record.channel == "sip":
        received = record.rtp.packets_received if record.rtp else 0
        checks.append(Check("media_received", received > 0, "RTP packets > 0", received))
    elif outcome == Outcome.ANSWERED and expect.require_media and record.audio_path is not None:
        # Modems: checked only where the modem delivers audio (PCM port, V.253 VRX).
        frames = int(record.facts.get("audio_frames") or 0)
        checks.append(Check("media_received", frames > 0, "audio frames > 0", frames))
    if analysis is not None:
        sit = next((tone for tone in analysis.get("tones") or [] if tone.get("kind") == "sit"),
                   None)
        checks.append(Check("no_special_information_tone", sit is None, "none",
                            "none" if sit is None else _heard_sit(sit)))
    return Verdict(checks)


def _heard_sit(tone: dict[str, Any]) -> str:
    """``SIT IC at 0.41 s (intercept: number changed or disconnected)``."""
    code = tone.get("sit_code") or "?"
    meaning = f" ({tone['sit_meaning']})" if tone.get("sit_meaning") else ""
    return f"SIT {code} at {tone.get('start_s', 0):.2f} s{meaning}"
