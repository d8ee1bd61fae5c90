"""Diagnosis: the scenario matrix from real calls, the issue's cross-path examples, messages.

The matrix's results come from real runs: `probe call --json` against SIPp hotlines (SIP) and
the modem emulator behind a pty (GSM), and the line facts from the line simulator read through
gpiozero's MCP3008 driver.  Each scenario combines those real results the way a cycle does and
asserts the exact verdict and cause codes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.diagnosis.i18n import LANGUAGES, catalog_paths, compile_mo, parse_po
from probe.diagnosis.rules import (
    CAUSE_CODES,
    CAUSES,
    ProbeFacts,
    Thresholds,
    Verdict,
    causes_markdown,
    diagnose,
)
from probe.results.document import result_schema, validate_result
from probe.sim import probe_config
from probe.sim.hotline import NEVER_ANSWER, HotlineBehaviour, SippHotline, free_port
from probe.sim.modem import SCENARIOS, ModemEmulator

LIMITS = {"max_post_dial_delay_ms": 3000, "max_ring_s": 2}

SIP_RUNS = {
    "answered": HotlineBehaviour(pdd_ms=100, ring_ms=200),
    "busy": HotlineBehaviour(pdd_ms=100, ring_ms=100, final=486),
    "no_answer": HotlineBehaviour(pdd_ms=100, final=NEVER_ANSWER),
    "congestion": HotlineBehaviour(pdd_ms=100, ring_ms=100, final=503),
    "server_error": HotlineBehaviour(pdd_ms=100, ring_ms=100, final=500),
    "not_found": HotlineBehaviour(pdd_ms=100, provisional=None, final=404),
    "no_rtp": HotlineBehaviour(pdd_ms=100, ring_ms=100, audio=None),
    "auth": HotlineBehaviour(pdd_ms=100, ring_ms=100, challenge=("probe", "other-secret")),
}
GSM_RUNS = ("answered", "busy", "no_answer", "congestion", "unassigned", "not_registered")


def _config(tmp: Path, name: str, *, sip_uri: str | None = None,
            modem_url: str | None = None, channel: str = "gsm",
            **expect: Any) -> Path:
    channel = "sip" if sip_uri else channel
    target = {"name": "hotline", "channels": [channel],
              **({"sip_uri": sip_uri} if sip_uri else {"number": "+33100000000"}),
              "expect": {"hold_s": 0.5, "max_ring_s": 2, "max_post_dial_delay_ms": 3000,
                         **expect}}
    directory = tmp / name
    directory.mkdir()
    if sip_uri:
        return probe_config.write_config(directory, probe_id="p-diag", targets=[target],
                                         sip={"username": "probe", "password": "secret"})
    model = "sim7600" if channel == "gsm" else "v253"
    return probe_config.write_config(directory, probe_id="p-diag", targets=[target],
                                     modems={channel: {"port": modem_url, "model": model}})


def _call(config: Path, channel: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "probe", "call", "hotline", "-c", str(config),
                           "--channel", channel, "--json"], capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    validate_result(doc)
    return doc


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Real results, keyed "sip:<scenario>" and "gsm:<scenario>", made in parallel."""
    tmp = tmp_path_factory.mktemp("diag")

    def sip(name: str) -> tuple[str, dict[str, Any]]:
        with SippHotline(SIP_RUNS[name]) as hotline:
            return f"sip:{name}", _call(_config(tmp, f"sip-{name}", sip_uri=hotline.uri), "sip")

    def gsm(name: str) -> tuple[str, dict[str, Any]]:
        with ModemEmulator("sim7600", SCENARIOS[name]) as modem:
            return f"gsm:{name}", _call(_config(tmp, f"gsm-{name}", modem_url=modem.url), "gsm")

    def analog_dead_line() -> tuple[str, dict[str, Any]]:
        with ModemEmulator("v253", replace(SCENARIOS["answered"], name="dead",
                                           reg_stat=0)) as modem:
            config = _config(tmp, "analog-dead", modem_url=modem.url, channel="analog")
            return "analog:dead_line", _call(config, "analog")

    def sip_dead() -> tuple[str, dict[str, Any]]:
        uri = f"sip:hotline@127.0.0.1:{free_port()}"  # nothing listens there
        config = _config(tmp, "sip-unreachable", sip_uri=uri, max_ring_s=0.5,
                         max_post_dial_delay_ms=500)
        return "sip:unreachable", _call(config, "sip")

    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = [pool.submit(sip, n) for n in SIP_RUNS] + [pool.submit(gsm, n) for n in GSM_RUNS]
        jobs.append(pool.submit(sip_dead))
        jobs.append(pool.submit(analog_dead_line))
        return dict(job.result() for job in jobs)


