"""The probe board: its pins (defaults, the pin-map loader, the conflict check) and opening it.

:func:`open_board` opens the status LED and the line monitor as the daemon needs them: a board
that cannot be opened (no pin library, no board, a pin taken by something else) is a fault to
report, never the end of the daemon, which keeps calling with the LED's statuses in the log
(:class:`probe.board.indicator.LoggingIndicator`) and the line unread.  :class:`Board` says what is
wrong with it, also once it is running (a line side whose reference channel reads wrong).

``hardware/pinmap.toml`` is the single source of truth for every GPIO the board uses.  The
probe ships without the ``hardware/`` tree, so the defaults the software needs are repeated in
:data:`DEFAULT_PINS`; ``tests/test_board_files.py`` proves the two (and the overlay, the HAT
EEPROM settings and ``firmware/config.txt``) agree.

Wiring summary (BCM numbers; physical J8 pin in brackets)::

    SPI0  SCLK 11 [23]  MOSI 10 [19]  MISO 9 [21]  CE0 8 [24]  -> ISO7741 -> MCP3008 (line side)
    UART0 TXD 14 [8]    RXD 15 [10]                            -> GSM modem (HAT)
    LED   red 22 [15]   green 23 [16]   blue 24 [18]           -> common-cathode RGB LED
    buzzer 18 [12] (2N7002 low side)        silence button 27 [13] to GND, pull-up
    modem PWRKEY 5 [29]   RESET 6 [31]   STATUS 26 [37]

>>> pin_conflicts({"led": 22, "buzzer": 22, "button": 9})  # doctest: +NORMALIZE_WHITESPACE
['GPIO22 is used by both led and buzzer',
 'button: GPIO9 is reserved (SPI0 MISO: the MCP3008 on spidev0.0)']
"""

from __future__ import annotations

import logging
import time
import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from probe.board.indicator import Indicator
    from probe.board.line import LineMonitor, LineState, Seizure
    from probe.config.model import IndicatorConfig, LineConfig

__all__ = [
    "DEFAULT_PINS",
    "GPIO_RANGE",
    "SYSTEM_PINS",
    "Board",
    "PinMap",
    "PinSpec",
    "fault_reason",
    "load_pinmap",
    "open_board",
    "pin_conflicts",
    "repo_pinmap_path",
]

#: The GPIO lines on the 40-pin header (BCM numbering).
GPIO_RANGE = range(0, 28)

log = logging.getLogger("probe.board.pins")

#: Pins the probe must never drive as plain GPIO, and why.  SPI0 keeps CE1 (GPIO 7) out of
#: reach too: a stock ``dtparam=spi=on`` claims it even though our overlay frees it.
SYSTEM_PINS: dict[int, str] = {
    0: "ID_SD: the HAT ID EEPROM",
    1: "ID_SC: the HAT ID EEPROM",
    7: "SPI0 CE1: kept free for a stock dtparam=spi=on",
    8: "SPI0 CE0: the MCP3008 on spidev0.0",
    9: "SPI0 MISO: the MCP3008 on spidev0.0",
    10: "SPI0 MOSI: the MCP3008 on spidev0.0",
    11: "SPI0 SCLK: the MCP3008 on spidev0.0",
    14: "UART0 TXD: the GSM modem",
    15: "UART0 RXD: the GSM modem",
}

#: The GPIO lines the software drives, by pin-map name (see hardware/pinmap.toml).
DEFAULT_PINS: dict[str, int] = {
    "led_red": 22,
    "led_green": 23,
    "led_blue": 24,
    "buzzer": 18,
    "silence_button": 27,
    "modem_pwrkey": 5,
    "modem_reset": 6,
    "modem_status": 26,
}


@dataclass(frozen=True)
class PinSpec:
    name: str
    gpio: int
    header: int
    function: str  # "output" | "input" | "alt0" | "id_eeprom"
    role: str
    active: str | None = None  # "high" | "low" (GPIO pins only)
    initial: str | None = None  # outputs: "high" | "low"
    pull: str | None = None  # inputs: "up" | "down" | "none"


@dataclass(frozen=True)
class PinMap:
    board: str
    revision: str
    pins: tuple[PinSpec, ...]
    reserved: dict[int, str]

    def by_name(self) -> dict[str, PinSpec]:
        return {p.name: p for p in self.pins}

    def gpio_pins(self) -> tuple[PinSpec, ...]:
        """The pins the probe drives itself (function ``output`` or ``input``)."""
        return tuple(p for p in self.pins if p.function in ("output", "input"))


