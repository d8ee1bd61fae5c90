"""The analog line, read through the probe board: ADC counts -> volts -> line state.

Hardware (``hardware/README.md`` has the design review, ``hardware/pinmap.toml`` the pins)::

    tip ──PTC──┬──GDT/SIDACtor──┬── 2 x 4.99 MOhm ──► difference amplifier ──► MCP3008 CH0
    ring ─PTC──┘   (tip-ring)   └── 2 x 4.99 MOhm ──►  gain 60.4k/9.98M,        1.5 V mid ──► CH1
                                                       offset 1.5 V (mid-rail)
          line side (isolated supply, REF3030 3.000 V)  ║ ISO7741 ║  Pi side: SPI0 CE0 (spidev0.0)

CH0 reads ``1.5 V + 0.0060521 x (V_tip - V_ring)``: 0 V on the line is code 511.5, each count is
0.48408 V, the span is about -248 V .. +247 V (so polarity is measured, and ringing peaks of
~175 V stay inside).  CH1 reads the 1.5 V mid reference (code 512): if it is not there, the line
side of the board is dead or unpowered (the isolator then returns all ones), and the probe says
``interface_fault`` instead of mistaking its own failure for the line's.

States (:class:`LineState`), from the DC level and the AC (ringing) component of each window:

=================  ==========================================================================
``idle``           on-hook, normal polarity: ``|V| >= idle_above_v`` (about 48 V)
``reversed``       on-hook with tip and ring reversed (wiring, or the exchange signalling)
``off_hook``       a loop is closed: ``no_voltage_below_v <= |V| < off_hook_below_v`` (5-12 V)
``ringing``        AC of ``ringing_above_vrms`` or more at 14-70 Hz; held ``ring_hold_s`` across
                   the silent part of the cadence while the line stays on-hook
``low_voltage``    on-hook but between ``off_hook_below_v`` and ``idle_above_v``: a failing line
``no_voltage``     below ``no_voltage_below_v``: cut line, unplugged cable, exchange port down
``interface_fault`` the board's own reference channel is wrong: the probe, not the line
``unknown``        no settled reading yet, or the sampling thread has stopped
=================  ==========================================================================

Thresholds have hysteresis (``hysteresis_v``) and a state must persist for ``settle_s``
(``fault_settle_s`` for the fault states) before it is reported, so noise, slow drift, pulse
dialling and the gaps of a ringing cadence do not make the state chatter.

Typical use (the daemon owns one monitor per board)::

    from probe.board.line import LineMonitor
    monitor = LineMonitor.open(config.line)          # gpiozero MCP3008 on spidev0.0
    monitor.start()                                  # samples at 200 Hz on its own thread
    monitor.snapshot()    # -> {"state": "idle", "dc_volts": 48.3, ...}, JSON-ready

Integration contract (keep it stable):

* **Every result and the health record** carry ``monitor.snapshot()`` (a dict, keys below) under
  ``line``.  Add it when the result is built, not inside a dialer.
* **An analog test call** claims the line with ``with monitor.seize() as seizure:`` around the
  modem's off-hook.  ``seize()`` raises :class:`LineInUseError` when a person is on the line
  (off-hook) or it is ringing: the scheduler catches it and defers the call (it is not a hotline
  failure).  ``monitor.line_in_use()`` answers the same question without claiming.  Inside the
  block, call ``seizure.dial_tone(t)`` with the monotonic time the dial tone was heard (voice
  modem ``<DLE>d``, or the audio analysis); after it, ``seizure.facts()`` gives the off-hook
  voltage, the drop from idle, loop-closure time and time to dial tone for the result.

``snapshot()`` keys: ``state``, ``state_for_s``, ``dc_volts``, ``ac_vrms`` (latest window),
``ring_vrms`` and ``ring_hz`` (latest ringing burst, while ringing),
``polarity`` ("normal"/"reversed"/None), ``idle_volts`` (the on-hook baseline), ``in_use``,
``seized_by_probe``, ``fault`` (bool: a local line/interface problem), ``interface_ok``,
``reference_code``, ``stale``.  Values not measured are None.

Everything timing-related takes an injected monotonic ``clock`` (and ``sleep``), so tests run
simulated hours in milliseconds; :mod:`probe.sim.line` supplies the simulated line, a gpiozero
``MockFactory`` and an MCP3008 emulated on gpiozero's mock SPI bus.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from probe.errors import ProbeError
from probe.human import show

if TYPE_CHECKING:
    from probe.config.model import LineConfig

__all__ = [
    "ADC_CODES",
    "ADC_MID_V",
    "ADC_VREF_V",
    "FRONTEND_GAIN",
    "NOMINAL_VOLTS_PER_COUNT",
    "NOMINAL_ZERO_CODE",
    "REFERENCE_CODE",
    "Calibration",
    "LineClassifier",
    "LineInUseError",
    "LineMonitor",
    "LineReader",
    "LineState",
    "Mcp3008Reader",
    "Seizure",
    "SpiInterface",
    "Window",
    "calibrate",
    "classify_samples",
    "format_report",
    "line_report",
    "raw_state",
    "window_stats",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the front end
# Component values from hardware/README.md; tests check the README's numbers against these.
R_IN_OHM = 2 * 4.99e6  # per leg: two 4.99 MOhm 1206 high-voltage resistors in series
R_F_OHM = 60.4e3  # difference-amplifier feedback / ground-leg resistor
FRONTEND_GAIN = R_F_OHM / R_IN_OHM  # 0.0060521 V at the ADC per volt on the line
ADC_VREF_V = 3.000  # REF3030 on the isolated side
ADC_MID_V = 1.500  # mid-rail offset, also wired to CH1 as the self-test reference
ADC_CODES = 1024  # MCP3008: 10 bits
#: Code of 0 V on the line (the centre of code 511/512's boundary: codes are floor()ed).
NOMINAL_ZERO_CODE = ADC_MID_V / ADC_VREF_V * ADC_CODES - 0.5  # 511.5
#: Volts on the line per ADC count, nominal (0.48408 V).
NOMINAL_VOLTS_PER_COUNT = ADC_VREF_V / ADC_CODES / FRONTEND_GAIN
#: What CH1 (the 1.5 V mid reference) reads on a healthy board.
REFERENCE_CODE = int(ADC_MID_V / ADC_VREF_V * ADC_CODES)  # 512


class LineState(StrEnum):
    UNKNOWN = "unknown"
    IDLE = "idle"
    REVERSED = "reversed"
    OFF_HOOK = "off_hook"
    RINGING = "ringing"
    LOW_VOLTAGE = "low_voltage"
    NO_VOLTAGE = "no_voltage"
    INTERFACE_FAULT = "interface_fault"

    @property
    def fault(self) -> bool:
        """A local problem (line or board) that makes an analog test call meaningless."""
        return self in (LineState.LOW_VOLTAGE, LineState.NO_VOLTAGE, LineState.INTERFACE_FAULT)

    @property
    def in_use(self) -> bool:
        """Someone is on the line, or a call is coming in."""
        return self in (LineState.OFF_HOOK, LineState.RINGING)


# Magnitude bands, lowest first; REVERSED and RINGING are refinements of them.
_BANDS = (LineState.NO_VOLTAGE, LineState.OFF_HOOK, LineState.LOW_VOLTAGE, LineState.IDLE)


class LineInUseError(ProbeError, RuntimeError):
    """The line is off-hook or ringing: an analog test call must wait (not a hotline failure)."""

    def __init__(self, state: LineState) -> None:
        self.state = state
        super().__init__(f"the analog line is in use ({state.value}): test call deferred")


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """``volts = (code - zero_code) * volts_per_count``."""

    zero_code: float = NOMINAL_ZERO_CODE
    volts_per_count: float = NOMINAL_VOLTS_PER_COUNT

    def volts(self, code: float) -> float:
        return (code - self.zero_code) * self.volts_per_count


def calibrate(short_codes: Sequence[int], ref_codes: Sequence[int], ref_volts: float
              ) -> Calibration:
    """Two-point calibration from readings with tip and ring shorted, then at ``ref_volts``.

    Use a few hundred readings each (noise averages out, dithering across codes gives sub-count
    resolution).  The +0.5 puts each floor()ed code at the centre of its step.

    >>> cal = calibrate([513] * 100, [612] * 100, 48.0)
    >>> round(cal.zero_code, 1), round(cal.volts_per_count, 5)
    (513.5, 0.48485)
    """
    if not short_codes or not ref_codes:
        raise ValueError("calibration needs readings at 0 V and at the reference voltage")
    c0 = sum(short_codes) / len(short_codes)
    c1 = sum(ref_codes) / len(ref_codes)
    if abs(c1 - c0) < 10:
        raise ValueError(f"reference reading {c1:.1f} is too close to zero reading {c0:.1f}: "
                         "is the reference voltage connected?")
    return Calibration(zero_code=c0 + 0.5, volts_per_count=ref_volts / (c1 - c0))


# --------------------------------------------------------------------------- windows (pure)


@dataclass(frozen=True)
class Window:
    """Statistics of one analysis window of line samples (volts)."""

    t_start: float
    t_end: float
    n: int
    dc_v: float  # mean
    ac_vrms: float  # RMS of the AC component (standard deviation)
    ring_hz: float | None  # frequency of the AC component (Schmitt-trigger crossings)
    min_v: float
    max_v: float
    clipped: int = 0  # samples at code 0 or 1023


def window_stats(volts: Sequence[float], t_start: float, t_end: float, clipped: int = 0
                 ) -> Window:
    """Mean, AC RMS and AC frequency of ``volts`` sampled evenly over ``[t_start, t_end)``."""
    n = len(volts)
    if n == 0:
        raise ValueError("empty window")
    dc = math.fsum(volts) / n
    ac = math.sqrt(math.fsum((v - dc) ** 2 for v in volts) / n)
    # Frequency from crossings of a band of +-ac/2 around the mean: noise near zero does not
    # count; a 25 Hz ringing sine crosses twice a cycle.
    freq = None
    if ac > 0:
        band = ac / 2
        side = 0
        crossings = 0
        first = last = None
        for i, v in enumerate(volts):
            now = 1 if v > dc + band else -1 if v < dc - band else 0
            if now and now != side:
                if side:
                    crossings += 1
                    last = i
                    if first is None:
                        first = i
                side = now
        if crossings >= 2 and first is not None and last is not None and last > first:
            dt = (t_end - t_start) / n
            freq = (crossings - 1) / (2 * (last - first) * dt)
    return Window(t_start, t_end, n, dc, ac, freq, min(volts), max(volts), clipped)


def _band_index(magnitude: float, current: LineState, cfg: LineConfig) -> int:
    """Which magnitude band, with the thresholds moved ``hysteresis_v`` away from ``current``."""
    thresholds = (cfg.no_voltage_below_v, cfg.off_hook_below_v, cfg.idle_above_v)
    if current in (LineState.REVERSED, LineState.RINGING):
        current = LineState.IDLE
    cur = _BANDS.index(current) if current in _BANDS else None
    band = 0
    for i, threshold in enumerate(thresholds):
        if cur is None:
            effective = threshold
        else:  # to leave the current band the level must cross the threshold by hysteresis_v
            effective = threshold + cfg.hysteresis_v if cur <= i else threshold - cfg.hysteresis_v
        if magnitude >= effective:
            band = i + 1
    return band


RING_HZ_RANGE = (14.0, 70.0)  # 16 2/3 Hz .. 50 Hz ringing, with margin; pulse dialling is 10 Hz


def raw_state(w: Window, current: LineState, cfg: LineConfig) -> LineState:
    """The state one window shows on its own (hysteresis relative to ``current``, no dwell)."""
    ring_threshold = cfg.ringing_above_vrms - (cfg.hysteresis_v
                                               if current == LineState.RINGING else 0.0)
    if (w.ac_vrms >= ring_threshold and w.ring_hz is not None
            and RING_HZ_RANGE[0] <= w.ring_hz <= RING_HZ_RANGE[1]):
        return LineState.RINGING
    state = _BANDS[_band_index(abs(w.dc_v), current, cfg)]
    if state == LineState.IDLE and w.dc_v < 0:
        return LineState.REVERSED
    return state


class LineClassifier:
    """Windows in, a settled :class:`LineState` out: hysteresis, dwell and the ring hold."""

    def __init__(self, cfg: LineConfig) -> None:
        self.cfg = cfg
        self.state = LineState.UNKNOWN
        self.since: float | None = None  # when the current state started (window start)
        self.last_raw = LineState.UNKNOWN  # what the latest window showed on its own
        self.last_ring: Window | None = None  # the latest window with ringing in it
        self._candidate: LineState | None = None
        self._candidate_since = 0.0
        self._last_ring_end: float | None = None

    def _settle(self, state: LineState) -> float:
        if state == LineState.RINGING:
            return 0.0  # a window of 20 Vrms at ringing frequency is not noise
        return self.cfg.fault_settle_s if state.fault else self.cfg.settle_s

    def update(self, w: Window, reference_ok: bool = True) -> LineState:
        raw = raw_state(w, self.state, self.cfg) if reference_ok else LineState.INTERFACE_FAULT
        self.last_raw = raw
        if raw == LineState.RINGING:
            self._last_ring_end = w.t_end
            self.last_ring = w
        elif (self.state == LineState.RINGING and raw in (LineState.IDLE, LineState.REVERSED)
              and self._last_ring_end is not None
              and w.t_end - self._last_ring_end <= self.cfg.ring_hold_s):
            raw = LineState.RINGING  # the silent part of the ring cadence, still on-hook
        if raw == self.state:
            self._candidate = None
            return self.state
        if raw != self._candidate:
            self._candidate, self._candidate_since = raw, w.t_start
        if w.t_end - self._candidate_since >= self._settle(raw) - 1e-9:
            self.state, self.since, self._candidate = raw, self._candidate_since, None
        return self.state


def classify_samples(volts: Sequence[float], sample_rate_hz: float, cfg: LineConfig,
                     t0: float = 0.0) -> list[tuple[float, LineState]]:
    """Classify a recorded waveform: the (time, state) of every settled change.

    The same windows and classifier as :class:`LineMonitor`, without hardware: for tests,
    benchmarks and re-running recordings.
    """
    n = max(1, round(cfg.window_s * sample_rate_hz))
    classifier = LineClassifier(cfg)
    changes: list[tuple[float, LineState]] = []
    for start in range(0, len(volts) - n + 1, n):
        t_start = t0 + start / sample_rate_hz
        w = window_stats(volts[start:start + n], t_start, t_start + n / sample_rate_hz)
        before = classifier.state
        after = classifier.update(w)
        if after != before:
            changes.append((classifier.since if classifier.since is not None else t_start, after))
    return changes


# --------------------------------------------------------------------------- the hardware


class LineReader(Protocol):
    """Raw ADC codes (0..1023) of the line channel and the reference channel."""

    def read_line(self) -> int: ...

    def read_reference(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SpiInterface:
    name: str  # gpiozero's class, e.g. LGPIOHardwareSPIShared
    hardware: bool


class Mcp3008Reader:
    """The board's MCP3008, through gpiozero (spidev0.0 on a Pi; any gpiozero pin factory).

    Both channels share one SPI interface (gpiozero's ``shared=True`` SPI devices).
    """

    def __init__(self, channel: int = 0, reference_channel: int = 1, *, port: int = 0,
                 device: int = 0, pin_factory: Any = None) -> None:
        from gpiozero import MCP3008

        self._line = MCP3008(channel, port=port, device=device, pin_factory=pin_factory)
        try:
            self._ref = MCP3008(reference_channel, port=port, device=device,
                                pin_factory=pin_factory)
        except Exception:
            self._line.close()
            raise

    def interface(self) -> SpiInterface:
        """The SPI implementation gpiozero chose: the kernel's spidev (hardware) needs lgpio
        or spidev; without them gpiozero bit-bangs the bus (software)."""
        from gpiozero.pins.spi import SPISoftware

        spi = self._line._spi
        name = type(spi).__name__
        return SpiInterface(name, not isinstance(spi, SPISoftware) and "Software" not in name)

    def read_line(self) -> int:
        return int(self._line.raw_value)

    def read_reference(self) -> int:
        return int(self._ref.raw_value)

    def close(self) -> None:
        self._ref.close()
        self._line.close()


# --------------------------------------------------------------------------- the monitor


@dataclass
class Seizure:
    """The probe's own use of the line for one analog call (see :meth:`LineMonitor.seize`)."""

    started_at: float  # monotonic time seize() was entered (just before the modem's off-hook)
    idle_volts: float | None  # on-hook baseline just before
    loop_closed_at: float | None = None  # first sample of the off-hook voltage
    dial_tone_at: float | None = None  # reported by the dialer
    off_hook_volts: float | None = None
    polarity_reversals: list[float] = field(default_factory=list)  # monotonic times
    ended_at: float | None = None
    _run: int = 0
    _run_start: float = 0.0
    _off_hook_samples: list[float] = field(default_factory=list)
    _last_sign: int = 0

    def dial_tone(self, at: float) -> None:
        """The dialer heard dial tone at monotonic time ``at``."""
        self.dial_tone_at = at

    def facts(self) -> dict[str, Any]:
        """JSON-ready facts for the analog result (``None`` = not measured)."""

        def ms(a: float | None, b: float | None) -> int | None:
            return None if a is None or b is None else round((b - a) * 1000)

        drop = (None if self.idle_volts is None or self.off_hook_volts is None
                else round(self.idle_volts - abs(self.off_hook_volts), 1))
        return {
            "idle_volts": _r(self.idle_volts),
            "off_hook_volts": _r(None if self.off_hook_volts is None else abs(self.off_hook_volts)),
            "drop_volts": drop,
            "loop_closure_ms": ms(self.started_at, self.loop_closed_at),
            "time_to_dial_tone_ms": ms(self.loop_closed_at or self.started_at,
                                       self.dial_tone_at),
            "polarity_reversals_ms": [ms(self.started_at, t) for t in self.polarity_reversals],
        }


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


class LineMonitor:
    """Samples the line, classifies it, and answers "may the probe use the line now?".

    ``reader`` is any :class:`LineReader` (normally :class:`Mcp3008Reader`); ``clock`` is a
    monotonic clock in seconds and ``sleep`` its sleep (defaults: :func:`time.monotonic` and an
    interruptible wait).  ``on_change(old, new)`` is called on every settled state change, on
    the sampling thread: keep it short (e.g. hand the status to the indicator).
    """

    LOOP_RUN = 3  # consecutive off-hook samples that make a loop closure (15 ms at 200 Hz)
    OFF_HOOK_SETTLE_S = 0.3  # after loop closure, before the off-hook voltage is averaged
    OFF_HOOK_AVERAGE_S = 1.0
    IDLE_TAU_S = 10.0  # time constant of the on-hook baseline

    def __init__(self, cfg: LineConfig, reader: LineReader, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] | None = None,
                 on_change: Callable[[LineState, LineState], None] | None = None) -> None:
        self.cfg = cfg
        self.reader = reader
        self.clock = clock
        self._stop = threading.Event()
        self.sleep = sleep if sleep is not None else self._stop.wait
        self.on_change = on_change
        self.calibration = Calibration(cfg.zero_code, cfg.volts_per_count)
        self.classifier = LineClassifier(cfg)
        self.period = 1.0 / cfg.sample_rate_hz
        self.window_n = max(4, round(cfg.window_s * cfg.sample_rate_hz))
        self._lock = threading.Lock()
        self._volts: list[float] = []
        self._clipped = 0
        self._window_start: float | None = None
        self.last_window: Window | None = None
        self._last_window_at: float | None = None
        self.reference_code: int | None = None
        self.idle_volts: float | None = None
        self._seizure: Seizure | None = None
        self._released_pending = False
        self._thread: threading.Thread | None = None
        self._settled = threading.Event()  # a first state is known (see wait_settled)
        self.overruns = 0  # samples taken late by more than a window (a loaded CPU)
        self.samples = 0

    @classmethod
    def open(cls, cfg: LineConfig, *, pin_factory: Any = None, **kw: Any) -> LineMonitor:
        """A monitor on the board's MCP3008 (``pin_factory`` as in gpiozero)."""
        reader = Mcp3008Reader(cfg.adc_channel, cfg.reference_channel, pin_factory=pin_factory)
        return cls(cfg, reader, **kw)

    # ----------------------------------------------------------------- sampling

    def step(self) -> None:
        """Take one sample; classify when a window is complete.  Called at ``sample_rate_hz``."""
        now = self.clock()
        code = self.reader.read_line()
        volts = self.calibration.volts(code)
        self.samples += 1
        with self._lock:
            if self._window_start is None:
                self._window_start = now
            self._volts.append(volts)
            self._clipped += code <= 0 or code >= ADC_CODES - 1
            if self._seizure is not None and self._seizure.ended_at is None:
                self._track_seizure(self._seizure, now, volts)
            if len(self._volts) < self.window_n:
                return
            samples, clipped, t_start = self._volts, self._clipped, self._window_start
            self._volts, self._clipped, self._window_start = [], 0, None
        ref = self.reader.read_reference()
        self._close_window(samples, clipped, t_start, now + self.period, ref)

    def _close_window(self, samples: list[float], clipped: int, t_start: float, t_end: float,
                      ref: int) -> None:
        w = window_stats(samples, t_start, t_end, clipped)
        ref_ok = abs(ref - REFERENCE_CODE) <= self.cfg.reference_tolerance_counts
        with self._lock:
            before = self.classifier.state
            after = self.classifier.update(w, ref_ok)
            self.last_window, self._last_window_at, self.reference_code = w, t_end, ref
            on_hook = (LineState.IDLE, LineState.REVERSED)
            if after in on_hook and self.classifier.last_raw in on_hook and w.clipped == 0:
                level = abs(w.dc_v)
                if self.idle_volts is None:
                    self.idle_volts = level
                else:  # exponential average: follows slow drift, ignores one noisy window
                    alpha = min(1.0, (t_end - t_start) / self.IDLE_TAU_S)
                    self.idle_volts += alpha * (level - self.idle_volts)
            if after != LineState.OFF_HOOK:
                self._released_pending = False
            if after != LineState.UNKNOWN:
                self._settled.set()
        if after != before:
            log.info("line: %s -> %s (%.1f V DC, %.1f V AC)", before.value, after.value,
                     w.dc_v, w.ac_vrms)
            if self.on_change is not None:
                self.on_change(before, after)

    def _track_seizure(self, s: Seizure, now: float, volts: float) -> None:
        magnitude = abs(volts)
        if s.loop_closed_at is None:
            if self.cfg.no_voltage_below_v <= magnitude < self.cfg.off_hook_below_v:
                if s._run == 0:
                    s._run_start = now
                s._run += 1
                if s._run >= self.LOOP_RUN:
                    s.loop_closed_at = s._run_start
            else:
                s._run = 0
            return
        settled = now - s.loop_closed_at >= self.OFF_HOOK_SETTLE_S
        if settled and now - s.loop_closed_at < self.OFF_HOOK_SETTLE_S + self.OFF_HOOK_AVERAGE_S:
            s._off_hook_samples.append(volts)
            s.off_hook_volts = sum(s._off_hook_samples) / len(s._off_hook_samples)
        # Polarity reversal while off-hook (answer supervision on some exchanges).
        if magnitude >= self.cfg.no_voltage_below_v + self.cfg.hysteresis_v:
            sign = 1 if volts > 0 else -1
            if s._last_sign and sign != s._last_sign:
                s.polarity_reversals.append(now)
            s._last_sign = sign

    def run_for(self, seconds: float) -> None:
        """Sample for ``seconds`` of the injected clock (the CLI, tests, the demo)."""
        self.run_until(self.clock() + seconds)

    def run_until(self, deadline: float, stop: threading.Event | None = None) -> None:
        next_t = self.clock()
        while not (stop or self._stop).is_set():
            now = self.clock()
            if now >= deadline:
                return
            if now < next_t:
                self.sleep(min(next_t, deadline) - now)
                continue
            self.step()
            next_t += self.period
            if self.clock() - next_t > self.cfg.window_s:  # far behind: resync, count it
                self.overruns += 1
                next_t = self.clock()

    def start(self) -> None:
        """Sample on a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_until, args=(math.inf,),
                                        name="line-monitor", daemon=True)
        self._thread.start()

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Wait (real time) until the line has a settled state, at most ``timeout`` seconds
        (default: the longest settle time, and some); False if it still has none."""
        if timeout is None:
            timeout = max(self.cfg.settle_s, self.cfg.fault_settle_s) + 3 * self.cfg.window_s + 1
        return self._settled.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.reader.close()

    @property
    def last_beat(self) -> float:
        """When the sampling thread last finished a window (for the daemon's watchdog)."""
        return self._last_window_at or 0.0

    # ----------------------------------------------------------------- answers

    @property
    def state(self) -> LineState:
        with self._lock:
            return self._state_locked()

    def _stale(self) -> bool:
        return (self._last_window_at is None
                or self.clock() - self._last_window_at > 3 * self.cfg.window_s + 1.0)

    def _state_locked(self) -> LineState:
        return LineState.UNKNOWN if self._stale() else self.classifier.state

    def _probe_on_line(self) -> bool:
        return (self._seizure is not None and self._seizure.ended_at is None) or \
            self._released_pending

    def line_in_use(self) -> bool:
        """True while a person is on the line (off-hook) or a call is ringing in.

        The probe's own seizure does not count (nor the settling time right after it).
        """
        with self._lock:
            return self._state_locked().in_use and not self._probe_on_line()

    @contextmanager
    def seize(self) -> Iterator[Seizure]:
        """Claim the line for one analog call; :class:`LineInUseError` if someone is on it."""
        with self._lock:
            state = self._state_locked()
            if self._seizure is not None and self._seizure.ended_at is None:
                raise ProbeError("the line is already seized by the probe")
            if state.in_use:
                raise LineInUseError(state)
            seizure = Seizure(started_at=self.clock(), idle_volts=_r(self.idle_volts, 2))
            self._seizure = seizure
        try:
            yield seizure
        finally:
            with self._lock:
                seizure.ended_at = self.clock()
                self._released_pending = self.classifier.state == LineState.OFF_HOOK

    def snapshot(self) -> dict[str, Any]:
        """The line facts for results and the health record (JSON-ready; see module doc)."""
        with self._lock:
            state = self._state_locked()
            w = None if state == LineState.INTERFACE_FAULT else self.last_window
            ring = self.classifier.last_ring if state == LineState.RINGING else None
            since = self.classifier.since
            polarity = None
            if w is not None and abs(w.dc_v) >= self.cfg.no_voltage_below_v:
                polarity = "normal" if w.dc_v > 0 else "reversed"
            return {
                "state": state.value,
                "state_for_s": (None if since is None or state == LineState.UNKNOWN
                                else round(self.clock() - since, 1)),
                "dc_volts": _r(w.dc_v if w else None),
                "ac_vrms": _r(w.ac_vrms if w else None),
                "ring_vrms": _r(ring.ac_vrms if ring else None),
                "ring_hz": _r(ring.ring_hz if ring else None),
                "polarity": polarity,
                "idle_volts": _r(self.idle_volts),
                "in_use": state.in_use and not self._probe_on_line(),
                "seized_by_probe": self._probe_on_line(),
                "fault": state.fault,
                "interface_ok": (None if self.reference_code is None
                                 else state != LineState.INTERFACE_FAULT),
                "reference_code": self.reference_code,
                "stale": self._stale(),
            }


