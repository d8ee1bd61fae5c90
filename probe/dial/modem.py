"""PSTN dialer: test calls through a GSM or analog voice modem, recorded like SIP calls.

Thin on purpose: it opens the port (a pyserial URL from ``[modems.gsm]``/``[modems.analog]``),
climbs the recovery ladder when the modem does not answer, and wires audio into the call's WAV.
The protocol lives in ``probe/at/`` (session: init, identity, SIM, radio; call: the timeline).

Recovery ladder, before every call::

    port gone (unplugged, re-enumerating)  -> reopen, retried until reopen_wait_s
    no OK to "AT" (3 tries)                -> close, reopen, "AT" again
    still nothing                          -> power-cycle (RESET / power key, STATUS checked)
    still nothing                          -> result with error "modem.unresponsive"

Example::

    with ModemDialer(config.modem("gsm")) as dialer:
        record = dialer.call("+33472000390", target.expect, target="support",
                             audio_path=Path("/var/lib/hotline-probe/audio/x.wav"))

``line_busy`` (analog): a callable saying the line is in use (someone is on the phone); the
call is then not placed and :class:`LineInUse` is raised so the scheduler can defer it.
"""

from __future__ import annotations

import logging
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
from probe.config import Expectations, ModemConfig
from probe.dial.modem_audio import PcmReader, WavSink
from probe.dial.modem_power import PowerKey
from probe.errors import DialerError
from probe.timeline import CallRecord, Ev

log = logging.getLogger("probe.modem")


class LineInUse(DialerError):
    """The analog line is in use: the test call was not placed (defer it, it is no failure)."""


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
             line_busy: Callable[[], bool] | None = None) -> CallRecord:
        """Place one call to ``number``; the record of what happened (never raises for a
        modem or network failure: those are results)."""
        record = CallRecord(channel=self.config.kind, target=target, destination=number,
                            wall_ns=time.time_ns(), mono_ns=self.clock())
        facts: dict[str, Any] = record.facts.setdefault("modem", {})
        facts["recovery"] = []
        self._abort.clear()
        self._beat()
        if line_busy is not None and line_busy():
            raise LineInUse(f"{self.config.kind} line in use: test call to {number} deferred")
        try:
            self._ready(facts["recovery"])
            assert self.session is not None and self.profile is not None
            facts.update(self.session.facts)
            if self.profile.channel == "gsm":
                self._check_network(facts)
        except ModemUnusable as exc:
            return self._not_placed(record, exc.code, str(exc))
        except (ModemGone, ModemTimeout) as exc:
            self._close_port()
            return self._not_placed(record, "modem.unresponsive", str(exc))
        except _NotReady as exc:
            return self._not_placed(record, exc.args[0], exc.args[1])
        self._live(record, number, expect, dtmf, dtmf_after_s, audio_path)
        if self.at is not None and self.at.gone is not None:
            self._close_port()  # unplugged: the next call reopens (re-enumeration)
            self._lost = True
        return record

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
        hooks = AudioHooks()
        if profile.vrx:
            sink = WavSink(audio_path)
            hooks.vrx_sink = sink.u8
        elif profile.pcm is not None and self.config.audio_port:
            sink = WavSink(audio_path)
            reader = PcmReader(self.config.audio_port, sink, baud=self.config.baud)
            reader.open()
            hooks.pcm_on, hooks.pcm_off = reader.start, reader.stop
        try:
            ModemCall(self.at, profile, record, plan, hooks, clock=self.clock,
                      abort=self._abort, beat=self._beat).run()
        finally:
            if reader is not None:
                reader.close()
            if sink is not None:
                sink.close()
                record.audio_path = sink.path
                record.facts["audio_frames"] = sink.frames

    def _not_placed(self, record: CallRecord, code: str, detail: str) -> CallRecord:
        log.warning("%s modem: call not placed: %s", self.config.kind, detail)
        record.facts["modem"]["error"] = code
        record.add(Ev.END, self.clock(), None, detail, from_network=False, result=None)
        return record

    def _check_network(self, facts: dict[str, Any]) -> None:
        assert self.session is not None
        sim = self.session.sim_state()
        facts["sim"] = sim
        if sim != "READY":
            code = "modem.no_sim" if sim == "ABSENT" else "modem.sim_locked"
            raise _NotReady(code, f"SIM state {sim}")
        facts.update(self.session.radio_facts())
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
                    raise ModemUnusable("modem.gone", str(exc)) from exc
                time.sleep(0.25)  # back-off between open attempts, bounded by reopen_wait_s
        self.at = AtPort(transport, name=f"modem-{self.config.kind}", clock=self.clock).start()
        self.session = ModemSession(self.at, channel=self.config.kind, model=self.config.model,
                                    sim_pin=self.config.sim_pin, clock=self.clock,
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


class _NotReady(Exception):
    """(code, detail): the SIM or the network is not ready; the call is not placed."""