def repo_pinmap_path() -> Path:
    """``hardware/pinmap.toml`` in a source checkout (not shipped in the wheel)."""
    return Path(__file__).resolve().parents[2] / "hardware" / "pinmap.toml"


def load_pinmap(path: str | Path | None = None) -> PinMap:
    """Parse and check the pin map; :class:`ValueError` lists every problem found."""
    path = Path(path) if path is not None else repo_pinmap_path()
    with path.open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    problems: list[str] = []
    if data.get("schema") != 1:
        problems.append(f"schema: expected 1, got {data.get('schema')!r}")
    pins: list[PinSpec] = []
    for i, raw in enumerate(data.get("pin", [])):
        where = f"pin[{i}]"
        try:
            spec = PinSpec(**raw)
        except TypeError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if spec.gpio not in GPIO_RANGE:
            problems.append(f"{where} {spec.name}: gpio {spec.gpio} is not on the header")
        if spec.function not in ("output", "input", "alt0", "id_eeprom"):
            problems.append(f"{where} {spec.name}: unknown function {spec.function!r}")
        if spec.function in ("output", "input") and spec.active not in ("high", "low"):
            problems.append(f"{where} {spec.name}: active must be high or low")
        if spec.function == "output" and spec.initial not in ("high", "low"):
            problems.append(f"{where} {spec.name}: an output needs initial = high or low")
        if spec.function == "input" and spec.pull not in ("up", "down", "none"):
            problems.append(f"{where} {spec.name}: an input needs pull = up, down or none")
        pins.append(spec)
    reserved = {int(r["gpio"]): str(r["why"]) for r in data.get("reserved", [])}
    names = [p.name for p in pins]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"pin name {name!r} appears more than once")
    gpios = [p.gpio for p in pins] + list(reserved)
    for gpio in sorted({g for g in gpios if gpios.count(g) > 1}):
        problems.append(f"GPIO{gpio} is listed more than once (pins and reserved)")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return PinMap(str(data.get("board", "")), str(data.get("revision", "")), tuple(pins),
                  reserved)


def pin_conflicts(assignments: Mapping[str, int | None],
                  reserved: Mapping[int, str] | None = None) -> list[str]:
    """Every problem with a set of ``{use: gpio}`` assignments: duplicates, reserved pins.

    ``None`` means "not used" (e.g. no buzzer fitted).  ``reserved`` defaults to
    :data:`SYSTEM_PINS`.
    """
    reserved = SYSTEM_PINS if reserved is None else reserved
    problems: list[str] = []
    seen: dict[int, str] = {}
    for use, gpio in assignments.items():
        if gpio is None:
            continue
        if gpio not in GPIO_RANGE:
            problems.append(f"{use}: GPIO{gpio} is not on the 40-pin header (0-27)")
        elif gpio in seen:
            problems.append(f"GPIO{gpio} is used by both {seen[gpio]} and {use}")
        elif gpio in reserved:
            problems.append(f"{use}: GPIO{gpio} is reserved ({reserved[gpio]})")
        seen.setdefault(gpio, use)
    return problems


# --------------------------------------------------------------------------- opening the board


@dataclass
class Board:
    """The board's devices as opened, and why a part of it could not be.

    ``faults`` holds a reason per part that did not open (``"indicator"``, ``"line"``);
    ``indicator`` is then the logging stand-in and ``line`` None.
    """

    indicator: Indicator
    line: LineMonitor | None
    faults: dict[str, str] = field(default_factory=dict)

    def line_fault(self) -> str | None:
        """Why the line cannot be read now (None: it can, or there is no [line]): it did not
        open, or its reference channel is wrong (the line side is dead, absent or faulty)."""
        if "line" in self.faults:
            return self.faults["line"]
        if self.line is None:
            return None
        snapshot = self.line.snapshot()
        if snapshot["state"] != "interface_fault":
            return None
        from probe.board.line import REFERENCE_CODE

        return (f"the reference channel reads {snapshot['reference_code']} instead of "
                f"{REFERENCE_CODE}: the line side of the board is unpowered, absent or faulty")

    def line_faulty(self) -> bool | None:
        """Live, for the LED: is the line or the board reading it at fault (a cut line, a low
        voltage, a dead line side)?  None: there is no [line] to read."""
        if self.line is None:
            return True if "line" in self.faults else None
        return self.line_fault() is not None or bool(self.line.snapshot()["fault"])

    def reasons(self) -> dict[str, str]:
        """Every part at fault now, with its reason."""
        reasons = {k: v for k, v in self.faults.items() if k != "line"}
        if (line := self.line_fault()) is not None:
            reasons["line"] = line
        return reasons

    def reason(self) -> str | None:
        """One line for the health record and the retained status (None: the board is fine)."""
        return "; ".join(f"{part}: {why}" for part, why in self.reasons().items()) or None

    def result_line(self, seizure: Seizure | None = None) -> dict[str, Any] | None:
        """What a result carries under ``line``: the line's facts, or None while they cannot
        be read (the reason goes into the diagnosis: ``probe.board_fault``)."""
        if self.line is None or self.line_fault() is not None:
            return None
        return {**self.line.snapshot(), **({"seizure": seizure.facts()} if seizure else {})}


