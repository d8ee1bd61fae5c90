"""probe.board.line: line voltage -> state, through gpiozero's real MCP3008 driver on a mock SPI
bus.

Two levels:

* the classifier over simulated waveforms (noise, hum, slow drift, ring cadences, pulse
  dialling) with no hardware at all (``classify_samples``);
* the whole chain - LineSimulator -> front end -> EmulatedMCP3008 on gpiozero's mock SPI ->
  gpiozero ``MCP3008`` -> LineMonitor - on an injected clock, so seconds of line time cost
  milliseconds and nothing sleeps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from gpiozero import MCP3008

from probe import cli
from probe.board.line import (
    NOMINAL_VOLTS_PER_COUNT,
    Calibration,
    LineInUseError,
    LineMonitor,
    LineState,
    calibrate,
    classify_samples,
    window_stats,
)
from probe.board.pins import open_board
from probe.config.model import LineConfig
from probe.errors import ProbeError
from probe.sim.line import (
    Frontend,
    LineSimulator,
    SimBoard,
    SimClock,
    cut,
    idle,
    low_voltage,
    off_hook,
    reversed_polarity,
    ringing,
)

CFG = LineConfig()
RATE = CFG.sample_rate_hz
S = LineState


def states(changes: list[tuple[float, LineState]]) -> list[LineState]:
    return [s for _, s in changes]


def run(sim: LineSimulator, seconds: float, cfg: LineConfig = CFG
        ) -> list[tuple[float, LineState]]:
    return classify_samples(sim.waveform(0.0, seconds, RATE), RATE, cfg)


def noisy(start=None, **kw) -> LineSimulator:  # type: ignore[no-untyped-def]
    """A realistic line: 1 V RMS white noise and 3 V RMS of 50 Hz hum."""
    return LineSimulator(start, seed=kw.pop("seed", 7), noise_v=kw.pop("noise_v", 1.0),
                         hum_vrms=kw.pop("hum_vrms", 3.0), **kw)


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("hz", [16.67, 20.0, 25.0, 50.0])
def test_window_measures_ringing_amplitude_and_frequency(hz: float) -> None:
    n = 40
    volts = [48 + 90 * math.sqrt(2) * math.sin(2 * math.pi * hz * i / RATE + 0.3)
             for i in range(n)]
    w = window_stats(volts, 0.0, n / RATE)
    assert w.dc_v == pytest.approx(48, abs=12)  # a window is not a whole number of cycles
    assert w.ac_vrms == pytest.approx(90, rel=0.12)
    assert w.ring_hz == pytest.approx(hz, rel=0.08)


def test_window_of_noise_has_no_ring_frequency_in_range() -> None:
    sim = noisy(idle(48.0), seed=3)
    for k in range(50):
        volts = sim.waveform(k * 0.2, 0.2, RATE)
        w = window_stats(volts, 0, 0.2)
        assert w.ac_vrms < 5
        assert abs(w.dc_v - 48) < 2


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (idle(48.0), S.IDLE),
        (idle(42.0), S.IDLE),
        (idle(58.0), S.IDLE),
        (reversed_polarity(48.0), S.REVERSED),
        (off_hook(8.0), S.OFF_HOOK),
        (off_hook(5.0), S.OFF_HOOK),
        (off_hook(12.0), S.OFF_HOOK),
        (off_hook(-8.0), S.OFF_HOOK),  # off-hook after an answer polarity reversal
        (low_voltage(24.0), S.LOW_VOLTAGE),
        (cut(), S.NO_VOLTAGE),
        (ringing(90.0), S.RINGING),
    ],
    ids=lambda v: f"{v.kind}-{v.dc_v:g}" if hasattr(v, "kind") else str(v),
)
def test_each_condition_is_classified_under_noise_and_hum(condition, expected) -> None:  # type: ignore[no-untyped-def]
    changes = run(noisy(condition), 5.0)
    assert states(changes) == [expected]


def test_pick_up_is_seen_within_settle_time_and_hang_up_too() -> None:
    sim = noisy()
    sim.set(3.0, off_hook(8.0))
    sim.set(10.0, idle())
    changes = run(sim, 15.0)
    assert states(changes) == [S.IDLE, S.OFF_HOOK, S.IDLE]
    assert 3.0 <= changes[1][0] <= 3.0 + CFG.window_s  # reported from the window it began in
    assert 10.0 <= changes[2][0] <= 10.0 + CFG.window_s


def test_ring_cadence_is_one_ringing_state_not_a_flicker() -> None:
    sim = noisy()
    sim.set(2.0, ringing(90.0, 25.0, cadence=(1.0, 4.0)))  # three bursts: 2, 7, 12 s
    sim.set(15.0, idle())
    changes = run(sim, 25.0)
    assert states(changes) == [S.IDLE, S.RINGING, S.IDLE]
    assert changes[1][0] == pytest.approx(2.0, abs=CFG.window_s)
    # back to idle only ring_hold_s after the last burst ended (13 s)
    assert changes[2][0] == pytest.approx(13.0 + CFG.ring_hold_s, abs=0.5)


@pytest.mark.parametrize(("vrms", "hz", "cadence"), [
    (40.0, 25.0, (1.0, 4.0)),  # weak ringing at the end of a long loop
    (75.0, 20.0, (2.0, 4.0)),  # North America
    (60.0, 16.67, (1.5, 3.5)),
    (90.0, 50.0, (0.4, 0.2)),
])
def test_ringing_variants_are_detected(vrms: float, hz: float, cadence) -> None:  # type: ignore[no-untyped-def]
    sim = noisy()
    sim.set(1.0, ringing(vrms, hz, cadence))
    assert states(run(sim, 6.0)) == [S.IDLE, S.RINGING]


def test_answering_during_the_ring_gap_goes_off_hook_at_once() -> None:
    sim = noisy()
    sim.set(1.0, ringing())
    sim.set(3.0, off_hook(9.0))  # picked up in the silent part of the cadence
    changes = run(sim, 6.0)
    assert states(changes) == [S.IDLE, S.RINGING, S.OFF_HOOK]
    assert changes[2][0] == pytest.approx(3.0, abs=CFG.window_s)


def test_pulse_dialling_is_neither_ringing_nor_low_voltage() -> None:
    # Off-hook at 8 V, then the digits 0, 5, 9 dialled at 10 pulses/s (60 ms break,
    # 40 ms make): the line jumps to 48 V during breaks - square waves at 10 Hz.
    volts: list[float] = [8.0] * RATE  # one second off-hook
    for digit in (10, 5, 9):
        for _ in range(digit):
            volts += [48.0] * 12 + [8.0] * 8
        volts += [8.0] * (RATE // 2)  # inter-digit pause
    volts += [8.0] * RATE
    sim = noisy()
    noise = sim.waveform(0.0, len(volts) / RATE, RATE)  # noise + hum around 48 V
    samples = [v + (n - 48.0) for v, n in zip(volts, noise, strict=True)]
    assert states(classify_samples(samples, RATE, CFG)) == [S.OFF_HOOK]


def test_a_cut_is_reported_only_after_fault_settle() -> None:
    sim = noisy()
    sim.set(2.0, cut())
    changes = run(sim, 6.0)
    assert states(changes) == [S.IDLE, S.NO_VOLTAGE]
    # reported from when it began, but decided only fault_settle_s later: a 1 s loop break
    # (a hook flash, an extension plugged in) never shows as a cut
    brief = noisy()
    brief.set(2.0, cut())
    brief.set(3.0, idle())
    assert states(run(brief, 6.0)) == [S.IDLE]


def test_slow_battery_drift_stays_idle() -> None:
    # 52 V sagging to 42 V over 10 minutes, noise and hum on top.
    sim = noisy(idle(52.0), battery_v=52.0, drift_v_per_h=-60.0)
    sim.clean_volts_at(0.0)  # drift origin
    assert states(run(sim, 600.0)) == [S.IDLE]


def test_hysteresis_stops_chatter_when_the_level_drifts_across_a_threshold() -> None:
    # An idle line sagging slowly from 39 V to 32 V through the 36 V idle threshold.
    def sim() -> LineSimulator:
        s = noisy(idle(39.0), battery_v=39.0, drift_v_per_h=-42.0, noise_v=2.0, seed=11)
        s.clean_volts_at(0.0)
        return s

    with_h = run(sim(), 600.0)
    assert states(with_h) == [S.IDLE, S.LOW_VOLTAGE]
    # it left idle only once the level was below threshold - hysteresis (34.5 V)
    t = with_h[1][0]
    assert 39.0 - 42.0 * t / 3600 < CFG.idle_above_v - CFG.hysteresis_v + 0.5

    bare = replace(CFG, hysteresis_v=0.0, settle_s=CFG.window_s, fault_settle_s=CFG.window_s)
    assert len(run(sim(), 600.0, bare)) > 4  # without it, the state chatters


# --------------------------------------------------------------------------- the emulated chip


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def board(clock: SimClock) -> Iterator[SimBoard]:
    b = SimBoard(LineSimulator(noise_v=0.0), clock)
    yield b
    b.close()


@pytest.mark.parametrize(("volts", "code"), [
    (0.0, 512), (48.0, 611), (8.0, 528), (-48.0, 412), (175.0, 873), (-79.0, 348),
    (300.0, 1023), (-300.0, 0),
])
def test_gpiozero_mcp3008_reads_the_designed_codes(board: SimBoard, clock: SimClock,
                                                   volts: float, code: int) -> None:
    board.line.set(clock(), idle(volts))
    adc = MCP3008(0, pin_factory=board.factory)
    try:
        assert adc.raw_value == code  # gpiozero's own driver, bit by bit over mock SPI
        assert adc.value == pytest.approx((2 * code + 1) / 2047)  # gpiozero: -1024..1023
    finally:
        adc.close()
    assert board.adc.conversions == 2  # one conversion per read, nothing cached


def test_reference_channel_and_differential_mode(board: SimBoard) -> None:
    ref = MCP3008(1, pin_factory=board.factory)
    diff = MCP3008(0, differential=True, pin_factory=board.factory)  # CH0 - CH1
    try:
        assert ref.raw_value == 512
        board.line.set(-math.inf, idle(48.0))
        assert diff.raw_value == math.floor(1024 * 48.0 * Frontend().gain / 3.0)
    finally:
        ref.close()
        diff.close()


def test_unpowered_line_side_reads_all_ones(board: SimBoard) -> None:
    board.adc.powered = False
    reader = board.reader()
    try:
        assert (reader.read_line(), reader.read_reference()) == (1023, 1023)
    finally:
        reader.close()


def test_two_point_calibration_removes_a_real_boards_error(clock: SimClock) -> None:
    sim = LineSimulator(cut(), noise_v=0.6, seed=5)
    b = SimBoard(sim, clock, frontend=Frontend(gain_error=0.018, offset_v=0.004))
    reader = b.reader()
    try:
        def codes(n: int = 300) -> list[int]:
            out = []
            for _ in range(n):
                clock.advance(0.005)
                out.append(reader.read_line())
            return out

        short = codes()
        sim.set(clock(), idle(48.0))
        ref = codes()
        cal = calibrate(short, ref, 48.0)
        sim.set(clock(), idle(30.0))
        at30 = codes()
    finally:
        reader.close()
        b.close()
    mean = sum(at30) / len(at30)
    assert cal.volts(mean) == pytest.approx(30.0, abs=0.3)
    assert abs(Calibration().volts(mean) - 30.0) > 0.7  # the nominal one is off by > 2 %
    with pytest.raises(ValueError, match="too close"):
        calibrate(short, short, 48.0)


# --------------------------------------------------------------------------- the monitor


@pytest.fixture
def monitor(board: SimBoard, clock: SimClock) -> Iterator[LineMonitor]:
    board.line.noise_v = 0.8
    m = LineMonitor(CFG, board.reader(), clock=clock, sleep=clock.sleep)
    yield m
    m.close()


def test_monitor_follows_a_day_on_the_line(monitor: LineMonitor, board: SimBoard,
                                           clock: SimClock) -> None:
    seen: list[tuple[LineState, LineState]] = []
    monitor.on_change = lambda old, new: seen.append((old, new))
    t0 = clock()
    line = board.line
    line.set(t0 + 2, off_hook(8.0))  # someone calls out
    line.set(t0 + 5, idle())
    line.set(t0 + 7, ringing())  # a call comes in, nobody answers
    line.set(t0 + 12, idle())
    line.set(t0 + 20, cut())  # the cable is pulled
    monitor.run_for(24.0)

    assert [new for _, new in seen] == [S.IDLE, S.OFF_HOOK, S.IDLE, S.RINGING, S.IDLE,
                                        S.NO_VOLTAGE]
    assert monitor.samples == pytest.approx(24.0 * RATE, abs=2)
    snap = monitor.snapshot()
    assert snap["state"] == "no_voltage" and snap["fault"] is True
    assert snap["in_use"] is False and snap["interface_ok"] is True
    assert snap["idle_volts"] == pytest.approx(48.0, abs=0.5)
    assert snap["reference_code"] == 512
    json.dumps(snap)  # JSON-ready


def test_snapshot_while_ringing_reports_the_burst(monitor: LineMonitor, board: SimBoard,
                                                  clock: SimClock) -> None:
    board.line.set(clock() + 1, ringing(85.0, 25.0))
    monitor.run_for(3.5)  # inside the 4 s gap after the first burst
    snap = monitor.snapshot()
    assert snap["state"] == "ringing" and snap["in_use"] is True
    assert snap["ring_vrms"] == pytest.approx(85.0, rel=0.05)
    assert snap["ring_hz"] == pytest.approx(25.0, rel=0.05)
    assert snap["dc_volts"] == pytest.approx(48.0, abs=1.0)
    assert monitor.line_in_use()


def test_dead_board_is_an_interface_fault_not_a_line_voltage(monitor: LineMonitor,
                                                             board: SimBoard) -> None:
    monitor.run_for(1.0)
    board.adc.powered = False  # isolated supply fails: reads are all ones (+247 V!)
    monitor.run_for(3.0)
    snap = monitor.snapshot()
    assert snap["state"] == "interface_fault"
    assert snap["interface_ok"] is False and snap["fault"] is True
    assert snap["dc_volts"] is None and snap["reference_code"] == 1023


def test_a_stopped_monitor_says_unknown(monitor: LineMonitor, clock: SimClock) -> None:
    monitor.run_for(1.0)
    assert monitor.state == S.IDLE
    clock.advance(5.0)  # nobody sampled for 5 s
    assert monitor.state == S.UNKNOWN
    assert monitor.snapshot()["stale"] is True


def test_seizure_measures_drop_loop_closure_dial_tone_and_reversal(
        monitor: LineMonitor, board: SimBoard, clock: SimClock) -> None:
    monitor.run_for(3.0)
    with monitor.seize() as seizure:
        t0 = clock()
        board.line.set(t0 + 0.120, off_hook(9.0))  # modem's relay closes 120 ms later
        monitor.run_for(0.6)
        assert monitor.snapshot()["seized_by_probe"] is True
        assert not monitor.line_in_use()  # it is the probe, not a person
        seizure.dial_tone(t0 + 0.120 + 0.350)
        board.line.set(clock() + 1.0, off_hook(-9.0))  # the far end answers: reversal
        monitor.run_for(2.0)
    facts = seizure.facts()
    assert facts["idle_volts"] == pytest.approx(48.0, abs=0.5)
    assert facts["off_hook_volts"] == pytest.approx(9.0, abs=0.5)
    assert facts["drop_volts"] == pytest.approx(39.0, abs=1.0)
    assert facts["loop_closure_ms"] == pytest.approx(120, abs=10)
    assert facts["time_to_dial_tone_ms"] == pytest.approx(350, abs=10)
    assert facts["polarity_reversals_ms"] == [pytest.approx(1600, abs=15)]
    json.dumps(facts)
    # hanging up: the line settles back without ever counting as "in use"
    board.line.set(clock(), idle())
    in_use = []
    for _ in range(10):
        monitor.run_for(0.1)
        in_use.append(monitor.line_in_use())
    assert not any(in_use) and monitor.state == S.IDLE


def test_seize_refuses_while_a_person_is_on_the_line_or_it_rings(
        monitor: LineMonitor, board: SimBoard, clock: SimClock) -> None:
    board.line.set(clock(), off_hook(7.0))
    monitor.run_for(1.0)
    assert monitor.line_in_use()
    with pytest.raises(LineInUseError) as info, monitor.seize():
        pass
    assert isinstance(info.value, ProbeError) and isinstance(info.value, RuntimeError)
    assert info.value.state == S.OFF_HOOK and "deferred" in str(info.value)

    board.line.set(clock(), ringing())
    monitor.run_for(1.0)
    with pytest.raises(LineInUseError), monitor.seize():
        pass
    board.line.set(clock(), idle())
    monitor.run_for(CFG.ring_hold_s + 1.0)
    with monitor.seize(), pytest.raises(ProbeError, match="already seized"), monitor.seize():
        pass


def test_monitor_thread_samples_in_real_time(board: SimBoard) -> None:
    # The only real-time test: the sampling thread at 200/s for 0.3 s, then a clean stop.
    board.line.clock = time.monotonic  # type: ignore[attr-defined]
    board.clock = time.monotonic
    m = LineMonitor(CFG, board.reader())
    m.start()
    time.sleep(0.3)
    m.stop()
    assert 40 <= m.samples <= 70
    assert m.overruns == 0
    assert m.state in (S.IDLE, S.UNKNOWN)  # first windows may not have settled
    m.close()


# --------------------------------------------------------------------------- probe line


def config_file(tmp_path, line: str = "[line]\n") -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "probe.toml"
    path.write_text('[probe]\nid = "b1"\nsite = "Lyon"\n\n[sip]\n\n[[targets]]\nname = "t"\n'
                    f'sip_uri = "sip:100@pbx.example.com"\nchannels = ["sip"]\n\n{line}')
    return str(path)


@pytest.mark.parametrize(("scenario", "state", "code"), [
    ("idle", "idle", 0), ("off-hook", "off_hook", 0), ("ringing", "ringing", 0),
    ("reversed", "reversed", 0), ("cut", "no_voltage", 1), ("low", "low_voltage", 1),
    ("dead-board", "interface_fault", 1),
])
def test_probe_line_json_on_the_simulated_board(tmp_path, capsys, scenario: str, state: str,  # type: ignore[no-untyped-def]
                                                code: int) -> None:
    rc = cli.main(["line", "-c", config_file(tmp_path), "--json", "--sim", scenario])
    out = json.loads(capsys.readouterr().out)
    assert (rc, out["state"]) == (code, state)
    assert out["fault"] is (code == 1)


def test_probe_line_human_output_and_config_errors(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["line", "-c", config_file(tmp_path), "--sim", "idle"]) == 0
    text = capsys.readouterr().out
    assert "idle" in text and "48" in text
    assert cli.main(["line", "-c", config_file(tmp_path, "")]) == 2
    assert "no [line] section" in capsys.readouterr().err
    bad = config_file(tmp_path, "[line]\nidle_above_v = 10\n")
    assert cli.main(["line", "-c", bad]) == 2
    assert "line.idle_above_v" in capsys.readouterr().err


def test_probe_line_raw_prints_codes_for_calibration(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = cli.main(["line", "-c", config_file(tmp_path), "--sim", "idle", "--raw", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["line_code_mean"] == pytest.approx(611, abs=1.5)
    assert out["reference_code_mean"] == pytest.approx(512, abs=0.5)
    assert out["volts_nominal"] == pytest.approx(48.0, abs=1.0)


def test_nominal_volts_per_count() -> None:
    assert abs(NOMINAL_VOLTS_PER_COUNT - 0.48408) < 1e-5


# --------------------------------------------------------------------------- the board at fault


def test_a_wrong_reference_channel_is_a_board_fault_and_results_carry_no_line(
        board: SimBoard, clock: SimClock) -> None:
    # A faulty board: the MCP3008 answers, but what should be the 1.5 V reference is 0 V.
    opened = open_board(None, replace(CFG, reference_channel=2), pin_factory=board.factory,
                        clock=clock, sleep=clock.sleep)
    assert opened.line is not None and opened.faults == {}  # it opens: the fault is in reading
    try:
        opened.line.run_for(3.0)
        assert opened.line_fault() == ("the reference channel reads 0 instead of 512: the line "
                                       "side of the board is unpowered, absent or faulty")
        assert opened.result_line() is None  # a reading through a broken board is no reading
        assert opened.reason() == f"line: {opened.line_fault()}"
    finally:
        opened.line.close()


def test_a_sound_board_has_no_fault_and_results_carry_the_line(board: SimBoard,
                                                               clock: SimClock) -> None:
    opened = open_board(None, CFG, pin_factory=board.factory, clock=clock, sleep=clock.sleep)
    assert opened.line is not None
    try:
        opened.line.run_for(3.0)
        assert opened.line_fault() is None and opened.reason() is None
        doc = opened.result_line()
        assert doc is not None and doc["state"] == "idle"
    finally:
        opened.line.close()


def test_an_spi_pin_taken_leaves_the_line_unread_and_says_which(board: SimBoard) -> None:
    from gpiozero import DigitalOutputDevice

    squatter = DigitalOutputDevice(8, pin_factory=board.factory)  # CE0, held by someone else
    try:
        opened = open_board(None, CFG, pin_factory=board.factory)
    finally:
        squatter.close()
    assert opened.line is None
    assert opened.faults["line"].startswith("a pin is taken: pin GPIO8 is already in use")
    assert opened.line_fault() == opened.faults["line"] and opened.result_line() is None


def test_the_board_logs_its_pin_factory_and_spi(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    monkeypatch.setattr(Device, "pin_factory", MockFactory())  # GPIOZERO_PIN_FACTORY=mock
    caplog.set_level(logging.INFO, logger="probe.board.pins")
    opened = open_board(None, CFG)
    assert opened.line is not None
    opened.line.close()
    [record] = [r for r in caplog.records if r.getMessage().startswith("board: pin factory")]
    assert record.getMessage() == (
        "board: pin factory MockFactory, MCP3008 on software SPI (MockSPIInterfaceShared): "
        "install spidev or lgpio for the hardware SPI")
    assert record.levelno == logging.WARNING  # bit-banged at 200 Hz: worth fixing
