"""The probe's verdict for people without a screen: a status LED and a buzzer.

Logic says *what* (``indicator.show(Status.DOWN)``); the tables here say *how* (blink codes,
colours, beeps), in the manner of the RIPE Atlas probe's semantic LED states.

Wiring (``hardware/pinmap.toml``): common-cathode RGB LED on GPIO 22/23/24 (red/green/blue,
330 ohm each) or one LED on GPIO 23; an active buzzer on GPIO 18 through a 2N7002 low-side
switch; the silence button from GPIO 27 to GND (internal pull-up, 100 nF + 1k debounce).

=====================  ==========  =====================================  =================
status                 RGB colour  LED pattern (single LED: same timing)  buzzer (alarm)
=====================  ==========  =====================================  =================
``booting``            white       fast flicker 0.1 s / 0.1 s             -
``ok``                 green       steady, 0.1 s heartbeat gap every 3 s  -
``testing``            blue        even blink 0.5 s / 0.5 s               -
``broker_unreachable`` cyan        1 flash, pause                         1 short beep
``degraded``           yellow      2 flashes, pause                       2 short beeps
``down``               red         3 flashes, pause                       3 long beeps
``fault_line``         magenta     4 flashes, pause                       4 short beeps
``fault_modem``        magenta     5 flashes, pause                       5 short beeps
``fault_probe``        magenta     6 flashes, pause                       6 short beeps
=====================  ==========  =====================================  =================

Blink codes: 0.25 s on, 0.35 s off between flashes, 1.5 s dark after the group.  The OK
heartbeat proves the software is alive (a crashed process leaves a steady or dark LED).

The buzzer sounds only for the statuses in ``alarm_on`` (default: down, fault_line,
fault_modem), policy in :class:`AlarmPolicy`:

* once on the **transition into** an alarm status (``testing`` is transient: down -> testing
  -> down is not a new transition, so a test call does not re-arm a silenced alarm);
* then every ``alarm_repeat_s`` while the status lasts, at most ``alarm_repeat_max`` times;
* never during **quiet hours** (local time); an alarm due then is deferred to their end, and
  sounds then only if the status still holds and nobody silenced it;
* the **silence button** stops the beeping at once and mutes until the next change of status.

Example (no hardware: gpiozero's mock pins, the clock injected)::

    from probe.sim.line import ClockedMockFactory, SimClock
    clock = SimClock()
    ind = Indicator(IndicatorConfig(), pin_factory=ClockedMockFactory(clock), clock=clock)
    ind.show(Status.DOWN)
    ind.tick()              # drives the pins; returns when it next needs to run
    ind.start()             # or: a thread that ticks on its own (real clock)

Where there is no board (``[indicator]`` absent), :class:`LoggingIndicator` stands in: the same
policy, every status change and alarm decision written to the log.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from probe.config.model import IndicatorConfig

__all__ = [
    "LOOKS",
    "AlarmPolicy",
    "Indicator",
    "LoggingIndicator",
    "Look",
    "Status",
    "blink_code",
    "cause_status",
    "in_quiet_hours",
    "indicator_status",
    "open_indicator",
    "overall_status",
    "pattern_level",
    "seconds_until_quiet_end",
]

log = logging.getLogger(__name__)


class Status(StrEnum):
    BOOTING = "booting"
    OK = "ok"
    TESTING = "testing"
    DEGRADED = "degraded"
    DOWN = "down"
    FAULT_LINE = "fault_line"  # probe fault: the local line (or the board's line interface)
    FAULT_MODEM = "fault_modem"  # probe fault: the modem (silent, SIM, registration)
    FAULT_PROBE = "fault_probe"  # probe fault: itself (a call that crashed, a full disk)
    BROKER_UNREACHABLE = "broker_unreachable"


#: Shown while it lasts, but not a change of state for the alarm policy.
TRANSIENT = frozenset({Status.TESTING})

RGB = tuple[int, int, int]


def blink_code(n: int, on: float = 0.25, gap: float = 0.35, pause: float = 1.5
               ) -> tuple[float, ...]:
    """``n`` flashes then a pause, as alternating on/off durations."""
    steps: list[float] = []
    for i in range(n):
        steps += [on, gap if i < n - 1 else pause]
    return tuple(steps)


def beeps(n: int, on: float, off: float) -> tuple[float, ...]:
    return tuple(x for _ in range(n) for x in (on, off))


@dataclass(frozen=True)
class Look:
    colour: str
    rgb: RGB
    led: tuple[float, ...]  # alternating on/off durations, from "on"; () = steady on
    beep: tuple[float, ...]  # alternating on/off durations, played once per alarm
    meaning: str


SHORT, LONG = beeps(1, 0.15, 0.2), beeps(1, 0.6, 0.4)
LOOKS: dict[Status, Look] = {
    Status.BOOTING: Look("white", (1, 1, 1), (0.1, 0.1), (), "starting up"),
    Status.OK: Look("green", (0, 1, 0), (2.9, 0.1), (), "the hotline works"),
    Status.TESTING: Look("blue", (0, 0, 1), (0.5, 0.5), (), "a test call is in progress"),
    Status.BROKER_UNREACHABLE: Look("cyan", (0, 1, 1), blink_code(1), SHORT,
                                    "results cannot reach the central broker"),
    Status.DEGRADED: Look("yellow", (1, 1, 0), blink_code(2), SHORT * 2,
                          "the hotline works, badly (busy, slow, poor audio)"),
    Status.DOWN: Look("red", (1, 0, 0), blink_code(3), LONG * 3, "the hotline is down"),
    Status.FAULT_LINE: Look("magenta", (1, 0, 1), blink_code(4), SHORT * 4,
                            "probe fault: the local phone line (cable, socket, line)"),
    Status.FAULT_MODEM: Look("magenta", (1, 0, 1), blink_code(5), SHORT * 5,
                             "probe fault: the modem (power, SIM, signal)"),
    Status.FAULT_PROBE: Look("magenta", (1, 0, 1), blink_code(6), SHORT * 6,
                             "probe fault: the probe itself (internal error, disk full)"),
}

# Most important first: what the LED shows when several things are true at once.  A local
# fault outranks even "booting": one seen before the first verdict is shown as it is.
PRIORITY = (Status.FAULT_LINE, Status.FAULT_MODEM, Status.FAULT_PROBE, Status.DOWN,
            Status.DEGRADED, Status.BROKER_UNREACHABLE, Status.OK, Status.BOOTING)


def overall_status(verdict: Status | str | None, *, line_fault: bool = False,
                   modem_fault: bool = False, broker_ok: bool | None = True,
                   probe_fault: bool = False) -> Status:
    """One status from everything the daemon knows, by :data:`PRIORITY`.

    ``verdict`` is the latest hotline verdict: ``ok``/``degraded``/``down``; ``unknown`` when
    the probe's own faults stopped every path (the fault shows; once it has cleared, booting
    again until the next verdict); None before the first call (booting).  A local fault
    outranks the verdict (it explains it); the broker matters only once there is a verdict,
    and less than a hotline that fails, so a broker blip while the hotline is down does not
    re-arm the alarm.

    >>> overall_status(Status.DOWN, broker_ok=False)
    <Status.DOWN: 'down'>
    >>> overall_status(Status.DOWN, line_fault=True)
    <Status.FAULT_LINE: 'fault_line'>
    >>> overall_status("unknown", broker_ok=False)
    <Status.BROKER_UNREACHABLE: 'broker_unreachable'>
    """
    present = set()
    if verdict is None:
        present.add(Status.BOOTING)  # and the broker is still being reached
    elif verdict != "unknown":
        present.add(Status(verdict))
    if line_fault:
        present.add(Status.FAULT_LINE)
    if modem_fault:
        present.add(Status.FAULT_MODEM)
    if probe_fault:
        present.add(Status.FAULT_PROBE)
    if broker_ok is False and verdict is not None:
        present.add(Status.BROKER_UNREACHABLE)
    return next((s for s in PRIORITY if s in present), Status.BOOTING)


#: Probe-side causes a live reading supersedes: the line monitor measures these itself.
LINE_READ = frozenset({"line.no_voltage", "line.low_voltage", "probe.board_fault"})


def cause_status(code: str) -> Status | None:
    """The LED status a probe-side cause (probe.diagnosis.rules) stands for; None for the hotline's
    own causes, and for a line that a person is using (nothing is wrong)."""
    from probe.diagnosis.rules import CAUSES, Scope

    spec = CAUSES.get(code)
    if spec is None or spec.scope != Scope.PROBE or code == "line.in_use":
        return None
    if code.startswith("line.") or code == "probe.board_fault":
        return Status.FAULT_LINE
    if code.startswith("modem."):
        return Status.FAULT_MODEM
    if code.startswith("network."):  # the office network: neither broker nor SIP server
        return Status.BROKER_UNREACHABLE
    return Status.FAULT_PROBE  # the SIP account, a call that failed inside the probe


def indicator_status(verdicts: Iterable[Mapping[str, Any]], *, line_fault: bool | None = None,
                     modem_fault: bool = False, broker_ok: bool | None = None,
                     probe_fault: bool = False) -> Status:
    """What the LED shows: the daemon's verdicts (``VerdictBook.status()``
    values: ``verdict`` and ``causes``) and what the probe knows of itself now.  The daemon and
    ``make demo``'s board both use it, so they cannot disagree.

    The worst verdict is shown, outranked by the probe-side causes of the verdicts (a modem
    without a SIM, a cut line: they explain it) and by live faults.  ``line_fault`` and
    ``broker_ok`` are live readings (None: nothing to read); where there is one, it wins over a
    verdict's memory of the same thing (a line plugged back in shows at once).
    """
    verdicts = list(verdicts)
    named = [d.get("verdict") for d in verdicts]
    worst = next((v for v in ("down", "degraded", "ok", "unknown") if v in named), None)
    codes = {c for d in verdicts for c in d.get("causes") or ()}
    if line_fault is not None:
        codes -= LINE_READ
    if broker_ok is not None:
        codes.discard("network.broker_unreachable")
    faults = {cause_status(c) for c in codes}
    return overall_status(
        worst, line_fault=bool(line_fault) or Status.FAULT_LINE in faults,
        modem_fault=modem_fault or Status.FAULT_MODEM in faults,
        probe_fault=probe_fault or Status.FAULT_PROBE in faults,
        broker_ok=False if Status.BROKER_UNREACHABLE in faults else broker_ok)


def pattern_level(steps: Sequence[float], elapsed: float, repeat: bool = True
                  ) -> tuple[bool, float | None]:
    """(on?, seconds until the next change) ``elapsed`` seconds into a pattern.

    ``steps`` alternate on/off from "on"; ``()`` is steady on.  A one-shot pattern
    (``repeat=False``) is off, for good, once it has run.
    """
    if not steps:
        return True, None
    cycle = math.fsum(steps)
    if not repeat and elapsed >= cycle - 1e-9:
        return False, None
    pos = elapsed % cycle if repeat else elapsed
    if cycle - pos < 1e-9:  # float remainder a hair short of a whole cycle: a new cycle
        pos = 0.0
    acc = 0.0
    for i, step in enumerate(steps):
        acc += step
        if pos < acc - 1e-9:
            return i % 2 == 0, acc - pos
    return False, None  # not reached: the checks above leave pos inside a step


# --------------------------------------------------------------------------- quiet hours


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def in_quiet_hours(quiet: tuple[str, str] | None, wall: datetime) -> bool:
    """Is local time ``wall`` inside ``("22:00", "07:00")`` (which may span midnight)?"""
    if quiet is None:
        return False
    start, end = _minutes(quiet[0]), _minutes(quiet[1])
    now = wall.hour * 60 + wall.minute
    return start <= now < end if start < end else now >= start or now < end


def seconds_until_quiet_end(quiet: tuple[str, str], wall: datetime) -> float:
    end_h, end_m = (int(x) for x in quiet[1].split(":"))
    end = wall.replace(hour=end_h, minute=end_m, second=0, microsecond=0)
    if end <= wall:
        end += timedelta(days=1)
    return (end - wall).total_seconds()


# --------------------------------------------------------------------------- the alarm policy


class AlarmPolicy:
    """When the buzzer sounds: transitions, repeats, quiet hours, silence.  No hardware.

    Times are the injected monotonic clock; ``wall`` is local wall-clock time (quiet hours).
    """

    def __init__(self, alarm_on: Iterable[str], repeat_s: float, repeat_max: int,
                 quiet_hours: tuple[str, str] | None) -> None:
        self.alarm_on = frozenset(Status(s) for s in alarm_on)
        self.repeat_s = repeat_s
        self.repeat_max = repeat_max
        self.quiet_hours = quiet_hours
        self.status: Status | None = None
        self.silenced = False
        self.due_at: float | None = None  # monotonic time of the next alarm, None: none
        self.repeats = 0  # repeats sounded in this episode (the first alarm is not one)
        self.sounded = 0  # alarms sounded in this episode

    def status_changed(self, status: Status, now: float) -> bool:
        """Record a new status; True if it is a change of state (it re-arms and un-silences)."""
        if status in TRANSIENT or status == self.status:
            return False
        self.status, self.silenced, self.repeats, self.sounded = status, False, 0, 0
        self.due_at = now if status in self.alarm_on else None
        return True

    def silence(self) -> bool:
        """The button: mute until the next change of state.  True if an alarm was armed."""
        armed = self.status in self.alarm_on and not self.silenced
        self.silenced = True
        self.due_at = None
        return armed

    def poll(self, now: float, wall: datetime) -> str | None:
        """``"sound"``: an alarm is due now; ``"deferred"``: quiet hours pushed it; else None."""
        if self.due_at is None or now < self.due_at - 1e-9:
            return None
        if in_quiet_hours(self.quiet_hours, wall):
            assert self.quiet_hours is not None
            self.due_at = now + seconds_until_quiet_end(self.quiet_hours, wall)
            return "deferred"
        if self.sounded:
            self.repeats += 1
        self.sounded += 1
        more = self.repeat_s > 0 and (self.repeat_max == 0 or self.repeats < self.repeat_max)
        self.due_at = now + self.repeat_s if more else None
        return "sound"


# --------------------------------------------------------------------------- the indicator


class Indicator:
    """Status LED + buzzer + silence button on gpiozero devices, driven by :meth:`tick`.

    ``pin_factory`` as in gpiozero (None: gpiozero's default, i.e. the Pi's GPIO).
    ``clock`` is monotonic seconds, ``wall`` local time (quiet hours).  ``on_event(text)``
    receives each human-readable event (status shown, alarm sounded/deferred/silenced).
    """

    def __init__(self, cfg: IndicatorConfig | None = None, *, pin_factory: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = datetime.now,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg = cfg or IndicatorConfig()
        self.clock = clock
        self.wall = wall
        self.on_event = on_event
        self.policy = AlarmPolicy(cfg.alarm_on, cfg.alarm_repeat_s, cfg.alarm_repeat_max,
                                  cfg.quiet_hours)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.status: Status | None = None
        self._shown_at = clock()
        self._beep: tuple[float, ...] = ()
        self._beep_at: float | None = None
        self._led_now: RGB | None = None
        self._buzz_now = False
        self.led: Any = None
        self.buzzer: Any = None
        self.button: Any = None
        self._open_devices(cfg, pin_factory)

    def _open_devices(self, cfg: IndicatorConfig, pin_factory: Any) -> None:
        from gpiozero import LED, RGBLED, Button, Buzzer

        try:
            if cfg.led == "rgb":
                self.led = RGBLED(cfg.red_pin, cfg.green_pin, cfg.blue_pin, pwm=False,
                                  pin_factory=pin_factory)
            elif cfg.led == "single":
                self.led = LED(cfg.led_pin, pin_factory=pin_factory)
            if cfg.buzzer_pin is not None:
                self.buzzer = Buzzer(cfg.buzzer_pin, pin_factory=pin_factory)
            if cfg.button_pin is not None:
                self.button = Button(cfg.button_pin, pull_up=True, bounce_time=0.05,
                                     pin_factory=pin_factory)
                self.button.when_pressed = lambda *_: self.silence()
        except Exception:
            self._close_devices()
            raise

    # ----------------------------------------------------------------- what logic calls

    def show(self, status: Status | str) -> None:
        """Show ``status`` from now on (the same status again changes nothing)."""
        status = Status(status)
        with self._lock:
            now = self.clock()
            if status != self.status:
                self.status, self._shown_at = status, now
                look = LOOKS[status]
                self._event(f"status {status.value}: {look.meaning} "
                            f"(LED {look.colour}, {_describe(look.led)})")
            if self.policy.status_changed(status, now) and self._beep_at is not None:
                self._beep_at = None  # a new state: the old alarm's beeps stop
        self._wake.set()

    def silence(self) -> None:
        """What the silence button does: stop beeping, mute until the next change of state."""
        with self._lock:
            beeping = self._beep_at is not None
            if self.policy.silence() or beeping:
                self._beep_at = None
                self._event(f"alarm silenced by the button until the status changes "
                            f"(now {self.status.value if self.status else 'none'})")
        self._wake.set()

    # ----------------------------------------------------------------- the engine

    def tick(self, now: float | None = None) -> float:
        """Drive the LED and buzzer for time ``now``; return the monotonic time to call again."""
        with self._lock:
            now = self.clock() if now is None else now
            deadlines: list[float] = []
            if self.status is not None:
                look = LOOKS[self.status]
                on, wait = pattern_level(look.led, now - self._shown_at)
                self._set_led(look.rgb if on else (0, 0, 0))
                if wait is not None and self.led is not None:  # no LED: wake only to beep
                    deadlines.append(now + wait)
                decision = self.policy.poll(now, self.wall())
                if decision == "sound" and look.beep:
                    self._beep, self._beep_at = look.beep, now
                    n = self.policy.repeats
                    self._event(f"alarm: {_describe_beeps(look.beep)} for {self.status.value}"
                                + (f" (repeat {n})" if n else ""))
                elif decision == "deferred" and self.policy.due_at is not None:
                    self._event(f"alarm for {self.status.value} deferred: quiet hours until "
                                f"{self.cfg.quiet_hours[1] if self.cfg.quiet_hours else '?'}")
                if self.policy.due_at is not None:
                    deadlines.append(self.policy.due_at)
            buzz = False
            if self._beep_at is not None:
                buzz, wait = pattern_level(self._beep, now - self._beep_at, repeat=False)
                if wait is None:
                    self._beep_at = None
                else:
                    deadlines.append(now + wait)
            self._set_buzzer(buzz)
            return min(deadlines, default=now + 3600.0)

    def _set_led(self, rgb: RGB) -> None:
        if rgb == self._led_now:
            return
        self._led_now = rgb
        if self.led is None:
            return
        if self.cfg.led == "rgb":
            self.led.value = rgb
        else:
            self.led.value = 1 if any(rgb) else 0

    def _set_buzzer(self, on: bool) -> None:
        if on == self._buzz_now:
            return
        self._buzz_now = on
        if self.buzzer is not None:
            self.buzzer.value = 1 if on else 0

    def _event(self, text: str) -> None:
        log.info("indicator: %s", text)
        if self.on_event is not None:
            self.on_event(text)

    def snapshot(self) -> dict[str, Any]:
        """For the health record and the demo."""
        with self._lock:
            return {
                "status": self.status.value if self.status else None,
                "led": LOOKS[self.status].colour if self.status else None,
                "buzzer": self._buzz_now,
                "silenced": self.policy.silenced,
                "alarm_due_in_s": (None if self.policy.due_at is None
                                   else round(max(0.0, self.policy.due_at - self.clock()), 1)),
            }

    # ----------------------------------------------------------------- the thread

    def start(self) -> None:
        """Tick on a daemon thread (real clock) until :meth:`close`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="indicator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            wake_at = self.tick()
            self._wake.wait(max(0.0, min(wake_at - self.clock(), 60.0)))
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self._lock:
            self._set_led((0, 0, 0))
            self._set_buzzer(False)
            self._close_devices()

    def _close_devices(self) -> None:
        for device in (self.button, self.buzzer, self.led):
            if device is not None:
                device.close()
        self.button = self.buzzer = self.led = None


