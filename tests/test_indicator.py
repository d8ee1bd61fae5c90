"""probe.board.indicator: LED and buzzer patterns on gpiozero's mock pins, with the clock injected.

The pins are gpiozero ``MockPin``s whose state history is stamped by the test's clock
(:class:`probe.sim.line.ClockedMockFactory`), so every blink and beep is checked to the
millisecond with gpiozero's own ``assert_states_and_times`` - and nothing sleeps.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from probe.board.indicator import (
    LOOKS,
    AlarmPolicy,
    Indicator,
    LoggingIndicator,
    Status,
    blink_code,
    in_quiet_hours,
    indicator_status,
    open_indicator,
    overall_status,
    pattern_level,
    seconds_until_quiet_end,
)
from probe.board.pins import open_board
from probe.config.model import ALARM_STATUSES, IndicatorConfig
from probe.sim.line import ClockedMockFactory, SimClock

RED, GREEN, BLUE, BUZZER, BUTTON = 22, 23, 24, 18, 27
NOON = datetime(2024, 3, 5, 12, 0, 0)


class Rig:
    """An indicator on clocked mock pins; ``wall`` follows the clock from ``start``."""

    def __init__(self, cfg: IndicatorConfig | None = None, start: datetime = NOON) -> None:
        self.clock = SimClock(0.0)
        self.factory = ClockedMockFactory(self.clock)
        self.start = start
        self.events: list[str] = []
        self.ind = Indicator(cfg or IndicatorConfig(), pin_factory=self.factory,
                             clock=self.clock, wall=self.wall, on_event=self.events.append)

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.clock())

    def pin(self, gpio: int):  # type: ignore[no-untyped-def]
        return self.factory.pin(gpio)

    def run(self, seconds: float) -> None:
        """Tick exactly at every deadline the indicator asks for, up to ``seconds`` on."""
        end = self.clock() + seconds
        while True:
            wake = self.ind.tick()
            if wake > end:
                self.clock.t = end
                self.ind.tick()
                return
            self.clock.t = max(wake, self.clock())

    def clear(self) -> None:
        for gpio in (RED, GREEN, BLUE, BUZZER):
            self.pin(gpio).clear_states()

    def ons(self, gpio: int) -> int:
        return sum(1 for s in self.pin(gpio).states[1:] if s.state)

    def press(self) -> None:
        self.pin(BUTTON).drive_low()
        self.pin(BUTTON).drive_high()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.ind.close()


# --------------------------------------------------------------------------- pure parts


def test_vocabulary_covers_the_issue_and_the_config() -> None:
    assert {s.value for s in Status} == {"booting", "ok", "testing", "degraded", "down",
                                         "fault_line", "fault_modem", "fault_probe",
                                         "broker_unreachable"}
    assert set(ALARM_STATUSES) == {s.value for s in Status} - {"booting", "ok", "testing"}
    assert set(LOOKS) == set(Status)
    # a person can tell every status apart on a single LED: timings all differ
    assert len({look.led for look in LOOKS.values()}) == len(Status)
    assert len({(look.colour, look.led) for look in LOOKS.values()}) == len(Status)


def test_pattern_level_walks_the_steps() -> None:
    code3 = blink_code(3)
    assert code3 == (0.25, 0.35, 0.25, 0.35, 0.25, 1.5)
    assert pattern_level(code3, 0.0) == (True, pytest.approx(0.25))
    assert pattern_level(code3, 0.3) == (False, pytest.approx(0.3))
    assert pattern_level(code3, 1.5) == (False, pytest.approx(1.45))
    assert pattern_level(code3, 2.95 + 0.1) == (True, pytest.approx(0.15))  # second cycle
    assert pattern_level((), 12.0) == (True, None)  # steady
    assert pattern_level((0.6, 0.4), 1.2, repeat=False) == (False, None)  # one-shot, done


@pytest.mark.parametrize(("quiet", "hhmm", "inside"), [
    (("22:00", "07:00"), "23:30", True), (("22:00", "07:00"), "06:59", True),
    (("22:00", "07:00"), "07:00", False), (("22:00", "07:00"), "21:59", False),
    (("12:00", "14:00"), "13:00", True), (("12:00", "14:00"), "14:00", False),
    (None, "03:00", False),
])
def test_quiet_hours_span_midnight(quiet, hhmm: str, inside: bool) -> None:  # type: ignore[no-untyped-def]
    h, m = map(int, hhmm.split(":"))
    assert in_quiet_hours(quiet, NOON.replace(hour=h, minute=m)) is inside


def test_seconds_until_quiet_end() -> None:
    assert seconds_until_quiet_end(("22:00", "07:00"), NOON.replace(hour=23)) == 8 * 3600
    assert seconds_until_quiet_end(("22:00", "07:00"), NOON.replace(hour=6, minute=30)) == 1800


def test_overall_status_priority() -> None:
    assert overall_status(None) == Status.BOOTING
    assert overall_status(Status.OK) == Status.OK
    assert overall_status(Status.OK, broker_ok=False) == Status.BROKER_UNREACHABLE
    assert overall_status(Status.DEGRADED, broker_ok=False) == Status.DEGRADED
    assert overall_status(Status.DOWN, broker_ok=False) == Status.DOWN
    assert overall_status(Status.DOWN, modem_fault=True) == Status.FAULT_MODEM
    assert overall_status(Status.OK, line_fault=True, modem_fault=True) == Status.FAULT_LINE
    assert overall_status(None, broker_ok=False) == Status.BOOTING  # still connecting


def test_a_fault_before_any_verdict_shows_the_fault_not_booting() -> None:
    assert overall_status(None, line_fault=True) == Status.FAULT_LINE
    assert overall_status(None, modem_fault=True) == Status.FAULT_MODEM
    assert overall_status(None, probe_fault=True) == Status.FAULT_PROBE


def unknown(*causes: str) -> dict[str, object]:
    """A target's verdict as the daemon's VerdictBook has it: the probe could not judge."""
    return {"verdict": "unknown", "causes": list(causes), "summary": "", "channels": {}}


@pytest.mark.parametrize(("causes", "live", "shown"), [
    (("line.no_voltage",), {}, Status.FAULT_LINE),  # no [line] board: the call found it
    (("line.no_voltage",), {"line_fault": True}, Status.FAULT_LINE),
    (("probe.board_fault",), {}, Status.FAULT_LINE),
    (("line.no_dial_tone",), {"line_fault": False}, Status.FAULT_LINE),  # volts are not tone
    (("modem.no_sim",), {"line_fault": False}, Status.FAULT_MODEM),
    (("modem.unresponsive", "line.no_voltage"), {}, Status.FAULT_LINE),
    (("network.sip_unreachable", "network.broker_unreachable"), {"broker_ok": False},
     Status.BROKER_UNREACHABLE),
    (("network.sip_unreachable", "network.broker_unreachable"), {}, Status.BROKER_UNREACHABLE),
    (("sip.not_registered",), {"broker_ok": True}, Status.FAULT_PROBE),
    (("probe.error",), {}, Status.FAULT_PROBE),
    # The fault has cleared since (a live reading says so): no verdict until the next call.
    (("line.no_voltage",), {"line_fault": False}, Status.BOOTING),
])
def test_an_unknown_verdict_shows_the_probe_fault_behind_it(
        causes: tuple[str, ...], live: dict[str, bool], shown: Status) -> None:
    assert indicator_status([unknown(*causes)], **live) == shown


def test_the_probe_side_causes_of_any_verdict_outrank_it() -> None:
    ok = {"verdict": "ok", "causes": []}
    gsm_blocked = {"verdict": "ok", "causes": ["modem.no_sim"]}  # SIP answered, GSM has no SIM
    down = {"verdict": "down", "causes": ["hotline.no_answer"]}
    assert indicator_status([ok]) == Status.OK
    assert indicator_status([ok, gsm_blocked]) == Status.FAULT_MODEM
    assert indicator_status([ok, down]) == Status.DOWN
    assert indicator_status([down, unknown("modem.no_sim")]) == Status.FAULT_MODEM
    assert indicator_status([ok, unknown("line.in_use")]) == Status.OK  # a person, no fault
    assert indicator_status([ok], broker_ok=False) == Status.BROKER_UNREACHABLE
    assert indicator_status([]) == Status.BOOTING
    assert indicator_status([], line_fault=True) == Status.FAULT_LINE


def test_alarm_policy_alone() -> None:
    p = AlarmPolicy(["down"], repeat_s=60, repeat_max=1, quiet_hours=None)
    assert p.status_changed(Status.DOWN, 0.0)
    assert p.poll(0.0, NOON) == "sound"
    assert p.poll(59.0, NOON) is None
    assert p.poll(60.0, NOON) == "sound" and p.repeats == 1
    assert p.due_at is None  # repeat_max reached
    assert not p.status_changed(Status.TESTING, 70.0)  # transient
    assert not p.status_changed(Status.DOWN, 71.0)  # same state


# --------------------------------------------------------------------------- LED patterns


@pytest.mark.parametrize("status", list(Status))
def test_rgb_led_pattern_on_the_pins(rig: Rig, status: Status) -> None:
    look = LOOKS[status]
    rig.ind.show(status)
    cycle = sum(look.led)
    rig.run(2 * cycle)
    for gpio, lit in zip((RED, GREEN, BLUE), look.rgb, strict=True):
        pin = rig.pin(gpio)
        if not lit:
            assert [s.state for s in pin.states] == [False], f"GPIO{gpio} must stay dark"
            continue
        # [initial off] then on, and each step of the pattern, twice over
        expected = [(0.0, False), (0.0, True)]
        for i, step in enumerate(look.led * 2):
            expected.append((step, i % 2 == 1))
        pin.assert_states_and_times(expected[:len(pin.states)])
        assert len(pin.states) >= len(look.led) * 2  # it really blinked both cycles


@pytest.mark.parametrize(("status", "flashes"), [
    (Status.BROKER_UNREACHABLE, 1), (Status.DEGRADED, 2), (Status.DOWN, 3),
    (Status.FAULT_LINE, 4), (Status.FAULT_MODEM, 5)])
def test_single_led_blink_codes(status: Status, flashes: int) -> None:
    r = Rig(IndicatorConfig(led="single", buzzer_pin=None, button_pin=None))
    try:
        r.ind.show(status)
        cycle = sum(LOOKS[status].led)
        r.run(cycle - 0.01)  # one whole group, short of the next one
        assert r.ons(GREEN) == flashes
        durations = [s.timestamp for s in r.pin(GREEN).states[2:]]
        assert durations[-1] == pytest.approx(0.25)  # flashes are 0.25 s ...
        assert max(durations) == pytest.approx(0.35 if flashes > 1 else 0.25)
    finally:
        r.ind.close()


def test_ok_is_steady_with_a_heartbeat(rig: Rig) -> None:
    rig.ind.show("ok")
    rig.run(9.0)
    rig.pin(GREEN).assert_states_and_times(
        [(0.0, False), (0.0, True), (2.9, False), (0.1, True), (2.9, False), (0.1, True),
         (2.9, False), (0.1, True)])


def test_repeating_the_same_status_does_not_restart_the_pattern(rig: Rig) -> None:
    rig.ind.show(Status.DOWN)
    rig.run(0.1)
    rig.ind.show(Status.DOWN)  # every result re-asserts the verdict
    rig.run(0.2)
    rig.pin(RED).assert_states_and_times([(0.0, False), (0.0, True), (0.25, False)])


# --------------------------------------------------------------------------- buzzer policy


def test_alarm_on_the_transition_into_down_only(rig: Rig) -> None:
    for status in (Status.BOOTING, Status.OK, Status.TESTING, Status.DEGRADED):
        rig.ind.show(status)
        rig.run(5.0)
    assert rig.ons(BUZZER) == 0
    rig.clear()
    t0 = rig.clock()
    rig.ind.show(Status.DOWN)
    rig.run(10.0)
    rig.pin(BUZZER).assert_states_and_times(
        [(0.0, False), (0.0, True), (0.6, False), (0.4, True), (0.6, False), (0.4, True),
         (0.6, False)])
    assert rig.clock() - t0 == pytest.approx(10.0)
    assert any("alarm: 3 long beeps for down" in e for e in rig.events)


def test_probe_faults_have_their_own_beeps(rig: Rig) -> None:
    rig.ind.show(Status.FAULT_LINE)
    rig.run(5.0)
    assert rig.ons(BUZZER) == 4
    rig.clear()
    rig.ind.show(Status.FAULT_MODEM)
    rig.run(5.0)
    assert rig.ons(BUZZER) == 5
    assert all(s.timestamp == pytest.approx(0.15) for s in rig.pin(BUZZER).states[2::2])


def test_repeat_policy_every_repeat_s_at_most_repeat_max_times() -> None:
    r = Rig(IndicatorConfig(alarm_repeat_s=600, alarm_repeat_max=2))
    try:
        r.ind.show(Status.DOWN)
        r.run(3600.0)
        assert r.ons(BUZZER) == 3 * 3  # the alarm + 2 repeats, 3 beeps each
        starts, t = [], 0.0
        for s in r.pin(BUZZER).states[1:]:
            t += s.timestamp
            if s.state and (not starts or t - starts[-1] > 5):
                starts.append(t)
        assert starts == pytest.approx([0.0, 600.0, 1200.0])
        assert any("(repeat 2)" in e for e in r.events)
    finally:
        r.ind.close()


def test_repeat_max_zero_means_no_limit_and_repeat_zero_once() -> None:
    r = Rig(IndicatorConfig(alarm_repeat_s=100, alarm_repeat_max=0))
    once = Rig(IndicatorConfig(alarm_repeat_s=0))
    try:
        for x in (r, once):
            x.ind.show(Status.DOWN)
            x.run(1050.0)
        assert r.ons(BUZZER) == 11 * 3
        assert once.ons(BUZZER) == 3
    finally:
        r.ind.close()
        once.ind.close()


def test_silence_button_stops_the_beeps_and_mutes_until_the_next_change(rig: Rig) -> None:
    rig.ind.show(Status.DOWN)
    rig.run(0.7)  # first beep done, second about to start
    rig.press()  # gpiozero Button -> when_pressed -> silence()
    rig.run(0.0)
    assert rig.pin(BUZZER).state is False
    rig.run(4 * 3600.0)  # no repeats while silenced
    assert rig.ons(BUZZER) == 1
    assert rig.ind.snapshot()["silenced"] is True
    assert any("silenced by the button" in e for e in rig.events)

    rig.ind.show(Status.TESTING)  # a test call: transient, stays silenced
    rig.run(30.0)
    rig.ind.show(Status.DOWN)
    rig.run(30.0)
    assert rig.ons(BUZZER) == 1

    rig.ind.show(Status.FAULT_LINE)  # a change of state: alarms again
    rig.run(5.0)
    assert rig.ons(BUZZER) == 1 + 4
    assert rig.ind.snapshot()["silenced"] is False


def test_down_ok_down_alarms_twice_but_down_testing_down_once(rig: Rig) -> None:
    for status in (Status.DOWN, Status.TESTING, Status.DOWN, Status.OK, Status.DOWN):
        rig.ind.show(status)
        rig.run(20.0)
    assert rig.ons(BUZZER) == 2 * 3


def test_a_new_status_cuts_the_old_alarms_beeps(rig: Rig) -> None:
    rig.ind.show(Status.DOWN)
    rig.run(0.3)
    rig.ind.show(Status.OK)
    rig.run(0.0)
    assert rig.pin(BUZZER).state is False
    rig.run(5.0)
    assert rig.ons(BUZZER) == 1


def test_quiet_hours_defer_the_alarm_to_their_end() -> None:
    cfg = IndicatorConfig(quiet_hours=("22:00", "07:00"), alarm_repeat_s=0)
    r = Rig(cfg, start=NOON.replace(hour=23, minute=0))
    try:
        r.ind.show(Status.DOWN)
        r.run(7 * 3600.0 + 3599.0)  # until 06:59:59
        assert r.ons(BUZZER) == 0
        assert r.pin(RED).state in (True, False) and r.ons(RED) > 1000  # LED still shows it
        assert any("deferred: quiet hours until 07:00" in e for e in r.events)
        r.run(10.0)  # 07:00
        assert r.ons(BUZZER) == 3
    finally:
        r.ind.close()


def test_quiet_hours_deferred_alarm_is_dropped_if_silenced_or_resolved() -> None:
    cfg = IndicatorConfig(led="none", quiet_hours=("22:00", "07:00"))
    silenced = Rig(cfg, start=NOON.replace(hour=23))
    resolved = Rig(cfg, start=NOON.replace(hour=23))
    try:
        for r in (silenced, resolved):
            r.ind.show(Status.DOWN)
            r.run(3600.0)
        silenced.press()
        resolved.ind.show(Status.OK)
        for r in (silenced, resolved):
            r.run(10 * 3600.0)
            assert r.ons(BUZZER) == 0
    finally:
        silenced.ind.close()
        resolved.ind.close()


def test_alarm_on_can_include_degraded_and_exclude_faults() -> None:
    r = Rig(IndicatorConfig(alarm_on=("degraded",)))
    try:
        r.ind.show(Status.FAULT_LINE)
        r.run(5.0)
        r.ind.show(Status.DEGRADED)
        r.run(5.0)
        assert r.ons(BUZZER) == 2
    finally:
        r.ind.close()


# --------------------------------------------------------------------------- lifecycle


def test_close_turns_everything_off_and_releases_the_pins(rig: Rig) -> None:
    rig.ind.show(Status.DOWN)
    rig.run(0.1)
    assert rig.pin(RED).state is True and rig.pin(BUZZER).state is True
    rig.ind.close()
    assert rig.pin(RED).state is False and rig.pin(BUZZER).state is False
    again = Indicator(IndicatorConfig(), pin_factory=rig.factory, clock=rig.clock)
    again.close()  # the pins were free again


def test_the_thread_drives_the_led_in_real_time() -> None:
    # The only real-time test: booting flickers at 0.1 s / 0.1 s for 0.35 s.
    factory = ClockedMockFactory(time.monotonic)
    ind = Indicator(IndicatorConfig(), pin_factory=factory)
    ind.show(Status.BOOTING)
    ind.start()
    time.sleep(0.35)
    ind.close()
    toggles = len(factory.pin(RED).states) - 1
    assert 3 <= toggles <= 6
    assert factory.pin(RED).state is False


def test_logging_indicator_where_there_is_no_board(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="probe.board.indicator")
    clock = SimClock(0.0)
    ind = open_indicator(None, clock=clock, wall=lambda: NOON)
    assert isinstance(ind, LoggingIndicator)
    assert ind.led is None and ind.buzzer is None and ind.button is None
    ind.show(Status.DOWN)
    ind.tick()
    ind.show(Status.BROKER_UNREACHABLE)
    ind.tick()
    text = caplog.text
    assert "status down: the hotline is down (LED red, 3 flashes, pause)" in text
    assert "alarm: 3 long beeps for down" in text
    assert "status broker_unreachable" in text
    assert "alarm: 1 short beep" not in text  # not in the default alarm_on
    ind.close()


# --------------------------------------------------------------------------- the board at fault


def test_a_pin_taken_puts_the_indicator_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    from gpiozero import LED

    caplog.set_level(logging.INFO, logger="probe.board.indicator")
    clock = SimClock(0.0)
    factory = ClockedMockFactory(clock)
    squatter = LED(BLUE, pin_factory=factory)  # e.g. a gpio-leds overlay holding GPIO24
    board = open_board(IndicatorConfig(alarm_on=("down",)), None, pin_factory=factory,
                       clock=clock)
    assert isinstance(board.indicator, LoggingIndicator)
    assert board.faults["indicator"].startswith("a pin is taken: pin GPIO24 is already in use")
    assert board.reason() == f"indicator: {board.faults['indicator']}"
    board.indicator.show(Status.DOWN)
    board.indicator.tick()
    assert "alarm: 3 long beeps for down" in caplog.text  # the configured policy, in the log
    squatter.close()
    Indicator(IndicatorConfig(), pin_factory=factory, clock=clock).close()  # red, green freed


def _pin_library_installed() -> bool:
    model = Path("/proc/device-tree/model")
    on_a_pi = model.exists() and b"Raspberry Pi" in model.read_bytes()
    return on_a_pi or any(importlib.util.find_spec(m) for m in ("lgpio", "RPi", "pigpio"))


@pytest.mark.skipif(_pin_library_installed(), reason="this machine has a pin library")
def test_without_a_pin_library_the_indicator_is_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpiozero import Device

    monkeypatch.setattr(Device, "pin_factory", None)  # gpiozero looks for one, as on boot
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    board = open_board(IndicatorConfig(), None)
    assert isinstance(board.indicator, LoggingIndicator)
    assert board.faults["indicator"].startswith(
        "no pin library: gpiozero could load none (lgpio: No module named 'lgpio'; ")
    assert board.faults["indicator"].endswith("install lgpio")
    assert board.line is None and board.line_fault() is None  # no [line]: nothing to read