def fault_reason(exc: BaseException, fallbacks: list[str] | None = None) -> str:
    """What an operator needs to read about a board that did not open."""
    from gpiozero.exc import BadPinFactory, GPIOPinInUse

    if isinstance(exc, BadPinFactory):
        tried = "; ".join(fallbacks or []) or str(exc)  # each library's own failure, if tried
        return f"no pin library: gpiozero could load none ({tried}); install lgpio"
    if isinstance(exc, GPIOPinInUse):
        return f"a pin is taken: {exc}"
    return f"{type(exc).__name__}: {exc}"


def open_board(indicator_cfg: IndicatorConfig | None, line_cfg: LineConfig | None, *,
               pin_factory: Any = None,
               on_line_change: Callable[[LineState, LineState], None] | None = None,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], Any] | None = None) -> Board:
    """The indicator ([indicator], else the log) and the line monitor ([line], else None),
    neither started.  A part that fails to open is logged, replaced and kept in ``faults``.

    ``pin_factory`` as in gpiozero (None: its default, i.e. the Pi's GPIO); ``clock`` and
    ``sleep`` as in :class:`~probe.board.line.LineMonitor`.
    """
    from probe.board.indicator import LoggingIndicator, open_indicator
    from probe.board.line import LineMonitor

    faults: dict[str, str] = {}

    def attempt(part: str, opener: Callable[[], Any]) -> Any:
        # gpiozero warns of each pin library it could not load before it gives up: those
        # warnings are the reason, not noise on stderr.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return opener()
            except Exception as exc:  # any failure of the board: a fault, never the daemon's
                fallbacks = [str(w.message).removeprefix("Falling back from ") for w in caught
                             if type(w.message).__name__ == "PinFactoryFallback"]
                faults[part] = fault_reason(exc, fallbacks)
                log.error("board: %s unavailable, the probe goes on without it: %s", part,
                          faults[part], extra={"event": "board_fault", "part": part,
                                               "reason": faults[part]})
                return None

    indicator = attempt("indicator", lambda: open_indicator(
        indicator_cfg, pin_factory=pin_factory, clock=clock)) if indicator_cfg else None
    if indicator is None:  # no [indicator], or it failed: its statuses go to the log
        indicator = LoggingIndicator(indicator_cfg, clock=clock)
    line = attempt("line", lambda: LineMonitor.open(
        line_cfg, pin_factory=pin_factory, on_change=on_line_change, clock=clock,
        sleep=sleep)) if line_cfg else None
    board = Board(indicator, line, faults)
    if indicator_cfg or line_cfg:
        _log_interfaces(board, pin_factory)
    return board


def _log_interfaces(board: Board, pin_factory: Any) -> None:
    """Which pin library and which SPI the board runs on: a software (bit-banged) SPI works,
    but costs CPU and timing at 200 samples a second, so it is a warning."""
    from gpiozero import Device

    factory = pin_factory if pin_factory is not None else Device.pin_factory
    if factory is None:
        return  # nothing opened
    interface = getattr(board.line.reader, "interface", None) if board.line else None
    spi = interface() if interface is not None else None
    if spi is None:
        log.info("board: pin factory %s", type(factory).__name__)
    else:
        level = logging.INFO if spi.hardware else logging.WARNING
        log.log(level, "board: pin factory %s, MCP3008 on %s SPI (%s)%s",
                type(factory).__name__, "hardware" if spi.hardware else "software",
                spi.name, "" if spi.hardware else ": install spidev or lgpio for the "
                "hardware SPI")
