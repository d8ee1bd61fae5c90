"""PSTN test calls through every modem profile and every scenario, over a real pty.

Each case runs the real dialer (probe.dial.modem) against the emulator (probe.sim.modem):
alerting and answer must land within 20 ms of the emulator's script, the outcome must be the
scenario's, the result must validate against the schema, and the modem must end idle.
"""

from __future__ import annotations

import gc
import json
import tempfile
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from gpiozero.pins.mock import MockConnectedPin, MockFactory

from probe.config.model import Expectations, ModemConfig, ProbeIdentity
from probe.config.secrets import Secret
from probe.dial.modem import ModemDialer
from probe.results.document import build_result, result_schema, validate_result
from probe.results.measure import classify
from probe.results.timeline import CallRecord, Ev
from probe.sim.modem import SCENARIOS, ModemEmulator, Scenario, scenario

FAMILIES = ["generic", "sim7600", "a76xx", "sim800", "quectel", "huawei", "v253"]
EXPECTED = {
    "answered": "answered", "busy": "busy", "no_answer": "no_answer",
    "congestion": "congestion", "unassigned": "unassigned_number",
    "not_registered": "not_registered", "weak_signal": "answered", "dropped": "answered",
    "unresponsive": "modem_error", "garbage": "answered", "unplugged": "modem_error",
    "slow_boot": "answered", "registers_late": "answered", "sim_pin": "answered",
}
# An analog modem hears reorder as busy; a dead line is "no dial tone".
ANALOG = {**EXPECTED, "congestion": "busy", "not_registered": "no_dial_tone"}
# The matrix runs every scenario with short scripted delays: what is tested is that the
# probe's stamps land on the script, not how long the script is (one timing case keeps the
# emulator's own, longer, delays: test_timing_with_the_emulators_default_script).


def fast(sc: Scenario) -> Scenario:
    changes: dict[str, int] = {"pdd_ms": 150}
    for key, value in (("ring_ms", 200), ("talk_ms", 350), ("unplug_after_ms", 300),
                       ("register_after_ms", 300)):
        if getattr(sc, key) is not None:
            changes[key] = value
    if sc.boot_ms:
        changes["boot_ms"] = 400
    return replace(sc, **changes)


FAST = {name: fast(SCENARIOS[name]) for name in EXPECTED}
MATRIX_WORKERS = 4  # calls in flight at once (each sleeps on its script most of the time)
PIN = SCENARIOS["sim_pin"].sim_pin  # the emulated SIM's PIN
TOLERANCE_MS = 20.0
POLL_S = 0.025  # generic 27.007: AT+CLCC polling period in tests (error <= POLL_S / 2)
EXPECT = Expectations(max_post_dial_delay_ms=1000, max_ring_s=0.4, hold_s=0.45,
                      require_media=True)
PROBE = ProbeIdentity("test-probe", "Lab")
VALIDATOR = jsonschema.Draft202012Validator(result_schema())


def dialer_for(modem: ModemEmulator, **config: Any) -> ModemDialer:
    kind = "analog" if modem.family == "v253" else "gsm"
    pin_factory = config.pop("pin_factory", None)
    if kind == "gsm":
        config.setdefault("sim_pin", Secret(PIN))
        config.setdefault("register_wait_s", 3.0)
    cfg = ModemConfig(kind=kind, port=modem.url, ringback_silence_s=0.3,
                      audio_port=modem.audio_url if kind == "gsm" else None, **config)
    return ModemDialer(cfg, poll_s=POLL_S, reopen_wait_s=0.5, sync_timeout_s=0.15,
                       sim_wait_s=3.0, pin_factory=pin_factory)


def place(dialer: ModemDialer, tmp_path: Path, **kw: Any) -> CallRecord:
    return dialer.call("+33472000390", kw.pop("expect", EXPECT), target="support",
                       audio_path=tmp_path / "call.wav", **kw)


@dataclass
class Lived:
    """One matrix call, as the probe recorded it and as the emulator saw it."""

    record: CallRecord
    marks: dict[str, int]
    idle: bool
    dtmf: str