class LoggingIndicator(Indicator):
    """The indicator where there is no board: same policy, events to the log only."""

    def __init__(self, cfg: IndicatorConfig | None = None, **kw: Any) -> None:
        kw.pop("pin_factory", None)
        base = cfg or IndicatorConfig()
        super().__init__(IndicatorConfig(led="none", buzzer_pin=None, button_pin=None,
                                         quiet_hours=base.quiet_hours, alarm_on=base.alarm_on,
                                         alarm_repeat_s=base.alarm_repeat_s,
                                         alarm_repeat_max=base.alarm_repeat_max), **kw)

    def _open_devices(self, cfg: IndicatorConfig, pin_factory: Any) -> None:
        return None


def open_indicator(cfg: IndicatorConfig | None, **kw: Any) -> Indicator:
    """The board's indicator when ``[indicator]`` is configured, else a logging one."""
    return Indicator(cfg, **kw) if cfg is not None else LoggingIndicator(None, **kw)


def _describe(steps: Sequence[float]) -> str:
    if not steps:
        return "steady"
    if steps == (2.9, 0.1):
        return "steady with a heartbeat"
    flashes = len(steps) // 2
    if flashes == 1 and steps[0] == steps[1]:
        return f"blinking {steps[0]:g} s / {steps[1]:g} s"
    return f"{flashes} flash{'es' if flashes > 1 else ''}, pause"


def _describe_beeps(steps: Sequence[float]) -> str:
    n = len(steps) // 2
    kind = "long" if steps and steps[0] >= 0.5 else "short"
    return f"{n} {kind} beep{'s' if n > 1 else ''}"
