"""PSTN dialer: test calls through a GSM or analog voice modem, recorded like SIP calls.

Thin on purpose: it opens the port (a pyserial URL from ``[modems.gsm]``/``[modems.analog]``),
climbs the recovery ladder when the modem does not answer, and wires audio into the call's WAV.
The protocol lives in ``probe/at/`` (session: init, identity, SIM, radio; call: the timeline).

Recovery ladder, before every call::

    port gone (unplugged, re-enumerating)  -> reopen, retried until reopen_wait_s
    (the path still not there               -> result with error "modem.port_missing")
    no OK to "AT" (3 tries)                -> close, reopen, "AT" again
    still nothing                          -> power-cycle (RESET / power key, STATUS checked)
    still nothing                          -> result with error "modem.unresponsive"

Example::

    with ModemDialer(config.modem("gsm")) as dialer:
        record = dialer.call("+33472000390", target.expect, target="support",
                             audio_path=Path("/var/lib/hotline-probe/audio/x.wav"))

Audio: the modem's own (V.253 ``AT+VRX``, PCM port with ``audio_port``), else ``arecord`` on
``alsa_device`` from just before ``ATD`` to the end of the call (early media included).  Where
the network may through-connect at ringback (A76xx), the recording decides when the far end
answered (:func:`probe.dial.modem_audio.hear_answer`): ``answer_confirmed`` and
``through_connected`` say so in the result, and the answer moves to the speech onset.

Whether the analog line is free (nobody on the phone) is asked before the dial by the caller:
the daemon seizes the line (probe/board/line.py ``LineMonitor.seize``) and defers the call.

SIM and network: a SIM asking for its PIN gets ``sim_pin`` once; a refused PIN is never sent
again by this dialer (three wrong ones lock the SIM).  A modem still searching for a network is
waited for up to ``register_wait_s``.

Health: :meth:`ModemDialer.health` (any thread, no AT traffic) is the last known radio facts;
:meth:`ModemDialer.refresh_health` (the dialer's own thread, between calls) re-reads them.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probe.at.call import AudioHooks, CallPlan, ModemCall
from probe.at.errors import AtError, ModemGone, ModemTimeout
from probe.at.port import AtPort, Transport, open_url
from probe.at.profiles import Profile
from probe.at.session import ModemSession
from probe.config.model import Expectations, ModemConfig, Target
from probe.dial.modem_audio import AlsaRecorder, PcmReader, WavSink, hear_answer
from probe.dial.modem_power import PowerKey
from probe.errors import DialerError
from probe.results.timeline import CallRecord, Ev, Event

log = logging.getLogger("probe.modem")


class ModemUnusable(DialerError):
    """The modem cannot place a call; ``code`` is the stable cause (``modem.unresponsive``)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(f"{code}: {detail}")


