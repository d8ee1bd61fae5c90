"""Power-cycling a modem through its power key (and STATUS / RESET lines) with gpiozero.

Wiring (Raspberry Pi, BCM numbering; the pins come from ``[modems.*]``)::

    GPIO power_pin ──1k──┤ NPN (2N3904) base; collector ── modem PWRKEY; emitter ── GND
    GPIO status_pin ◄── modem STATUS (through a level shifter when the modem runs at 2.8 V)
    GPIO reset_pin  ──1k──┤ NPN base; collector ── modem RESET

The power key *toggles* on SIMCom SIM800-style modules (a press of >= 1 s turns the modem on
*or* off), so with a STATUS line we look before pressing: on -> press (off) -> wait for STATUS
low -> press (on) -> wait for STATUS high.  Without STATUS a toggling modem that does not answer
is assumed on (hung): press, wait ``off_wait_s``, press.  RESET, when wired, is tried first.

Tests pass gpiozero's ``MockFactory`` as ``pin_factory`` (the hardware is injected, as
gpiozero's own devices take ``pin_factory=``); nothing is opened
until :class:`PowerKey` is constructed.
"""

from __future__ import annotations

import time
from typing import Any

from probe.config.model import ModemConfig


class PowerKey:
    def __init__(self, config: ModemConfig, *, toggle: bool, pin_factory: Any = None,
                 off_wait_s: float = 3.0) -> None:
        from gpiozero import DigitalInputDevice, DigitalOutputDevice

        assert config.power_pin is not None or config.reset_pin is not None
        self.pulse_s = config.power_pulse_s
        self.toggle = toggle
        self.off_wait_s = off_wait_s
        self.on_wait_s = config.boot_wait_s
        self.key = (DigitalOutputDevice(config.power_pin, pin_factory=pin_factory)
                    if config.power_pin is not None else None)
        self.reset = (DigitalOutputDevice(config.reset_pin, pin_factory=pin_factory)
                      if config.reset_pin is not None else None)
        self.status = (DigitalInputDevice(config.status_pin, pin_factory=pin_factory)
                       if config.status_pin is not None else None)

    def close(self) -> None:
        for device in (self.key, self.reset, self.status):
            if device is not None:
                device.close()

    def press(self, seconds: float | None = None) -> None:
        """Hold the key for the module's press time (a hardware timing, not a protocol
        wait: the datasheet's minimum pulse)."""
        assert self.key is not None
        self.key.on()
        time.sleep(self.pulse_s if seconds is None else seconds)
        self.key.off()

    def reset_pulse(self) -> None:
        assert self.reset is not None
        self.reset.on()
        time.sleep(0.25)
        self.reset.off()

    def is_on(self) -> bool | None:
        return None if self.status is None else bool(self.status.value)

    def cycle(self) -> list[str]:
        """Power-cycle; the steps taken, for the result's ``recovery`` list."""
        steps: list[str] = []
        if self.key is None:
            self.reset_pulse()
            return ["reset"]
        if self.status is not None:
            if self.status.value:
                self.press()
                steps.append("power_off")
                self.status.wait_for_inactive(timeout=self.off_wait_s)
            self.press()
            steps.append("power_on")
            self.status.wait_for_active(timeout=self.on_wait_s)
            return steps
        if self.toggle:
            self.press()
            steps.append("power_off")
            time.sleep(self.off_wait_s)  # no STATUS line: the datasheet's power-down time
        self.press()
        steps.append("power_on")
        return steps
