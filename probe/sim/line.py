"""The probe board, simulated: an analog line, the front end, and an MCP3008 on gpiozero's mock SPI.

Nothing here replaces gpiozero: :class:`EmulatedMCP3008` is the *slave* side of the SPI bus,
built on gpiozero's :class:`~gpiozero.pins.mock.MockSPIDevice`, answering the bits gpiozero's
real ``MCP3008`` driver clocks out (start bit, SGL/DIFF, D2..D0, then a null bit and ten result
bits, MSB first) exactly as the chip's datasheet says.  So ``MCP3008.raw_value`` runs its real
code path, bit by bit, over mock pins.

Wiring of a simulated board::

    clock = SimClock()                       # virtual monotonic time; sleep() advances it
    line = LineSimulator(seed=1)             # 48 V idle, 0.5 V noise
    board = SimBoard(line, clock)            # ClockedMockFactory + EmulatedMCP3008 + front end
    monitor = LineMonitor(config.line, board.reader(), clock=clock, sleep=clock.sleep)
    line.set(clock() + 2.0, off_hook())      # someone picks up in 2 s
    monitor.run_for(5.0)                     # 1000 real SPI reads, in ~0.5 s of real time

:class:`ClockedMockFactory` is gpiozero's ``MockFactory`` whose pins stamp their state history
with the injected clock, so LED and buzzer patterns are checked to the millisecond with
gpiozero's own ``MockPin.assert_states_and_times`` without sleeping.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin, MockSPIDevice, PinState

from probe.board.line import ADC_CODES, ADC_MID_V, ADC_VREF_V, FRONTEND_GAIN, Mcp3008Reader

__all__ = [
    "SCENARIOS",
    "ClockedMockFactory",
    "EmulatedMCP3008",
    "Frontend",
    "LineCondition",
    "LineSimulator",
    "SimBoard",
    "SimClock",
    "cut",
    "idle",
    "low_voltage",
    "off_hook",
    "open_scenario",
    "reversed_polarity",
    "ringing",
]


class SimClock:
    """A monotonic clock that only moves when told to (``sleep`` advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    advance = sleep


class ClockedMockPin(MockPin):
    """gpiozero's MockPin, but its state history is stamped by the factory's clock."""

    # MockPin's own attributes, declared for the type checker (gpiozero has no annotations).
    _state: bool
    _last_change: float
    states: list[PinState]

    def _clock(self) -> float:
        return self.factory.clock()

    def _change_state(self, value: bool) -> bool:
        if self._state != value:
            t = self._clock()
            self._state = value
            self.states.append(PinState(t - self._last_change, value))
            self._last_change = t
            return True
        return False

    def clear_states(self) -> None:
        self._last_change = self._clock()
        self.states = [PinState(0.0, self._state)]


class ClockedMockFactory(MockFactory):
    """``MockFactory(pin_class=ClockedMockPin)`` with an injected clock (also its ticks)."""

    def __init__(self, clock: Callable[[], float], revision: str | None = None) -> None:
        self.clock = clock
        super().__init__(revision=revision, pin_class=ClockedMockPin)

    def ticks(self) -> float:
        return self.clock()

    @staticmethod
    def ticks_diff(later: float, earlier: float) -> float:
        return later - earlier


# --------------------------------------------------------------------------- the chip


class EmulatedMCP3008(MockSPIDevice):
    """The MCP3008 (10-bit, 8 channels) on gpiozero's mock SPI bus, SPI mode 0.

    ``inputs(channel)`` gives the voltage at that channel's pin at the moment of conversion
    (the end of the sample period, when D0 has been clocked in).  ``powered=False`` models the
    board's line side without power: the ISO7741 isolator then drives MISO high (its default
    output state), so every read is all ones.

    Protocol, as clocked by gpiozero (datasheet figure 6-1)::

        CS  ‾‾\\______________________________________/‾‾
        DIN   0 0 0 0 0 0 0 1 S D2 D1 D0 x x x x ...      start bit, single/diff, channel
        DOUT  ? ? ? ? ? ? ? ? ? ?  ?  ?  x 0 B9 ... B0    (x: sampling, 0: null bit)
    """

    rx_buf: list[bool]  # MockSPIDevice's, declared for the type checker

    def __init__(self, inputs: Callable[[int], float], *, vref: float = ADC_VREF_V,
                 pin_factory: MockFactory, clock_pin: int = 11, mosi_pin: int = 10,
                 miso_pin: int = 9, select_pin: int = 8) -> None:
        super().__init__(clock_pin, mosi_pin, miso_pin, select_pin, pin_factory=pin_factory)
        self.inputs = inputs
        self.vref = vref
        self.powered = True
        self.conversions = 0
        self.phase = "idle"

    def on_start(self) -> None:
        super().on_start()
        self.phase = "idle"
        # The bus pins toggle 48 times a read: keep their mock history from growing forever.
        for pin in (self.clock_pin, self.mosi_pin, self.miso_pin, self.select_pin):
            if pin is not None:
                pin.clear_states()

    def on_clock(self) -> None:
        if not self.powered:
            if self.select_pin.state == self.select_high and self.miso_pin is not None:
                self.miso_pin.drive_high()
            return
        super().on_clock()

    def on_bit(self) -> None:
        if self.phase == "idle":  # leading zeros until the start bit
            if self.rx_buf[-1]:
                self.phase, self.rx_buf = "mode", []
        elif self.phase == "mode":
            self.phase = "single" if self.rx_buf[-1] else "differential"
            self.rx_buf = []
        elif self.phase in ("single", "differential") and len(self.rx_buf) == 3:
            channel = self.rx_word()
            self.tx_word(self.convert(channel, self.phase == "differential"), 12)
            self.phase = "result"

    def convert(self, channel: int, differential: bool = False) -> int:
        """The output code for ``channel``: floor(1024 x Vin / Vref), clamped to 0..1023."""
        self.conversions += 1
        vin = self.inputs(channel)
        if differential:  # CH(n) relative to CH(n xor 1), negative reads as 0
            vin -= self.inputs(channel ^ 1)
        code = math.floor(ADC_CODES * vin / self.vref)
        return min(ADC_CODES - 1, max(0, code))


# --------------------------------------------------------------------------- the front end


@dataclass(frozen=True)
class Frontend:
    """The isolated difference amplifier: line volts -> volts at the ADC pin.

    ``gain_error`` (fraction) and ``offset_v`` (at the ADC pin) model a real board's
    tolerances; the nominal board has neither.
    """

    gain: float = FRONTEND_GAIN
    mid_v: float = ADC_MID_V
    vref: float = ADC_VREF_V
    gain_error: float = 0.0
    offset_v: float = 0.0

    def adc_volts(self, line_volts: float) -> float:
        v = self.mid_v + self.offset_v + line_volts * self.gain * (1 + self.gain_error)
        return min(self.vref, max(0.0, v))  # the op-amp rails (3.3 V) and the input clamp


# --------------------------------------------------------------------------- the line


@dataclass(frozen=True)
class LineCondition:
    """What the exchange and the phones do to the line from some moment on."""

    kind: str  # idle | off_hook | ringing | cut | reversed | low_voltage
    dc_v: float  # tip-ring DC level (negative: reversed polarity)
    ring_vrms: float = 0.0
    ring_hz: float = 25.0
    cadence: tuple[float, float] | None = None  # (on_s, off_s) of the ringing bursts


def idle(volts: float = 48.0) -> LineCondition:
    return LineCondition("idle", volts)


def off_hook(volts: float = 8.0) -> LineCondition:
    return LineCondition("off_hook", volts)


def ringing(vrms: float = 90.0, hz: float = 25.0, cadence: tuple[float, float] = (1.0, 4.0),
            dc: float = 48.0) -> LineCondition:
    return LineCondition("ringing", dc, vrms, hz, cadence)


def cut() -> LineCondition:
    return LineCondition("cut", 0.0)


def reversed_polarity(volts: float = 48.0) -> LineCondition:
    return LineCondition("reversed", -volts)


def low_voltage(volts: float = 24.0) -> LineCondition:
    return LineCondition("low_voltage", volts)


class LineSimulator:
    """Tip-ring voltage over time: scheduled conditions, noise, mains hum and slow drift.

    ``drift_v_per_h`` moves the exchange battery (and so every DC level proportionally);
    ``noise_v`` is the RMS of white noise, ``hum_vrms`` of a ``hum_hz`` sine (induction from
    mains wiring).  Deterministic for a given ``seed``.
    """

    def __init__(self, start: LineCondition | None = None, *, seed: int = 1,
                 noise_v: float = 0.5, hum_vrms: float = 0.0, hum_hz: float = 50.0,
                 drift_v_per_h: float = 0.0, battery_v: float = 48.0) -> None:
        self._times: list[float] = [-math.inf]
        self._conditions: list[LineCondition] = [start or idle(battery_v)]
        self.rng = random.Random(seed)
        self.noise_v = noise_v
        self.hum_vrms = hum_vrms
        self.hum_hz = hum_hz
        self.drift_v_per_h = drift_v_per_h
        self.battery_v = battery_v
        self.t0: float | None = None  # time origin of the drift (the first reading)

    def set(self, at: float, condition: LineCondition) -> None:
        """From monotonic time ``at`` on, the line is in ``condition``."""
        i = bisect.bisect_right(self._times, at)
        self._times.insert(i, at)
        self._conditions.insert(i, condition)

    def condition_at(self, t: float) -> tuple[float, LineCondition]:
        i = bisect.bisect_right(self._times, t) - 1
        return self._times[i], self._conditions[i]

    def clean_volts_at(self, t: float) -> float:
        """The line voltage without noise or hum."""
        if self.t0 is None:
            self.t0 = t
        since, c = self.condition_at(t)
        scale = 1.0 + self.drift_v_per_h * (t - self.t0) / 3600.0 / self.battery_v
        v = c.dc_v * scale
        if c.ring_vrms and c.cadence is not None:
            on_s, off_s = c.cadence
            elapsed = t - since if math.isfinite(since) else t  # from the start: t = 0
            if elapsed % (on_s + off_s) < on_s:
                v += c.ring_vrms * math.sqrt(2) * math.sin(2 * math.pi * c.ring_hz * elapsed)
        return v

    def volts_at(self, t: float) -> float:
        v = self.clean_volts_at(t)
        if self.hum_vrms:
            v += self.hum_vrms * math.sqrt(2) * math.sin(2 * math.pi * self.hum_hz * t)
        if self.noise_v:
            v += self.rng.gauss(0.0, self.noise_v)
        return v

    def waveform(self, t0: float, seconds: float, rate_hz: float) -> list[float]:
        """Samples at ``rate_hz`` (for the pure classifier tests and benchmarks)."""
        return [self.volts_at(t0 + i / rate_hz) for i in range(round(seconds * rate_hz))]


# --------------------------------------------------------------------------- the board


def _ensure_default_factory() -> None:
    """gpiozero 2.0.1's ``SPISoftwareBus.__init__`` calls ``Device.__init__()`` without the
    ``pin_factory`` it was given, so software (and mock) SPI needs *a* default factory even
    when every device gets its own.  Its pins all come from the factory passed in; the
    default one is never used for a pin.  Only set when none exists (no effect on a Pi).
    """
    from gpiozero import Device

    if Device.pin_factory is None:
        Device.pin_factory = MockFactory()


class SimBoard:
    """A probe board on a (clocked) mock pin factory, wired to a :class:`LineSimulator`.

    CH0 = the line through the front end, CH1 = the 1.5 V mid reference, CH2..7 = 0 V.
    ``board.adc.powered = False`` kills the line side (isolated supply failure).
    """

    def __init__(self, line: LineSimulator, clock: Callable[[], float], *,
                 frontend: Frontend | None = None, factory: MockFactory | None = None) -> None:
        self.line = line
        self.clock = clock
        self.frontend = frontend or Frontend()
        self.factory = factory if factory is not None else ClockedMockFactory(clock)
        _ensure_default_factory()
        # The emulated chip must exist before gpiozero asks the factory for the SPI pins,
        # so the clock and select pins are created as gpiozero's SPI mock pin classes.
        self.adc = EmulatedMCP3008(self._pin_volts, vref=self.frontend.vref,
                                   pin_factory=self.factory)

    def _pin_volts(self, channel: int) -> float:
        if channel == 0:
            return self.frontend.adc_volts(self.line.volts_at(self.clock()))
        if channel == 1:
            return self.frontend.mid_v + self.frontend.offset_v
        return 0.0

    def reader(self, channel: int = 0, reference_channel: int = 1) -> Mcp3008Reader:
        """gpiozero's real MCP3008 driver on this board's mock SPI bus."""
        return Mcp3008Reader(channel, reference_channel, pin_factory=self.factory)

    def pin(self, gpio: int) -> Any:
        return self.factory.pin(gpio)

    def close(self) -> None:
        self.adc.close()


#: Named line conditions for ``probe line --sim NAME`` and the demo.
SCENARIOS: dict[str, Callable[[], LineCondition]] = {
    "idle": idle,
    "off-hook": off_hook,
    "ringing": ringing,
    "reversed": reversed_polarity,
    "cut": cut,
    "low": low_voltage,
    "dead-board": idle,  # the line is fine, the board's isolated side is not powered
}


def open_scenario(name: str, *, seed: int = 1) -> tuple[SimBoard, SimClock]:
    """A simulated board whose line is in scenario ``name`` from the start."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    clock = SimClock()
    board = SimBoard(LineSimulator(SCENARIOS[name](), seed=seed, noise_v=0.8, hum_vrms=2.0),
                     clock)
    board.adc.powered = name != "dead-board"
    return board, clock