class ModemDialer:
    """Places PSTN test calls through one modem.  Not thread-safe: one call at a time."""

    def __init__(self, config: ModemConfig, *, pin_factory: Any = None,
                 opener: Callable[[str, int], Transport] = open_url,
                 clock: Callable[[], int] = time.monotonic_ns, sync_timeout_s: float = 1.0,
                 reopen_wait_s: float = 10.0, poll_s: float | None = None,
                 sim_wait_s: float = 20.0) -> None:
        self.config = config
        self.pin_factory = pin_factory
        self.opener = opener
        self.clock = clock
        self.sync_timeout_s = sync_timeout_s
        self.reopen_wait_s = reopen_wait_s
        self.poll_s = poll_s
        self.sim_wait_s = sim_wait_s
        self.last_beat = time.monotonic()  # the daemon's watchdog reads it
        self._abort = threading.Event()
        self.at: AtPort | None = None
        self.session: ModemSession | None = None
        self.profile: Profile | None = None
        self._power: PowerKey | None = None
        self._lost = False  # the last call lost the port (unplug): the next one reopens
        self._pin_refused = False  # the SIM refused config.sim_pin: never sent again
        self._health_lock = threading.Lock()
        self._health: dict[str, Any] = {"channel": config.kind, "state": "unknown",
                                        "error": None, "updated_at": None, **HEALTH_EMPTY}
        self._health_mono: float | None = None
        if config.power_pin is not None or config.reset_pin is not None:
            from probe.at.profiles import PROFILES

            profile = PROFILES.get(config.model)  # "auto": assume a toggling key (STATUS)
            self._power = PowerKey(config, pin_factory=pin_factory,
                                   toggle=profile.power_toggle if profile else True)

    def __enter__(self) -> ModemDialer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def abort(self) -> None:
        """Hang up the call in progress as soon as possible (thread-safe; e.g. at shutdown)."""
        self._abort.set()

    def _beat(self) -> None:
        self.last_beat = time.monotonic()

    def close(self) -> None:
        self._close_port()
        if self._power is not None:
            self._power.close()
            self._power = None

    # -- the call ---------------------------------------------------------------------------
    def call(self, number: str, expect: Expectations, *, target: str, audio_path: Path,
             dtmf: str | None = None, dtmf_after_s: float = 2.0,
             on_event: Callable[[Event], None] | None = None) -> CallRecord:
        """Place one call to ``number``; the record of what happened (never raises for a
        modem or network failure: those are results).  ``on_event`` is told of each event as
        it is recorded (the progress of the call)."""
        record = CallRecord(channel=self.config.kind, target=target, destination=number,
                            wall_ns=time.time_ns(), mono_ns=self.clock(), observer=on_event)
        facts: dict[str, Any] = record.facts.setdefault("modem", {})
        facts["recovery"] = []
        facts["port"] = self.config.port
        self._abort.clear()
        self._beat()
        error = self._prepare(facts)
        if error is not None:
            self._set_health(facts, error[0])
            return self._not_placed(record, *error)
        self._live(record, number, expect, dtmf, dtmf_after_s, audio_path)
        if self.at is not None and self.at.gone is not None:
            self._close_port()  # unplugged: the next call reopens (re-enumeration)
            self._lost = True
        self._set_health(facts, facts.get("error"))
        return record

    def _prepare(self, facts: dict[str, Any], *,
                 wait_registration: bool = True) -> tuple[str, str] | None:
        """Modem ready, SIM unlocked, network registered; (error code, detail) if not."""
        try:
            self._ready(facts.setdefault("recovery", []))
            assert self.session is not None and self.profile is not None
            facts.update(self.session.facts)
            if self.profile.channel == "gsm":
                self._check_network(facts, wait_registration)
        except ModemUnusable as exc:
            return exc.code, str(exc)
        except (ModemGone, ModemTimeout) as exc:
            self._close_port()
            return "modem.unresponsive", str(exc)
        except _NotReady as exc:
            return exc.args[0], exc.args[1]
        return None

    def destination(self, target: Target) -> str | None:
        """The target's number (None: it has none to dial over a modem)."""
        return target.number

    # -- health (the daemon's health record) --------------------------------------------
    def facts(self) -> dict[str, Any]:
        """The modem's last known radio facts (:meth:`health`), any thread."""
        return {"modem": self.health()}

    def health(self) -> dict[str, Any]:
        """The modem's last known radio facts, for the daemon's health record.

        Cheap and thread-safe: no AT traffic, a copy of what the last call (or
        :meth:`refresh_health`) read.  Keys: ``channel``, ``state`` (``"ready"``,
        ``"not_ready"``: see ``error``, ``"unknown"``: never talked to), ``error`` (the
        last ``modem.*`` cause or None), ``profile``, ``manufacturer``, ``model``,
        ``firmware``, ``imei`` (masked), ``sim``, ``registration`` ({cs, ps, eps} stats),
        ``registration_state``, ``registered``, ``operator``, ``access_technology``,
        ``signal_dbm``, ``rsrp_dbm``, ``rsrq_db``, ``updated_at`` (Unix time of the reading)
        and ``age_s`` (seconds since it, None before the first)."""
        with self._health_lock:
            doc = copy.deepcopy(self._health)
            mono = self._health_mono
        doc["age_s"] = round(time.monotonic() - mono, 1) if mono is not None else None
        at = self.at
        doc["urcs_dropped"] = at.urcs_dropped if at is not None else 0
        return doc

    def refresh_health(self) -> dict[str, Any]:
        """Re-read the radio facts now (AT traffic): call it from the thread that places the
        calls, between calls.  Opens the port (recovery ladder included) when needed; does
        not wait for a searching modem.  Returns :meth:`health`."""
        facts: dict[str, Any] = {}
        self._beat()
        error = self._prepare(facts, wait_registration=False)
        self._set_health(facts, error[0] if error else None)
        return self.health()

    def _set_health(self, facts: dict[str, Any], error: str | None) -> None:
        known = {key: copy.deepcopy(facts[key]) for key in HEALTH_EMPTY if key in facts}
        with self._health_lock:
            self._health.update(known)
            self._health["error"] = error
            self._health["state"] = "ready" if error is None else "not_ready"
            self._health["updated_at"] = round(time.time(), 3)
            self._health_mono = time.monotonic()

    def _live(self, record: CallRecord, number: str, expect: Expectations, dtmf: str | None,
              dtmf_after_s: float, audio_path: Path) -> None:
        assert self.at is not None and self.profile is not None
        profile = self.profile
        plan = CallPlan(number, max_pdd_s=expect.max_post_dial_delay_ms / 1000,
                        max_ring_s=expect.max_ring_s, hold_s=expect.hold_s, dtmf=dtmf,
                        dtmf_after_s=dtmf_after_s, poll_s=self.poll_s,
                        answer_timer_s=round(self.config.ringback_silence_s * 10) / 10)
        sink: WavSink | None = None
        reader: PcmReader | None = None
        alsa: AlsaRecorder | None = None
        hooks = AudioHooks()
        if profile.vrx:
            sink = WavSink(audio_path)
            hooks.vrx_sink = sink.u8
        elif profile.pcm is not None and self.config.audio_port:
            sink = WavSink(audio_path)
            reader = PcmReader(self.config.audio_port, sink, baud=self.config.baud,
                               clock=self.clock)
            reader.open()
            hooks.pcm_on, hooks.pcm_off = reader.start, reader.stop
        elif self.config.alsa_device:
            sink = WavSink(audio_path)
            longest = plan.max_pdd_s + plan.max_ring_s + plan.hold_s + ALSA_MARGIN_S
            alsa = AlsaRecorder(self.config.alsa_device, sink, clock=self.clock,
                                max_s=math.ceil(longest))
            hooks.call_over, hooks.dialled = alsa.stop, alsa.begin_at
            alsa.start()  # before ATD, so the recording holds the whole call
            if not alsa.wait_running(ALSA_START_S):
                log.warning("ALSA capture %s: no samples after %.1f s; dialling anyway",
                            self.config.alsa_device, ALSA_START_S)
        try:
            ModemCall(self.at, profile, record, plan, hooks, clock=self.clock,
                      abort=self._abort, beat=self._beat).run()
        finally:
            if reader is not None:
                reader.close()
            if alsa is not None:
                alsa.stop()  # idempotent: normally stopped at the end of the call already
            if sink is not None:
                sink.close()
                record.audio_path = sink.path
                record.facts["audio_frames"] = sink.frames
        facts = record.facts["modem"]
        first_ns: int | None = None
        if reader is not None and reader.first.ns is not None:
            first_ns = reader.first.ns
            _restamp(record, Ev.MEDIA_START, first_ns, source="pcm")
        if alsa is not None:
            facts["audio_source"] = f"alsa:{self.config.alsa_device}"
            if alsa.error:
                facts["audio_error"] = alsa.error
            if alsa.first_sample_ns is not None and sink is not None and sink.frames:
                dial = record.first(Ev.DIAL)
                first_ns = max(alsa.first_sample_ns, dial.t_ns if dial else 0)
                answer = record.first(Ev.ANSWER)
                if answer is None or first_ns < answer.t_ns:
                    record.add(Ev.EARLY_MEDIA, first_ns, source="alsa")
                if answer is not None:
                    record.add(Ev.MEDIA_START, max(first_ns, answer.t_ns), source="alsa")
        if profile.through_connect and first_ns is not None and sink is not None \
                and sink.frames and record.has(Ev.ANSWER):
            self._hear_answer(record, sink.path, first_ns)
        record.events.sort(key=lambda e: e.t_ns)

    def _hear_answer(self, record: CallRecord, path: Path, first_ns: int) -> None:
        """The modem may have said "answered" at ringback: let the recording decide."""
        uart = record.first(Ev.ANSWER)
        assert uart is not None
        facts = record.facts["modem"]
        try:
            check = hear_answer(path, first_ns, uart.t_ns)
        except Exception:  # the analysis must not cost us the call's result
            log.exception("answer check on %s failed", path)
            return
        facts["answer_confirmed"] = check.confirmed
        facts["through_connected"] = check.through_connected
        if not check.through_connected:
            return  # no ringback after the UART's answer: it was the answer
        log.info("%s: the network through-connected at ringback; the recording %s",
                 self.config.kind, "places the answer" if check.confirmed else
                 "holds no answer")
        record.events.remove(uart)
        facts["uart_answer_source"] = facts.get("answer_source")
        media = record.first(Ev.MEDIA_START)
        if media is not None and (check.answer_ns is None or media.t_ns < check.answer_ns):
            record.events.remove(media)  # what came before the real answer was early media
            record.add(Ev.EARLY_MEDIA, media.t_ns, **media.detail)
        if check.answer_ns is None:
            facts["answer_source"] = None
            return
        facts["answer_source"] = "audio"
        record.add(Ev.ANSWER, check.answer_ns, None, "answered", source="audio",
                   uart_t_ns=uart.t_ns)
        record.add(Ev.MEDIA_START, check.answer_ns, source="audio")

    def _not_placed(self, record: CallRecord, code: str, detail: str) -> CallRecord:
        log.warning("%s modem: call not placed: %s", self.config.kind, detail)
        record.facts["modem"]["error"] = code
        record.add(Ev.END, self.clock(), None, detail, from_network=False, result=None)
        return record

    def _check_network(self, facts: dict[str, Any], wait_registration: bool = True) -> None:
        assert self.session is not None
        sim = self.session.sim_state()
        facts["sim"] = sim
        if self.session.pin_rejected:
            self._pin_refused = True
        if sim != "READY":
            if sim == "ABSENT":
                code = "modem.no_sim"
            elif self._pin_refused:
                code = "modem.sim_pin_rejected"
            else:
                code = "modem.sim_locked"
            raise _NotReady(code, f"SIM state {sim}")
        wait_s = self.config.register_wait_s if wait_registration else 0.0
        self._beat()
        facts.update(self.session.wait_registered(wait_s))
        self._beat()
        if not facts.get("registered"):
            raise _NotReady("modem.not_registered",
                            f"not registered ({facts.get('registration_state')})")

    # -- recovery ---------------------------------------------------------------------------
    def _ready(self, steps: list[str]) -> None:
        """An open, answering, initialised modem, climbing the ladder when needed."""
        if self.at is None or self.at.gone is not None:
            if self.at is not None or self._lost:
                steps.append("reopen")
            self._lost = False
            self._reopen()
        assert self.session is not None
        if not self.session.sync(3, self.sync_timeout_s):
            steps.append("reopen")
            self._reopen()
            if not self.session.sync(3, self.sync_timeout_s):
                self._power_cycle(steps)
        if self.profile is None:
            try:
                self.profile = self.session.initialise()
            except AtError as exc:
                raise ModemUnusable("modem.init_failed", str(exc)) from exc

    def _reopen(self) -> None:
        self._close_port()
        deadline = time.monotonic() + self.reopen_wait_s
        while True:
            try:
                transport = self.opener(self.config.port, self.config.baud)
                break
            except ModemGone as exc:  # unplugged or re-enumerating: the path comes back
                if time.monotonic() >= deadline:
                    if (missing := port_missing(self.config.port)) is not None:
                        raise ModemUnusable("modem.port_missing", missing) from exc
                    raise ModemUnusable("modem.gone", str(exc)) from exc
                time.sleep(0.25)  # back-off between open attempts, bounded by reopen_wait_s
        self.at = AtPort(transport, name=f"modem-{self.config.kind}", clock=self.clock).start()
        self.session = ModemSession(self.at, channel=self.config.kind, model=self.config.model,
                                    sim_pin=None if self._pin_refused else self.config.sim_pin,
                                    clock=self.clock,
                                    sim_wait_s=self.sim_wait_s,
                                    init_extra={"vra": round(self.config.ringback_silence_s
                                                             * 10)})
        self.profile = None

    def _power_cycle(self, steps: list[str]) -> None:
        config = self.config
        if config.power_pin is None and config.reset_pin is None:
            raise ModemUnusable("modem.unresponsive", "no answer to AT, even after reopening "
                                "the port; no power_pin or reset_pin to power-cycle it")
        assert self._power is not None
        steps.extend(self._power.cycle())
        self._reopen()
        assert self.session is not None
        attempts = max(3, int(config.boot_wait_s / self.sync_timeout_s))
        if not self.session.sync(attempts, self.sync_timeout_s):
            raise ModemUnusable("modem.unresponsive", "no answer to AT after a power cycle")

    def _close_port(self) -> None:
        if self.at is not None:
            self.at.close()
        self.at = None
        self.session = None
        self.profile = None