def live(family: str, sc: Scenario, directory: Path, expect: Expectations = EXPECT) -> Lived:
    with ModemEmulator(family, sc, audio_port=family != "v253") as modem:
        with dialer_for(modem) as dialer:
            record = place(dialer, directory, dtmf="1" if sc.name == "answered" else None,
                           dtmf_after_s=0.1, expect=expect)
        return Lived(record, dict(modem.marks), modem.idle, getattr(modem, "dtmf", ""))


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Any]]:
    """The selected matrix cases, lived :data:`MATRIX_WORKERS` at a time (a future per
    case); a dozen threads per call mostly sleep on the script, so this is what keeps the
    matrix short.  Only the cases pytest selected are lived."""
    cases = sorted({(item.callspec.params["family"], item.callspec.params["name"])
                    for item in request.session.items
                    if getattr(item, "originalname", "") == "test_every_profile_every_scenario"
                    and hasattr(item, "callspec")})
    hear_answer_warm()
    # The test runner's heap is large: a full garbage collection stops every thread for
    # 100 ms or more, a pause of the rig, not of the probe.  None while the calls are timed.
    gc.collect()
    gc.disable()
    try:
        pool = ThreadPoolExecutor(MATRIX_WORKERS, thread_name_prefix="matrix")
        futures = {case: pool.submit(live, case[0], FAST[case[1]],
                                     tmp_path_factory.mktemp(f"{case[0]}-{case[1]}"))
                   for case in cases}
        # All lived before any is judged: result validation (jsonschema, pure Python) in
        # this thread would hold the GIL while the calls' reader threads stamp their lines.
        pool.shutdown(wait=True)
    finally:
        gc.enable()
    yield futures


def hear_answer_warm() -> None:
    """Run the answer check once on ringback + speech before calls are timed: its first use
    imports scipy.signal and loads the speech model, seconds of CPU under the GIL that would
    otherwise land in the middle of other timed calls."""
    import numpy as np

    from probe.dial.modem_audio import RATE, hear_answer
    from probe.sim.modem import sim_audio

    ringback, greeting = sim_audio()
    samples = np.concatenate([ringback[:RATE], greeting[:RATE]])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "warm.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(samples.astype("<i2").tobytes())
        hear_answer(path, 0, 0)


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_profile_every_scenario(family: str, name: str,
                                      matrix: dict[tuple[str, str], Any]) -> None:
    sc = FAST[name]
    lived: Lived = matrix[(family, name)].result()
    record, marks = lived.record, lived.marks
    expected = (ANALOG if family == "v253" else EXPECTED)[name]
    assert str(classify(record)) == expected, record.facts
    check_timing(record, marks, sc)
    if expected == "answered":
        assert record.first(Ev.ANSWER) is not None
        if family not in ("generic", "sim800"):  # no PCM/VRX audio on those two
            assert record.facts["audio_frames"] > 0
    if name == "answered":
        assert record.has(Ev.DTMF) and lived.dtmf == "1"
    if name == "dropped":
        assert record.has(Ev.REMOTE_HANGUP) and record.facts["modem"]["dropped"]
    if name == "registers_late" and family != "v253":
        assert record.facts["modem"]["registration_wait_ms"] >= 150
    if name == "sim_pin" and family != "v253":
        assert "pin_entered" in marks and record.facts["modem"]["sim"] == "READY"
    doc = build_result(record, EXPECT, PROBE)
    VALIDATOR.validate(doc)  # validate_result() re-checks the schema itself: 60 ms a call
    assert doc["modem"]["profile"] in (family, None)
    text = json.dumps(doc)
    assert "358240051111110" not in text and "208150123456789" not in text
    assert lived.idle  # never left half-dialled


def check_timing(record: CallRecord, marks: dict[str, int], sc: Scenario) -> None:
    """Alerting and answer: the probe's stamps against the moment the emulator wrote the
    line (same monotonic clock), and against the script."""
    dial = record.first(Ev.DIAL)
    for kind, mark, script in ((Ev.PROGRESS, "alerting", sc.pdd_ms),
                               (Ev.ANSWER, "answer", sc.pdd_ms + (sc.ring_ms or 0))):
        event = record.first(kind)
        if event is None:
            continue
        assert dial is not None and mark in marks, (kind, marks)
        error = (event.t_ns - marks[mark]) / 1e6
        assert abs(error) <= TOLERANCE_MS, (kind, error)
        # On a starved machine the emulator's thread reads the ATD and writes its lines late;
        # that lateness is the emulator's, not the probe's.
        late = (marks[mark] - dial.t_ns) / 1e6 - script
        got = (event.t_ns - dial.t_ns) / 1e6
        assert abs(got - script) <= TOLERANCE_MS + 5 + max(0.0, late - 5), (kind, got, script)


