"""The probe board's pins: defaults, the pin-map loader and the pin-conflict check.

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

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PINS",
    "GPIO_RANGE",
    "SYSTEM_PINS",
    "PinMap",
    "PinSpec",
    "load_pinmap",
    "pin_conflicts",
    "repo_pinmap_path",
]

#: The GPIO lines on the 40-pin header (BCM numbering).
GPIO_RANGE = range(0, 28)

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
    return Path(__file__).resolve().parent.parent / "hardware" / "pinmap.toml"


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