ALSA_MARGIN_S = 30.0  # arecord's own limit (-d) beyond the longest possible call
ALSA_START_S = 0.5  # longest wait for the capture to run before dialling
HEALTH_EMPTY: dict[str, Any] = {
    "profile": None, "manufacturer": None, "model": None, "firmware": None, "imei": None,
    "sim": None, "registration": None, "registration_state": None, "registered": None,
    "operator": None, "access_technology": None, "signal_dbm": None, "rsrp_dbm": None,
    "rsrq_db": None}


def port_missing(port: str) -> str | None:
    """Why the modem's ``port`` is not there, with the remedy; None when it exists or is a URL
    (``rfc2217://``, ``loop://``: nothing on this machine to look for).  ``probe check-config``
    warns with it, and a call that cannot open the port says it (``modem.port_missing``)."""
    if "://" in port or os.path.exists(port):
        return None
    return (f"{port} does not exist: check the modem's USB cable, the udev rule that gives it "
            "a stable name under /dev/serial/by-id, and the path")


def _restamp(record: CallRecord, kind: Ev, t_ns: int, **detail: Any) -> None:
    """Move the first ``kind`` event to ``t_ns`` (a better stamp known after the fact)."""
    event = record.first(kind)
    if event is not None:
        record.events.remove(event)
        record.add(kind, t_ns, event.code, event.reason, **{**event.detail, **detail})


class _NotReady(Exception):
    """(code, detail): the SIM or the network is not ready; the call is not placed."""
