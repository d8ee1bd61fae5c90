"""The call timeline: everything a dialer records, and nothing it concludes.

A dialer (SIP or modem) only *records*: monotonic-clock events as they happen, the received audio
as a WAV file, and media statistics.  Everything else — outcome, timings, verdicts — is computed
from a :class:`CallRecord` by plain functions (``probe.results.measure``), so it can be tested
without a network or a modem and re-run on old recordings.

Times are ``time.monotonic_ns()`` values.  ``wall_ns``/``mono_ns`` are read back to back once, so
any event converts to UTC as ``wall_ns + (event.t_ns - mono_ns)`` without trusting the wall clock
to stand still during the call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Ev(StrEnum):
    """What happened.  The vocabulary is shared by every channel."""

    DIAL = "dial"  # INVITE sent / ATD written (first one starts the caller's clock)
    CHALLENGE = "challenge"  # 401/407: the dialer answers with credentials and dials again
    PROGRESS = "progress"  # provisional response (SIP 1xx with its code) / modem alerting
    EARLY_MEDIA = "early_media"  # audio flows before answer (183 with SDP, in-band ringback)
    ANSWER = "answer"  # 200 OK / modem connected
    MEDIA_START = "media_start"  # audio flows after answer
    DTMF = "dtmf"  # digits sent
    HANGUP = "hangup"  # the probe hangs up or cancels (detail: why)
    REMOTE_HANGUP = "remote_hangup"  # the far end hung up (BYE received)
    END = "end"  # the call is over (code, reason: SIP final status / modem cause)


@dataclass(frozen=True)
class Event:
    t_ns: int
    kind: Ev
    code: int | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RtpStats:
    """Receive-side RTP statistics, sampled while the stream still existed (before hang-up)."""

    codec: str | None
    packets_received: int
    packets_lost: int
    packets_discarded: int
    packets_reordered: int
    packets_duplicated: int
    jitter_mean_us: int
    jitter_max_us: int
    packets_sent: int
    rtt_mean_us: int | None  # None until an RTCP round trip was measured


@dataclass
class CallRecord:
    """One call as the dialer lived it."""

    channel: str  # "sip" | "gsm" | "analog"
    target: str
    destination: str  # the URI or number dialled
    wall_ns: int  # time.time_ns() read together with mono_ns
    mono_ns: int
    events: list[Event] = field(default_factory=list)
    audio_path: Path | None = None  # received audio, early media included
    rtp: RtpStats | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # channel facts: registration, versions...
    #: Told of every event as it is recorded (``probe.dial.progress.CallSteps``: the steps a
    #: watching operator sees); it only watches, the record stays the dialer's.
    observer: Callable[[Event], None] | None = field(default=None, repr=False, compare=False)

    def add(self, kind: Ev, t_ns: int, code: int | None = None, reason: str | None = None,
            **detail: Any) -> Event:
        event = Event(t_ns, kind, code, reason, detail)
        self.events.append(event)
        if self.observer is not None:
            self.observer(event)
        return event

    def first(self, kind: Ev, *, codes: range | None = None) -> Event | None:
        for event in self.events:
            if event.kind == kind and (codes is None or (event.code is not None
                                                         and event.code in codes)):
                return event
        return None

    def has(self, kind: Ev) -> bool:
        return self.first(kind) is not None
