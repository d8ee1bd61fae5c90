"""The probe board part of ``make demo``: status LED, buzzer, silence button and the line.

Runs in real time (about 12 s) on gpiozero mock pins: the indicator's thread drives the LED
and buzzer pins, the line monitor's thread reads the emulated MCP3008 over mock SPI while a
simulated line is picked up, cut and restored.  Each phase ends with a strip drawn from the
mock pins' own state history (one character per 0.05 s)::

    red    rrrrr.......rrrrr.......rrrrr..............................
    buzzer ############........############........############........
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from probe.board.indicator import Indicator, Status, indicator_status
from probe.board.line import LineInUseError, LineMonitor, LineState
from probe.config.model import IndicatorConfig, LineConfig
from probe.sim.line import ClockedMockFactory, LineSimulator, SimBoard, cut, idle, off_hook

RED, GREEN, BLUE, BUZZER, BUTTON = 22, 23, 24, 18, 27
STEP_S = 0.05


def strip(pins: dict[str, Any], since: float, until: float) -> list[str]:
    """Draw each pin's state history between ``since`` and ``until``."""
    lines = []
    n = max(1, round((until - since) / STEP_S))
    for label, (pin, mark) in pins.items():
        t, changes = since, []
        for s in pin.states[1:]:
            t += s.timestamp
            changes.append((t, s.state))
        row, state, i = [], pin.states[0].state, 0
        for k in range(n):
            at = since + (k + 0.5) * STEP_S
            while i < len(changes) and changes[i][0] <= at:
                state = changes[i][1]
                i += 1
            row.append(mark if state else ".")
        lines.append(f"{label:<7}{''.join(row)}")
    return lines


def run_board_demo(say: Callable[[str], None], verdicts: dict[str, dict[str, Any]]) -> bool:
    """Show the board reacting to the demo daemon's own verdicts (``VerdictBook.status()``:
    what its retained status said), by the daemon's own rule (``indicator_status``); True if
    everything happened as it should."""
    clock = time.monotonic
    factory = ClockedMockFactory(clock)
    line = LineSimulator(idle(48.0), noise_v=0.8, hum_vrms=2.0)
    board = SimBoard(line, clock, factory=factory)
    started = clock()

    def event(text: str) -> None:
        say(f"  [{clock() - started:5.1f} s] {text}")

    indicator = Indicator(IndicatorConfig(alarm_repeat_s=0), pin_factory=factory, clock=clock,
                          on_event=lambda text: event(f"indicator: {text}"))
    seen: list[LineState] = []
    current: dict[str, dict[str, Any]] = {}  # booting until the verdicts

    def on_line(old: LineState, new: LineState) -> None:
        seen.append(new)
        event(f"line: {old.value} -> {new.value}")
        indicator.show(indicator_status(current.values(), line_fault=new.fault))

    monitor = LineMonitor(LineConfig(), board.reader(), on_change=on_line)
    ok = True
    red = factory.pin(RED)
    pins = {"red": (red, "r"), "green": (factory.pin(GREEN), "g"),
            "blue": (factory.pin(BLUE), "b"), "buzzer": (factory.pin(BUZZER), "#")}

    def phase(title: str, seconds: float,
              actions: list[tuple[float, Callable[[], Any]]] = ()) -> None:  # type: ignore[assignment]
        """Run timed ``actions`` (seconds into the phase), then draw the pins."""
        say(f"\n  {title}")
        t0 = clock()
        for pin, _ in pins.values():
            pin.clear_states()
        for at, action in actions:
            time.sleep(max(0.0, t0 + at - clock()))
            action()
        time.sleep(max(0.0, t0 + seconds - clock()))
        for row in strip(pins, t0, clock()):
            if set(row[7:]) != {"."}:
                say("    " + row)

    def press() -> None:
        event("silence button pressed")
        factory.pin(BUTTON).drive_low()
        factory.pin(BUTTON).drive_high()

    def try_analog_call() -> None:
        nonlocal ok
        try:
            with monitor.seize():
                ok = False
            event("analog test call placed (wrong: the line is in use!)")
        except LineInUseError as exc:
            event(f"analog test call: {exc}")

    try:
        indicator.show(Status.BOOTING)
        indicator.start()
        monitor.start()
        phase("booting; the line monitor samples the line 200 times a second over mock SPI",
              1.2)
        v = indicator_status(verdicts.values(), line_fault=False)
        named = ", ".join(f"{name} {d['verdict']}" for name, d in verdicts.items())

        def show_verdict() -> None:
            current.update(verdicts)
            indicator.show(indicator_status(current.values(), line_fault=monitor.state.fault))

        phase(f"the daemon's verdicts ({named or 'none'}) show as {v.value}; at 1.5 s someone "
              "presses the silence button", 3.5, [(0.0, show_verdict), (1.5, press)])
        phase("someone lifts the handset; the probe wants to place an analog test call", 2.0,
              [(0.0, lambda: line.set(clock(), off_hook(8.0))), (1.2, try_analog_call)])
        phase("the handset is put down; a second later the phone cable is pulled out", 5.0,
              [(0.0, lambda: line.set(clock(), idle())), (1.0, lambda: line.set(clock(), cut()))])
        phase("the cable is plugged back in", 2.0, [(0.0, lambda: line.set(clock(), idle()))])
    finally:
        monitor.close()
        indicator.close()
        board.close()
    expected = [LineState.IDLE, LineState.OFF_HOOK, LineState.IDLE, LineState.NO_VOLTAGE,
                LineState.IDLE]
    ok = ok and seen == expected
    say(f"\n  line states seen: {', '.join(s.value for s in seen)}"
        f" ({'as expected' if seen == expected else 'UNEXPECTED'})")
    return ok
