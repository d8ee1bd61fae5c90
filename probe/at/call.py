"""One voice call through a modem, recorded as a call timeline.  Protocol only, no hardware.

The caller's clock starts when the ``ATD...`` write completed.  From then on every URC (stamped
by the reader when its line arrived) is translated through the profile into a signal; the first
alerting becomes ``progress``, the first answer ``answer``, the end ``end`` with the network's
cause (``AT+CEER`` or ``^CEND``).  ``OK`` after ``ATD...;`` only means "dial accepted".

::

    ATD+33...;  ──OK──  +CLCC ..,2  ──  +CLCC ..,3 / MO RING / ^CONF / ^DSCI ..,7 / <DLE>r
       DIAL                                   PROGRESS (alerting)
    ── VOICE CALL: BEGIN / MO CONNECTED / ^CONN / ^DSCI ..,3 / end of last ringback ──
       ANSWER
    ── hold_s (DTMF after dtmf_after_s) ── AT+CHUP ── +CLCC ..,6 / ^CEND / NO CARRIER ──
       HANGUP                                                      END (cause)

Nothing is sent while ``ATD`` waits for its final result: V.250 aborts a dial in progress on
any character, and some modems hold that result until the far end answers (``dial_holds``:
Wavecom/Sierra, ``+COLP=1``; the held ``OK`` or ``CONNECT`` is the answer).  URCs are handled
meanwhile; audio, DTMF and polls wait for the final result; the probe's own give-up aborts the
dial with a CR on purpose.  A modem that only offers polling (generic 27.007) gets ``AT+CLCC``
every ``poll_s`` once ``ATD`` is final — the first poll at once, so a held ``OK`` of an unknown
modem shows the call active and the answer is placed between the ``OK`` and that poll; any
other state change is placed halfway between the two polls that saw it (error at most
``poll_s / 2``).

Analog (V.253) modems answer ``ATD`` only when their answer timer (``AT+VRA``) ran out after
the ringback stopped, so the answer is the end of the last ringback burst (``<DLE>q`` after
``<DLE>r``), known when the ``OK`` arrives; then the sample stream (``AT+VRX``) is recorded.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from probe.at.causes import cause_text, parse_ceer
from probe.at.errors import AtError, ModemGone, ModemTimeout
from probe.at.port import AtPort, fields
from probe.at.profiles import Profile, Signal, urc_key
from probe.at.router import Pending
from probe.at.urc import Urc
from probe.results.timeline import CallRecord, Ev

log = logging.getLogger("probe.at.call")

TICK_S = 0.05  # longest wait in the loop: bounds decision lateness, not event stamps
END_SIGNALS = {Signal.ENDED, Signal.BUSY, Signal.NO_ANSWER, Signal.NO_DIALTONE}
RESULT_WORD = {Signal.BUSY: "BUSY", Signal.NO_ANSWER: "NO ANSWER",
               Signal.NO_DIALTONE: "NO DIALTONE", Signal.ENDED: "NO CARRIER"}
WORD_URCS = {"busy": "BUSY", "no_answer": "NO ANSWER", "no_dialtone": "NO DIALTONE",
             "no_carrier": "NO CARRIER"}


@dataclass(frozen=True)
class CallPlan:
    number: str
    max_pdd_s: float = 5.0
    max_ring_s: float = 30.0
    hold_s: float = 10.0
    dtmf: str | None = None
    dtmf_after_s: float = 2.0
    poll_s: float | None = None  # override the profile's AT+CLCC polling period
    answer_timer_s: float = 7.0  # V.253 AT+VRA: the modem's OK comes this long after ringback


@dataclass
class AudioHooks:
    """What the dialer does with voice: ``vrx_sink`` gets V.253 sample bytes; ``pcm_on`` /
    ``pcm_off`` start and stop reading the PCM port once the modem streams voice on it."""

    vrx_sink: Callable[[bytes], None] | None = None
    pcm_on: Callable[[], None] | None = None
    pcm_off: Callable[[], None] | None = None
    call_over: Callable[[], None] | None = None  # the call ended: stop any capture (ALSA)
    dialled: Callable[[int], None] | None = None  # ATD written at t_ns: the recording starts


class ModemCall:
    """Live one call; :meth:`run` records into ``record`` and never leaves a call up."""

    def __init__(self, at: AtPort, profile: Profile, record: CallRecord, plan: CallPlan,
                 audio: AudioHooks | None = None,
                 clock: Callable[[], int] = time.monotonic_ns,
                 abort: threading.Event | None = None,
                 beat: Callable[[], None] | None = None) -> None:
        self.at = at
        self.p = profile
        self.record = record
        self.plan = plan
        self.audio = audio or AudioHooks()
        self.clock = clock
        self.abort = abort or threading.Event()  # set from any thread: hang up now
        self.beat = beat or (lambda: None)  # the loop is alive (the daemon's watchdog)
        self.f: dict[str, Any] = record.facts.setdefault("modem", {})
        self.t0: int | None = None
        self.alerting_ns: int | None = None
        self.answer_ns: int | None = None
        self.ended = False
        self.dial_pending: Pending | None = None
        self.last_ringback: int | None = None
        self.ringback_end: int | None = None
        self.sit_ns: int | None = None
        self.cause: int | None = None
        self.vrx_on = False
        self.pcm_on = False
        self.poll_s = (plan.poll_s or profile.poll_clcc_s) if profile.poll_clcc_s else None
        self.next_poll: int | None = None
        self.prev_obs: int | None = None
        self.seen_in_list = False
        self.f.update(call_progress=_progress_source(profile), answer_source=None,
                      through_connect_possible=profile.through_connect,
                      ringback_bursts=0 if profile.vrx else None, dial_tone=None, sit=None,
                      result=None, end_signal=None, cause=None, cause_text=None,
                      cause_source=None, end_duration_s=None, ended_by=None, dropped=False,
                      audio_source=None, idle_after=None)

    # -- the whole call ---------------------------------------------------------------------
    def run(self) -> None:
        self.at.drain_urcs()
        try:
            self._dial()
            while not self.ended:
                self._step()
        except ModemGone as exc:
            self._fail("modem.gone", f"port lost: {exc}")
        except ModemTimeout as exc:
            self._fail("modem.timeout", str(exc))
        except AtError as exc:
            self._fail("modem.error", str(exc))
        finally:
            self._release()
            self.record.events.sort(key=lambda e: e.t_ns)

    def _dial(self) -> None:
        command = self.p.dial.format(number=self.plan.number)
        pending = self.at.submit(command)
        assert pending.sent_ns is not None
        self.t0 = pending.sent_ns
        self.record.add(Ev.DIAL, self.t0, attempt=1, command=command)
        if self.audio.dialled is not None:
            self.audio.dialled(self.t0)
        # Its final result may be "dial accepted" at once, or held until the answer: either
        # way nothing else is written until it comes (a character would abort the dial).
        self.dial_pending = pending

    def _dial_final(self, final: str, t_ns: int) -> None:
        """The final result of ``ATD``: the answer, the failure, or "dial accepted"."""
        if self.p.answer_by_timer:
            self._analog_final(final, t_ns)
            return
        if final in ("OK", "VCON") or final.startswith("CONNECT"):
            if self.p.dial_holds or final.startswith("CONNECT"):
                self._answered(t_ns, f"final:{final.split()[0]}")
            elif self.poll_s:
                self.next_poll = self.clock()  # at once: a held OK shows the call active
                self.prev_obs = t_ns
            if self.answer_ns is not None:
                self._start_audio()  # an answer URC came before the final: audio waited
            return
        self._final_to_end(final, t_ns)

    def _step(self) -> None:
        self.beat()
        now = self.clock()
        wait = min(TICK_S, max(0.0, (self._next_deadline(now) - now) / 1e9))
        try:
            urc: Urc | None = self.at.urcs.get(timeout=wait)
        except queue.Empty:
            urc = None
        if urc is not None:
            self._urc(urc)
        pending = self.dial_pending
        if pending is not None and pending.done.is_set() and not self.ended:
            self.dial_pending = None
            response = self.at.finish(pending, 0)
            self._dial_final(response.final, response.final_ns)
        if self.ended:
            return
        now = self.clock()
        if self.next_poll is not None and self.dial_pending is None and now >= self.next_poll:
            self._poll()
        self._deadlines(self.clock())

    def _next_deadline(self, now: int) -> int:
        marks = [now + int(TICK_S * 1e9)]
        if self.next_poll is not None:
            marks.append(self.next_poll)
        return min(marks)

    # -- URCs -------------------------------------------------------------------------------
    def _urc(self, urc: Urc) -> None:
        if urc.name == "gone":
            raise ModemGone(urc.text)
        if urc.name == "dle":
            signal = self.p.dle.get(urc.text)
            if signal is not None:
                self._signal(signal, urc.t_ns, f"dle:{urc.text}", urc.text)
            return
        if urc.name == "stream_end":
            self.vrx_on = False
            return
        fields_ = urc.fields
        if urc.name == self.p.duration_urc and fields_.get("dur"):
            self.f["end_duration_s"] = int(fields_["dur"])
        if urc.name == self.p.cause_urc and fields_.get("cause"):
            self.cause = int(fields_["cause"])
            self.f["cause_source"] = urc.name
        signal = self.p.signals.get(urc_key(urc.name, fields_))
        for state_urc in self.p.states:
            if state_urc.urc == urc.name and fields_.get("dir", "0") == "0":
                signal = state_urc.states.get(int(fields_[state_urc.field]), signal)
        if signal is not None:
            self._signal(signal, urc.t_ns, f"urc:{urc.name}", urc.text)

    def _signal(self, signal: Signal, t_ns: int, source: str, text: str) -> None:
        if self.ended:
            return
        if signal is Signal.ALERTING:
            if self.p.vrx:
                self.f["ringback_bursts"] += 1
                self.last_ringback = t_ns
            if self.alerting_ns is None and self.answer_ns is None:
                self.alerting_ns = t_ns
                self.record.add(Ev.PROGRESS, t_ns, None, "alerting", source=source)
        elif signal is Signal.RINGBACK_END:
            if self.last_ringback is not None and self.answer_ns is None:
                self.ringback_end = t_ns
        elif signal is Signal.DIAL_TONE:
            self.f["dial_tone"] = True
        elif signal is Signal.SIT:
            self.f["sit"] = True
            self.sit_ns = self.sit_ns or t_ns
        elif signal is Signal.ANSWERED:
            self._answered(t_ns, source)
        elif signal in END_SIGNALS:
            if self.dial_pending is not None:
                self._end_while_dialling(signal, t_ns)
                return
            self._network_end(signal, t_ns, text)

    def _answered(self, t_ns: int, source: str) -> None:
        if self.answer_ns is not None:
            return
        self.answer_ns = t_ns
        self.f["answer_source"] = source
        if self.p.through_connect:
            # LTE CS fallback may report answer at ringback: the UART is not proof.
            self.f["answer_confirmed"] = None
        self.record.add(Ev.ANSWER, t_ns, None, "answered", source=source)
        self._start_audio()

    def _network_end(self, signal: Signal, t_ns: int, text: str) -> None:
        if self.answer_ns is not None:
            self.record.add(Ev.REMOTE_HANGUP, t_ns)
            self.f["ended_by"] = "network"
            hold_left = self.answer_ns + int(self.plan.hold_s * 1e9) - t_ns
            self.f["dropped"] = hold_left > 0 and self._cause_now() not in (16, 31)
        self._end(t_ns, signal, text, from_network=True)

    def _cause_now(self) -> int | None:
        if self.cause is None:
            self._ceer()
        return self.cause

    # -- analog specifics -------------------------------------------------------------------
    def _analog_final(self, final: str, t_ns: int) -> None:
        """The final result of a V.253 ATD."""
        if final in ("OK", "VCON") or final.startswith("CONNECT"):
            if self.ringback_end is not None:
                self._answered(self.ringback_end, "ringback_end")
            else:  # no ringback heard (+VRN ran out): the timer is all there is
                self._answered(t_ns, "answer_timer")
            return
        self._final_to_end(final, self.sit_ns or t_ns)

    def _end_while_dialling(self, signal: Signal, t_ns: int) -> None:
        """The call ended (busy tone, loop break, a released-call URC) while ATD is still
        pending: the modem's final result follows; the end is when the signal came."""
        pending = self.dial_pending
        assert pending is not None
        self.dial_pending = None
        try:
            response = self.at.finish(pending, 3.0)
            word = response.final
        except ModemTimeout:
            self.at.write_raw(b"\r")  # any character aborts dialling
            word = RESULT_WORD[signal]
        if word in ("OK", "VCON") or word.startswith("CONNECT"):
            word = RESULT_WORD[signal]  # "dial accepted" just before the end: the end says it
        self._final_to_end(word, t_ns)

    def _final_to_end(self, final: str, t_ns: int) -> None:
        signal = {"BUSY": Signal.BUSY, "NO ANSWER": Signal.NO_ANSWER,
                  "NO DIALTONE": Signal.NO_DIALTONE, "NO DIAL TONE": Signal.NO_DIALTONE,
                  "NO CARRIER": Signal.ENDED}.get(final)
        if signal is None:  # ERROR, +CME ERROR: n, COMMAND NOT SUPPORT
            self.f["error"] = self.f.get("error") or "modem.dial_refused"
            self._end(t_ns, None, final, from_network=False)
            return
        self._end(t_ns, signal, final, from_network=True)

    # -- polling ----------------------------------------------------------------------------
    def _poll(self) -> None:
        assert self.poll_s is not None
        response = self.at.command("AT+CLCC", 3.0, check=False)
        self.next_poll = self.clock() + int(self.poll_s * 1e9)
        observed = (response.sent_ns + response.final_ns) // 2
        estimate = ((self.prev_obs or observed) + observed) // 2
        self.prev_obs = observed
        stat = None
        for payload in response.all("+CLCC:"):
            values = fields(payload)
            if len(values) >= 4 and values[1] == 0 and values[3] == 0:
                stat = values[2]
        if stat is None:
            if self.seen_in_list:
                self._network_end(Signal.ENDED, estimate, "call gone from +CLCC")
            return
        self.seen_in_list = True
        for state_urc in self.p.states:
            if state_urc.urc == "clcc":
                signal = state_urc.states.get(stat)
                if signal is not None:
                    self._signal(signal, estimate, "poll:clcc", f"+CLCC stat {stat}")

    # -- the probe's own decisions ----------------------------------------------------------
    def _deadlines(self, now: int) -> None:
        plan = self.plan
        assert self.t0 is not None
        if self.abort.is_set():
            self._give_up("aborted")
            return
        if self.answer_ns is None:
            if self.alerting_ns is not None:
                rang_until = now
                if self.ringback_end is not None and self.ringback_end >= (self.last_ringback
                                                                          or 0):
                    # V.253: ringback stopped; the modem's verdict comes after its answer
                    # timer.  The ring time stops counting at the end of the ringback.
                    rang_until = self.ringback_end
                    if now - self.ringback_end > int((plan.answer_timer_s + 2.0) * 1e9):
                        rang_until = now  # no verdict at all: the modem is not telling
                if rang_until - self.alerting_ns >= int(plan.max_ring_s * 1e9):
                    self._give_up("max_ring")
            elif now - self.t0 >= int((plan.max_pdd_s + plan.max_ring_s) * 1e9):
                self._give_up("no_progress")
            return
        if plan.dtmf and not self.record.has(Ev.DTMF) and self.dial_pending is None \
                and now - self.answer_ns >= int(plan.dtmf_after_s * 1e9):
            self._send_dtmf(plan.dtmf)
        if now - self.answer_ns >= int(plan.hold_s * 1e9):
            self._give_up("hold_done")

    def _give_up(self, why: str) -> None:
        now = self.clock()
        self.record.add(Ev.HANGUP, now, reason=why)
        self.f["ended_by"] = "probe"
        self._stop_audio()
        if self.dial_pending is not None:
            pending, self.dial_pending = self.dial_pending, None
            self.at.write_raw(b"\r")  # V.250: any character aborts the dial attempt
            with contextlib.suppress(ModemTimeout):
                self.at.finish(pending, 3.0)
        t_end = self._hangup() or self.clock()
        self._drain_after_hangup()
        self._end(t_end, None, "hangup", from_network=False)

    def _send_dtmf(self, digits: str) -> None:
        restart = self.vrx_on
        if restart:
            self._stop_vrx()
        t = self.clock()
        for digit in digits:
            self.at.command(self.p.dtmf.format(digit=digit), 5.0)
        self.record.add(Ev.DTMF, t, reason=digits, method="at+vts")
        if restart:
            self._start_vrx()

    def _hangup(self) -> int | None:
        """Hang up with the profile's commands; the t_ns of the first OK."""
        for command in self.p.hangup:
            try:
                response = self.at.command(command, 5.0, check=False)
            except ModemTimeout:
                continue
            if response.final == "OK":
                return response.final_ns
        return None

    def _drain_after_hangup(self, timeout_s: float = 0.3) -> None:
        """After our hang-up the modem reports the end (``+CLCC ..,6``, ``VOICE CALL: END``,
        ``^CEND``): read those for the call duration, a short bounded wait.  Profiles whose
        modem reports no duration do not wait."""
        if self.p.duration_urc is None:
            return
        deadline = self.clock() + int(timeout_s * 1e9)
        while (left := deadline - self.clock()) > 0:
            try:
                urc = self.at.urcs.get(timeout=left / 1e9)
            except queue.Empty:
                return
            if urc.name == "gone":
                return
            if urc.name == self.p.duration_urc and urc.fields.get("dur"):
                self.f["end_duration_s"] = int(urc.fields["dur"])
                return
            if urc.name in ("no_carrier",):
                return

    # -- end of the call --------------------------------------------------------------------
    def _end(self, t_ns: int, signal: Signal | None, text: str, *, from_network: bool) -> None:
        if self.ended:
            return
        self.ended = True
        self._stop_audio()
        if self.f["result"] is None:  # the modem's words; a DLE code is named by its meaning
            word = RESULT_WORD.get(signal, text) if signal is not None else text
            self.f["result"] = word if len(text) <= 1 else text
        self.f["end_signal"] = str(signal) if signal else None
        if from_network:
            self._ceer()
        if self.cause is not None and self.f["cause_source"] is None:
            self.f["cause_source"] = "ceer"
        self.f["cause"] = self.cause
        self.f["cause_text"] = cause_text(self.cause) or self.f.get("cause_text")
        self.record.add(Ev.END, t_ns, self.cause, self.f["cause_text"] or self.f["result"],
                        from_network=from_network, result=self.f["result"])

    def _ceer(self) -> None:
        if self.cause is not None or not self.p.cause_command or self.at.gone is not None:
            return
        try:
            response = self.at.command(self.p.cause_command, 3.0, check=False)
        except ModemTimeout:
            return
        code, text = parse_ceer(response.text)
        self.cause = code
        if text:
            self.f["cause_text"] = text
        if code is not None:
            self.f["cause_source"] = "ceer"

    def _fail(self, error: str, detail: str) -> None:
        log.warning("modem call failed: %s (%s)", error, detail)
        self.f["error"] = error
        if not self.ended:
            self.ended = True
            self.record.add(Ev.END, self.clock(), None, detail, from_network=False,
                            result=None)
            self.f["result"] = self.f["result"] or error

    def _release(self) -> None:
        """Whatever happened: audio off, the call hung up, the modem checked idle."""
        if self.at.gone is not None:
            self.pcm_on = self.vrx_on = False
            for off in (self.audio.pcm_off, self.audio.call_over):
                if off is not None:
                    off()
            return
        for urc in self.at.drain_urcs():  # e.g. BUSY after the +CLCC stat 6 that ended it
            if urc.name in WORD_URCS and self.f["ended_by"] != "probe" \
                    and self.f["result"] not in WORD_URCS.values():
                self.f["result"] = WORD_URCS[urc.name]
        try:
            self._stop_audio()
            if self.dial_pending is not None:
                pending, self.dial_pending = self.dial_pending, None
                self.at.write_raw(b"\r")
                with contextlib.suppress(ModemTimeout):
                    self.at.finish(pending, 3.0)
            self._hangup()
            self.f["idle_after"] = self._idle()
        except AtError as exc:
            log.error("could not hang up cleanly: %s", exc)
            self.f["idle_after"] = False

    def _idle(self) -> bool:
        if self.p.channel != "gsm":
            return True
        for _ in range(2):
            response = self.at.command("AT+CLCC", 3.0, check=False)
            if response.final == "OK" and not response.all("+CLCC:"):
                return True
            self._hangup()
        return False

    # -- audio ------------------------------------------------------------------------------
    def _start_audio(self) -> None:
        """Voice on, once ATD is final (an answer URC may come first: it then waits)."""
        if self.dial_pending is not None or self.vrx_on or self.pcm_on:
            return
        if self.p.vrx and self.audio.vrx_sink is not None:
            self._start_vrx()
        elif self.p.pcm is not None and self.audio.pcm_on is not None:
            self._start_pcm()

    def _start_pcm(self) -> None:
        assert self.p.pcm is not None
        for _attempt in range(8):  # SIM7600 needs ~100 ms after VOICE CALL: BEGIN: retry
            response = self.at.command(self.p.pcm.start, 3.0, check=False)
            if response.final == "OK":
                self.pcm_on = True
                self.f["audio_source"] = f"pcm:{self.p.pcm.start}"
                if not self.record.has(Ev.MEDIA_START):
                    self.record.add(Ev.MEDIA_START, response.final_ns, source="pcm")
                assert self.audio.pcm_on is not None
                self.audio.pcm_on()
                return
            self._absorb(0.05)
        log.warning("%s refused %s: no audio", self.p.name, self.p.pcm.start)

    def _absorb(self, timeout_s: float) -> None:
        """Handle URCs for up to ``timeout_s`` (a retry pace that still hears the call end)."""
        deadline = self.clock() + int(timeout_s * 1e9)
        while not self.ended and (left := deadline - self.clock()) > 0:
            try:
                urc = self.at.urcs.get(timeout=left / 1e9)
            except queue.Empty:
                return
            self._urc(urc)

    def _start_vrx(self) -> None:
        response = self.at.command("AT+VRX", 3.0, check=False,
                                   stream_sink=self.audio.vrx_sink)
        if response.final.startswith("CONNECT"):
            self.vrx_on = True
            self.f["audio_source"] = "vrx"
            if not self.record.has(Ev.MEDIA_START):
                self.record.add(Ev.MEDIA_START, response.final_ns, source="vrx")

    def _stop_vrx(self) -> None:
        """``<DLE>!`` ends the stream; the modem answers ``<DLE><ETX>`` then ``OK``."""
        self.at.write_raw(b"\x10!")
        deadline = self.clock() + 1_000_000_000
        got_end = False
        while (left := deadline - self.clock()) > 0:
            try:
                urc = self.at.urcs.get(timeout=left / 1e9)
            except queue.Empty:
                break
            if urc.name == "stream_end":
                got_end = True
            elif got_end and urc.name == "unknown" and urc.text == "OK":
                break
            else:
                self._urc(urc)
        self.vrx_on = False

    def _stop_audio(self) -> None:
        if self.audio.call_over is not None:
            self.audio.call_over()
        if self.vrx_on and self.at.gone is None:
            self._stop_vrx()
        if self.pcm_on:
            self.pcm_on = False
            assert self.p.pcm is not None
            if self.p.pcm.stop and self.at.gone is None:
                with contextlib.suppress(AtError):
                    self.at.command(self.p.pcm.stop, 3.0, check=False)
            if self.audio.pcm_off is not None:
                self.audio.pcm_off()


def _progress_source(profile: Profile) -> str:
    if profile.vrx:
        return "v253_dle"
    if profile.poll_clcc_s:
        return "clcc_poll"
    return "urc"