@pytest.mark.parametrize("family", ["generic", "sim800", "v253"])
def test_timing_with_the_emulators_default_script(family: str, tmp_path: Path) -> None:
    """The emulator's own (longer) delays, one call at a time: polling, URC and V.253."""
    sc = SCENARIOS["answered"]
    lived = live(family, sc, tmp_path, expect=replace(EXPECT, max_ring_s=1.0))
    assert classify(lived.record) == "answered"
    check_timing(lived.record, lived.marks, sc)
    assert lived.idle


def test_unplugged_then_replugged_next_call_works(tmp_path: Path) -> None:
    with ModemEmulator("sim7600", SCENARIOS["unplugged"], audio_port=True) as modem:
        with dialer_for(modem) as dialer:
            first = place(dialer, tmp_path)
            assert first.facts["modem"]["error"] == "modem.gone"
            modem.with_scenario(SCENARIOS["answered"])
            modem.replug()  # re-enumeration: same by-id path, new tty
            second = place(dialer, tmp_path)
        assert classify(second) == "answered"
        assert second.facts["modem"]["recovery"] == ["reopen"]
        assert modem.idle


def test_hung_modem_is_power_cycled_through_the_power_key(tmp_path: Path) -> None:
    factory = MockFactory()
    sense = factory.pin(21)  # the modem's side of the power key
    factory.pin(4, pin_class=MockConnectedPin, input_pin=sense)  # probe's power_pin
    status = factory.pin(17)
    with ModemEmulator("sim800", scenario("answered", unresponsive=True)) as modem:
        with dialer_for(modem, power_pin=4, status_pin=17, power_pulse_s=0.08,
                        boot_wait_s=2.0, pin_factory=factory) as dialer:
            modem.wire(power_key=sense, status=status, press_ms=50)  # the board's wiring
            record = place(dialer, tmp_path)
        assert record.facts["modem"]["recovery"] == ["reopen", "power_off",
                                                     "power_on"]
        assert "power_off" in modem.marks and "power_on" in modem.marks
        assert classify(record) == "answered"


def test_unresponsive_without_power_pin_reports_modem_unresponsive(tmp_path: Path) -> None:
    with ModemEmulator("quectel", SCENARIOS["unresponsive"]) as modem, \
            dialer_for(modem) as dialer:
        record = place(dialer, tmp_path)
    doc = build_result(record, EXPECT, PROBE)
    validate_result(doc)
    assert (doc["outcome"], doc["modem"]["error"]) == ("modem_error", "modem.unresponsive")
    assert doc["timings_ms"]["post_dial_delay"] is None


def test_no_sim(tmp_path: Path) -> None:
    with ModemEmulator("sim7600", scenario("answered", sim="ABSENT")) as modem, \
            dialer_for(modem) as dialer:
        record = place(dialer, tmp_path)
    assert classify(record) == "no_sim"
    assert not any(line.startswith("ATD") for line in modem.received)


def test_a76xx_answer_without_audio_is_flagged_unproven(tmp_path: Path) -> None:
    with ModemEmulator("a76xx", FAST["answered"]) as modem, dialer_for(modem) as dialer:
        record = place(dialer, tmp_path)  # no audio_port: nothing to confirm the answer with
    doc = build_result(record, EXPECT, PROBE)
    assert doc["modem"]["through_connect_possible"] is True
    assert doc["modem"]["answer_confirmed"] is None
    assert doc["modem"]["through_connected"] is None
    assert doc["outcome"] == "answered"


@pytest.fixture
def gsm_config(tmp_path: Path) -> Iterator[tuple[Path, ModemEmulator]]:
    with ModemEmulator("sim7600", scenario("busy"), audio_port=True) as modem:
        path = tmp_path / "probe.toml"
        path.write_text(
            f'[probe]\nid = "t1"\nsite = "Lab"\nstate_dir = "{tmp_path / "state"}"\n\n'
            f'[modems.gsm]\nport = "{modem.url}"\naudio_port = "{modem.audio_url}"\n\n'
            '[[targets]]\nname = "support"\nnumber = "+33472000390"\nchannels = ["gsm"]\n'
            "[targets.expect]\nmax_ring_s = 1\nhold_s = 0.5\n")
        yield path, modem


def test_probe_call_channel_gsm_cli(gsm_config: tuple[Path, ModemEmulator],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from probe.cli import main

    path, modem = gsm_config
    code = main(["call", "support", "-c", str(path), "--channel", "gsm", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["outcome"] == "busy" and doc["channel"] == "gsm"
    assert doc["modem"]["cause"] == 17 and doc["modem"]["idle_after"] is True
    assert modem.idle
