"""What a call goes through while it runs, one short line per step, for whoever watches it:
``probe call`` on a terminal, or a ``probe call`` whose call the daemon places (the steps come
back over its control socket, probe/daemon/control.py).

The dialers only record :class:`~probe.results.timeline.Event`; :class:`CallSteps` watches the
record (its ``observer``) and turns the events into :class:`Step` as they happen, and ``run_call``
adds the steps after the call (analysing).  A step is plain data with its numbers already in
its text, so it prints the same on either side of the socket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from probe.results.timeline import Ev, Event

log = logging.getLogger("probe.dial.progress")


@dataclass(frozen=True)
class Step:
    """One step of a call: ``name`` is stable (dialling, ringing, answered, hearing, hangup,
    ended, analysing, queued, ...), ``text`` is the line an operator reads."""

    name: str
    text: str
    at_s: float | None = None  # seconds since the first dial; None before it

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "text": self.text, "at_s": self.at_s}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Step:
        at_s = doc.get("at_s")
        return cls(str(doc.get("name", "")), str(doc.get("text", "")),
                   float(at_s) if isinstance(at_s, int | float) else None)


#: Where steps go.  Called from the thread that places the call; must not block for long.
Progress = Callable[[Step], None]

_HANGUPS = {
    "hold_done": "hanging up after {talk} on the line",
    "max_ring": "no answer after ringing {ring}: hanging up",
    "no_progress": "nothing came back in {since}: giving up",
    "aborted": "the call was aborted after {since}",
}


class CallSteps:
    """A :class:`~probe.results.timeline.CallRecord` observer that reports each step once.

    An event stamped earlier than the last one reported (a dialer correcting a time after the
    call, e.g. the answer heard in the modem's recording) is not news, and is not reported.
    """

    def __init__(self, report: Progress, destination: str) -> None:
        self.report = report
        self.destination = destination
        self.t0: int | None = None  # the first dial
        self.ring_ns: int | None = None
        self.answer_ns: int | None = None
        self.last_ns = 0
        self.seen: set[str] = set()

    def __call__(self, event: Event) -> None:
        try:
            if event.t_ns < self.last_ns:
                return
            step = self._step(event)
            if step is None or step.name in self.seen:
                return
            self.seen.add(step.name)
            self.last_ns = event.t_ns
            self.report(step)
        except Exception:  # watching a call must never cost the call
            log.exception("progress report failed")

    def _since(self, t_ns: int, start: int | None) -> str:
        return "-" if start is None else f"{(t_ns - start) / 1e9:.2f} s"

    def _step(self, e: Event) -> Step | None:
        if e.kind == Ev.DIAL:
            if self.t0 is not None:
                return None  # a repeat after a challenge: the challenge step said so
            self.t0 = e.t_ns
            return Step("dialling", f"dialling {self.destination}…", 0.0)
        at = None if self.t0 is None else round((e.t_ns - self.t0) / 1e9, 3)
        since = self._since(e.t_ns, self.t0)
        code = "" if e.code is None else f" ({e.code} {e.reason})" if e.reason else f" ({e.code})"
        if e.kind == Ev.CHALLENGE:
            return Step("challenge", f"answering a {e.code} challenge with credentials", at)
        if e.kind == Ev.PROGRESS and (e.code is None or 180 <= e.code < 190):
            self.ring_ns = e.t_ns if self.ring_ns is None else self.ring_ns  # the first rings
            return Step("ringing", f"ringing after {since}{code}", at)
        if e.kind == Ev.EARLY_MEDIA:
            return Step("early_media", f"early media after {since}", at)
        if e.kind == Ev.ANSWER:
            self.answer_ns = e.t_ns if self.answer_ns is None else self.answer_ns
            rang = (f" (rang {self._since(e.t_ns, self.ring_ns)})"
                    if self.ring_ns is not None else "")
            return Step("answered", f"answered after {since}{rang}", at)
        if e.kind == Ev.MEDIA_START:
            return Step("hearing", "hearing the call…", at)
        if e.kind == Ev.DTMF:
            return Step("dtmf", f"sent DTMF {e.reason} after {since}", at)
        if e.kind == Ev.HANGUP:
            text = _HANGUPS.get(e.reason or "", "hanging up after {since}")
            return Step("hangup", text.format(
                since=since, talk=self._since(e.t_ns, self.answer_ns),
                ring=self._since(e.t_ns, self.ring_ns)), at)
        if e.kind == Ev.REMOTE_HANGUP:
            return Step("remote_hangup", "the hotline hung up after "
                        f"{self._since(e.t_ns, self.answer_ns)} on the line", at)
        if e.kind == Ev.END:
            if self.t0 is None:  # nothing was dialled: the reason says why
                return Step("ended", f"call not placed: {e.reason or 'no reason given'}")
            return Step("ended", f"call over after {since}{code}", at)
        return None