# --------------------------------------------------------------------------- `probe line`


def line_report(cfg: LineConfig, seconds: float | None = None, *, raw: bool = False,
                reader: LineReader | None = None, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], Any] | None = None,
                pin_factory: Any = None) -> tuple[dict[str, Any], int]:
    """What ``probe line`` prints, and its exit code (0 usable, 1 a local line fault).

    The board's MCP3008 is read for ``seconds`` of real time, unless the caller hands in the
    ``reader`` to sample on its ``clock`` and ``sleep`` (``probe line --sim``: a simulated
    board on a simulated clock, wired in probe/cli.py); that reader stays the caller's to close.
    ``raw`` reports mean ADC codes instead (for calibration, hardware/README.md section 4).
    """
    seconds = seconds if seconds is not None else max(2.5, cfg.fault_settle_s + 0.5)
    own = reader is None
    if reader is None:
        reader = Mcp3008Reader(cfg.adc_channel, cfg.reference_channel, pin_factory=pin_factory)
    try:
        if raw:
            return _raw_report(cfg, reader, seconds, clock, sleep or time.sleep), 0
        monitor = LineMonitor(cfg, reader, clock=clock, sleep=sleep)
        monitor.run_for(seconds)
        doc = monitor.snapshot()
        doc["sampled_s"] = round(seconds, 1)
        doc["samples"] = monitor.samples
        failed = doc["fault"] or doc["state"] == LineState.UNKNOWN.value
        return doc, 1 if failed else 0
    finally:
        if own:
            reader.close()