def line_snapshot(condition: str) -> dict[str, Any]:
    """A real LineMonitor snapshot over the simulated line (gpiozero's MCP3008 driver)."""
    from probe.board.line import LineMonitor
    from probe.config.model import LineConfig
    from probe.sim import line as sim

    clock = sim.SimClock()
    simulator = sim.LineSimulator(getattr(sim, condition)(), seed=3)
    board = sim.SimBoard(simulator, clock)
    monitor = LineMonitor(LineConfig(), board.reader(), clock=clock, sleep=clock.sleep)
    monitor.run_for(3.0)
    return monitor.snapshot()


def codes(result: Any) -> list[str]:
    return sorted(c["code"] for c in result.causes)


MATRIX = [
    # (scenario, results, facts, history, verdict, cause codes)
    ("all answered", ["sip:answered", "gsm:answered"], {}, [], "ok", []),
    ("every path busy: overload", ["sip:busy", "gsm:busy"], {}, [True], "down",
     ["hotline.busy"]),
    ("busy once: not yet an outage", ["sip:busy", "gsm:busy"], {}, [False, False], "degraded",
     ["diagnosis.transient", "hotline.busy"]),
    ("rings past the limit on every path: no staff", ["sip:no_answer", "gsm:no_answer"], {},
     [True], "down", ["hotline.no_answer"]),
    ("GSM not registered, SIP answers: the probe's modem", ["sip:answered",
     "gsm:not_registered"], {}, [], "ok", ["modem.not_registered"]),
    ("SIP 503 while GSM answers: the SIP trunk", ["sip:congestion", "gsm:answered"], {}, [],
     "degraded", ["carrier.sip_trunk"]),
    ("SIP 500 while GSM answers: the trunk, not the hotline", ["sip:server_error",
     "gsm:answered"], {}, [], "degraded", ["carrier.sip_trunk"]),
    ("congestion on every path", ["sip:congestion", "gsm:congestion"], {}, [True], "down",
     ["carrier.congestion"]),
    ("server error on the only path", ["sip:server_error"], {}, [True], "down",
     ["hotline.server_error"]),
    ("answered without RTP: media server", ["sip:no_rtp"], {}, [True], "down",
     ["hotline.no_media"]),
    ("auth failure: configuration", ["sip:auth"], {}, [True], "down", ["config.auth_failed"]),
    ("number unknown everywhere", ["sip:not_found", "gsm:unassigned"], {}, [True], "down",
     ["config.number_not_found"]),
    ("paths disagree: GSM says unassigned, SIP answers", ["sip:answered", "gsm:unassigned"],
     {}, [], "degraded", ["config.number_not_found", "diagnosis.conflicting_evidence"]),
    ("GSM unregistered, SIP congested: only SIP could test, and it says congestion",
     ["sip:congestion", "gsm:not_registered"], {"broker_reachable": False}, [True], "down",
     ["carrier.congestion", "modem.not_registered", "network.broker_unreachable"]),
    ("SIP silent while the broker is unreachable, GSM unregistered: the office, not the "
     "hotline", ["sip:unreachable", "gsm:not_registered"], {"broker_reachable": False}, [True],
     "unknown", ["modem.not_registered", "network.broker_unreachable",
                 "network.sip_unreachable"]),
    ("SIP silent, broker fine, GSM answers: the SIP path", ["sip:unreachable", "gsm:answered"],
     {"broker_reachable": True}, [], "degraded", ["carrier.path_failure"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "keys", "facts", "history", "verdict", "expected"), MATRIX,
                         ids=[m[0] for m in MATRIX])
def test_scenario_matrix_from_real_calls(real: dict, name: str, keys: list[str], facts: dict,
                                         history: list[bool], verdict: str,
                                         expected: list[str]) -> None:
    result = diagnose([real[k] for k in keys], ProbeFacts(**facts), LIMITS, Thresholds(),
                      history)
    assert (str(result.verdict), codes(result)) == (verdict, expected), result.causes
    _assert_rendered(result)


@pytest.mark.slow
def test_cut_line_is_the_office_not_the_hotline(real: dict) -> None:
    """All paths fail and the line has no voltage: a local fault; the hotline's state is
    unknown, never 'down'.  The analog result is a real call on the emulated voice modem whose
    line is dead; the line facts come from the simulated board."""
    analog = real["analog:dead_line"]
    assert analog["outcome"] == "no_dial_tone"
    snapshot = line_snapshot("cut")
    assert snapshot["state"] == "no_voltage"
    result = diagnose([analog], ProbeFacts(line=snapshot), LIMITS, Thresholds(), [True, True])
    assert result.verdict == Verdict.UNKNOWN
    assert codes(result) == ["line.no_dial_tone", "line.no_voltage"]
    assert not result.probe_ok
    assert "line" in result.summary.lower()


# -- the cross-path rules on minimal documents ------------------------------------------------

def doc(channel: str, outcome: str, **extra: Any) -> dict[str, Any]:
    base = {"channel": channel, "outcome": outcome, "sip": None, "modem": None, "rtp": None,
            "analysis": None, "timings_ms": {}}
    return {**base, **extra}


def analysis(**fields: Any) -> dict[str, Any]:
    return {"tones": [], "prompts": None, "quality": {}, "level": {}, "speech": {},
            "dead_air": None, "one_way_audio": None, **fields}


@pytest.mark.parametrize(("results", "verdict", "expected"), [
    ([doc("sip", "answered", analysis=analysis(prompts={"matched": [
        {"name": "all-operators-busy"}]}))], "degraded", ["hotline.queue_full_prompt"]),
    ([doc("sip", "answered", analysis=analysis(prompts={"matched": [], "unknown_greeting": True,
                                                        "greeting": None}))],
     "degraded", ["config.unexpected_greeting"]),
    ([doc("sip", "answered", analysis=analysis(dead_air=True))], "down", ["hotline.dead_air"]),
    ([doc("sip", "answered", rtp={"packets_received": 900, "packets_lost": 100,
                                  "jitter_mean_ms": 3},
          analysis=analysis(quality={"emodel": {"mos": 2.9, "method": "E-model"}}))],
     "degraded", ["quality.low_mos", "quality.packet_loss"]),
    ([doc("gsm", "answered", analysis=analysis(one_way_audio=True))], "down",
     ["quality.one_way_audio"]),
    ([doc("gsm", "no_carrier", modem={"cause": 34})], "down", ["carrier.congestion"]),
    ([doc("analog", "no_carrier", analysis=analysis(tones=[{"kind": "sit", "sit_code": "VC"}]))],
     "down", ["config.number_not_found"]),
    ([doc("analog", "busy", analysis=analysis(tones=[{"kind": "congestion"}]))], "down",
     ["carrier.congestion"]),
    ([doc("gsm", "no_sim", modem={"sim": "SIM PIN"})], "unknown", ["modem.no_sim"]),
    ([doc("sip", "aborted")], "unknown", []),
])
def test_rules(results: list[dict], verdict: str, expected: list[str]) -> None:
    result = diagnose(results, ProbeFacts(), LIMITS, Thresholds(), [True])
    assert (str(result.verdict), codes(result)) == (verdict, expected)


def test_weak_signal_and_low_line_voltage_are_the_probes_not_the_hotlines() -> None:
    facts = ProbeFacts(line={"state": "low_voltage", "dc_volts": 21.5},
                       modems={"gsm": {"signal_dbm": -109}})
    result = diagnose([doc("gsm", "answered"), doc("analog", "answered")], facts, LIMITS)
    assert result.verdict == Verdict.OK
    assert codes(result) == ["line.low_voltage", "modem.weak_signal"]
    assert not result.probe_ok
    assert "21.5 V" in next(c["summary"] for c in result.causes if c["code"] ==
                            "line.low_voltage")


def test_a_board_that_cannot_read_the_line_is_the_probes_with_its_reason() -> None:
    # What the line read before the board failed says nothing now: only the board's fault.
    facts = ProbeFacts(line={"state": "no_voltage"}, board_fault="no pin library: ...")
    result = diagnose([doc("sip", "answered"), doc("analog", "answered")], facts, LIMITS)
    assert result.verdict == Verdict.OK and codes(result) == ["probe.board_fault"]
    [cause] = result.causes
    assert cause["evidence"] == {"reason": "no pin library: ..."}
    assert cause["scope"] == "probe" and not result.probe_ok
    # The analog path alone: its call cannot be judged through a board that does not read.
    alone = diagnose([doc("analog", "answered")], facts, LIMITS)
    assert alone.verdict == Verdict.UNKNOWN


def test_slow_setup_and_slow_answer_degrade() -> None:
    slow = doc("sip", "answered", timings_ms={"post_dial_delay": 4200, "ring_duration": 1500})
    result = diagnose([slow], ProbeFacts(), LIMITS)
    assert (result.verdict, codes(result)) == (Verdict.DEGRADED,
                                                ["carrier.slow_setup", "hotline.slow_answer"])


# -- contract and messages --------------------------------------------------------------------

def test_cause_codes_are_the_schema_enum() -> None:
    schema = result_schema()["properties"]["diagnosis"]["oneOf"][1]
    assert schema["properties"]["causes"]["items"]["properties"]["code"]["enum"] == \
        list(CAUSE_CODES)


def test_causes_table_in_the_docs_is_current() -> None:
    table = (Path(__file__).resolve().parent.parent / "docs" / "causes.md").read_text()
    assert all(f"`{code}`" in table for code in CAUSE_CODES)
    assert table == causes_markdown(), "run: python -m probe.diagnosis.rules > docs/causes.md"


@pytest.mark.parametrize("language", LANGUAGES)
def test_catalogs_are_complete_and_compiled(language: str) -> None:
    po, mo = catalog_paths(language)
    entries = parse_po(po.read_text(encoding="utf-8"))
    for spec in CAUSES.values():
        for msgid in (spec.summary, spec.remedy):
            assert entries.get(msgid), f"{language}: no translation for {msgid!r}"
            # the placeholders survive translation
            assert _fields(entries[msgid]) == _fields(msgid), msgid
    assert mo.read_bytes() == compile_mo(entries), "run: python -m probe.diagnosis.i18n"


def test_russian_messages_are_used_when_configured() -> None:
    result = diagnose([doc("sip", "busy")], ProbeFacts(), LIMITS, history=[True],
                      language="ru")
    assert result.summary == "Горячая линия занята: звонящие слышат сигнал «занято»."


def _fields(text: str) -> set[str]:
    import string

    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _assert_rendered(result: Any) -> None:
    for cause in result.causes:
        assert "{" not in cause["summary"] and "{" not in cause["remedy"], cause


outcomes = st.sampled_from(result_schema()["properties"]["outcome"]["enum"])


@settings(max_examples=300, deadline=None)
@given(paths=st.lists(st.tuples(st.sampled_from(["sip", "gsm", "analog"]), outcomes,
                                st.one_of(st.none(), st.integers(100, 699)),
                                st.one_of(st.none(), st.integers(0, 127))),
                      min_size=1, max_size=3, unique_by=lambda p: p[0]),
       history=st.lists(st.booleans(), max_size=5),
       line=st.sampled_from([None, "idle", "no_voltage", "low_voltage", "interface_fault"]),
       broker=st.sampled_from([None, True, False]))
def test_every_result_gets_a_verdict_with_known_codes(paths: list, history: list[bool],
                                                      line: str | None,
                                                      broker: bool | None) -> None:
    results = [doc(c, o, sip={"final_code": code, "final_reason": "x"},
                   modem={"cause": cause}) for c, o, code, cause in paths]
    facts = ProbeFacts(line={"state": line} if line else None, broker_reachable=broker)
    result = diagnose(results, facts, LIMITS, Thresholds(), history)
    assert result.verdict in set(Verdict)
    assert all(c["code"] in CAUSE_CODES for c in result.causes)
    _assert_rendered(result)
    if result.verdict == Verdict.DOWN:
        assert any(c["severity"] == "down" and c["scope"] in ("hotline", "path")
                   for c in result.causes)
    # a probe fault alone never takes the hotline down
    if all(o in ("not_registered", "no_sim", "modem_error", "failed", "no_dial_tone")
           for _, o, _, _ in paths):
        assert result.verdict == Verdict.UNKNOWN