def _raw_report(cfg: LineConfig, reader: LineReader, seconds: float,
                clock: Callable[[], float], sleep: Callable[[float], Any]) -> dict[str, Any]:
    line_codes: list[int] = []
    ref_codes: list[int] = []
    end = clock() + seconds
    while clock() < end:
        line_codes.append(reader.read_line())
        if len(line_codes) % 20 == 0:
            ref_codes.append(reader.read_reference())
        sleep(1.0 / cfg.sample_rate_hz)
    ref_codes.append(reader.read_reference())
    mean = sum(line_codes) / len(line_codes)
    return {
        "samples": len(line_codes),
        "line_code_mean": round(mean, 2),
        "line_code_min": min(line_codes),
        "line_code_max": max(line_codes),
        "reference_code_mean": round(sum(ref_codes) / len(ref_codes), 2),
        "volts": round(Calibration(cfg.zero_code, cfg.volts_per_count).volts(mean), 2),
        "volts_nominal": round(Calibration().volts(mean), 2),
    }


def format_report(doc: dict[str, Any]) -> str:
    """``probe line`` without ``--json``: a few human lines."""
    if "line_code_mean" in doc:
        return (f"line code {doc['line_code_mean']} (min {doc['line_code_min']}, max "
                f"{doc['line_code_max']}) over {doc['samples']} samples = {doc['volts']} V "
                f"calibrated, {doc['volts_nominal']} V nominal; reference code "
                f"{doc['reference_code_mean']} (healthy: {REFERENCE_CODE})")
    meaning = {
        "idle": "on-hook, ready", "reversed": "on-hook, reversed polarity",
        "off_hook": "in use (off-hook)", "ringing": "ringing (a call is coming in)",
        "low_voltage": "FAULT: line voltage too low", "no_voltage": "FAULT: no line voltage "
        "(cut or unplugged)", "interface_fault": "FAULT: the probe board's line interface",
        "unknown": "unknown (no settled reading)",
    }[doc["state"]]
    lines = [f"line: {doc['state']} - {meaning}"]
    if doc["dc_volts"] is not None:
        lines.append(f"  {doc['dc_volts']} V DC, {show(doc['ac_vrms'], 'V')} AC, polarity "
                     f"{doc['polarity'] or '-'}; on-hook baseline "
                     f"{show(doc['idle_volts'], 'V', missing='-')}")
    if doc["ring_vrms"] is not None:
        lines.append(f"  ringing {doc['ring_vrms']} V rms at {show(doc['ring_hz'], 'Hz')}")
    lines.append(f"  reference code {show(doc['reference_code'])} (healthy: {REFERENCE_CODE}), "
                 f"{doc['samples']} samples over {doc['sampled_s']} s")
    return "\n".join(lines)
