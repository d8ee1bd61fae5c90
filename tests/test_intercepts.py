"""Special information tones and intercept announcements: never "ok", always a cause.

Audio comes from sox (the tone, from the standard's segment table in :mod:`tests.intercepts`)
and espeak-ng (the announcement), never from the probe's own synthesizer.  The codes' meanings
and the causes they must lead to are written there from the published SIT tables.  First the
chain on its own (sox audio -> the probe's hearing -> the diagnosis and the expectations), then
real calls on every channel: a SIPp hotline answered by an announcement (200) and one playing
it as early media before a 4xx, a GSM modem whose network connects its announcement machine and
then clears the call (NO CARRIER), an analog modem that hears the intercept as an answer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from probe.audio.analysis import analyze
from probe.audio.wavio import read_wav
from probe.config.model import Expectations
from probe.diagnosis.rules import ProbeFacts, diagnose
from probe.results.document import validate_result
from probe.results.measure import Outcome, judge, timings
from probe.results.timeline import CallRecord, Ev
from probe.sim import probe_config
from probe.sim.hotline import HotlineBehaviour, SippHotline
from probe.sim.modem import ModemEmulator, Scenario
from tests.intercepts import (
    BY_CODE,
    ITU_CAUSE,
    ITU_SEGMENTS,
    STANDARD,
    make_intercept,
    tools_missing,
)

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=str(tools_missing()))
ROOT = Path(__file__).resolve().parent.parent
LIMITS = {"max_post_dial_delay_ms": 3000, "max_ring_s": 10}
FAST_HEARING = {"quality": "off", "vad_model": False}  # the tone is what these calls test
CASES = [(c.code, c.segments(), c.cause) for c in STANDARD] + [("ITU", ITU_SEGMENTS, ITU_CAUSE)]


@pytest.fixture(scope="module")
def heard(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The probe's analysis of one sox + espeak-ng intercept per code."""
    tmp = tmp_path_factory.mktemp("sit")
    out = {}
    for code, segments, _ in CASES:
        wav = make_intercept(tmp / f"{code.replace(chr(39), 'p')}.wav", segments)
        out[code] = analyze(read_wav(wav).samples, quality_method=None, use_vad_model=False)
    return out


def result(channel: str, outcome: str, analysis: dict[str, Any] | None,
           **extra: Any) -> dict[str, Any]:
    return {"channel": channel, "outcome": outcome, "sip": None, "modem": None, "rtp": None,
            "analysis": analysis, "timings_ms": {}, **extra}


@pytest.mark.parametrize(("code", "cause"), [(c, cause) for c, _, cause in CASES],
                         ids=[c for c, _, _ in CASES])
def test_each_code_is_heard_and_named_with_its_cause(heard: dict, code: str,
                                                     cause: str) -> None:
    analysis = heard[code]
    sits = [t for t in analysis["tones"] if t["kind"] == "sit"]
    assert [t["sit_code"] for t in sits] == [code], analysis["tones"]
    assert analysis["speech"]["present"]  # the announcement
    # Answered by the announcement machine (SIP 200, a modem's connect): not the hotline.
    answered = diagnose([result("sip", "answered", analysis)], ProbeFacts(), LIMITS,
                        history=[True])
    assert str(answered.verdict) == "down"
    assert [c["code"] for c in answered.causes] == [cause], answered.causes
    assert f"SIT {code}" in answered.causes[0]["summary"]
    # Cleared by the network with no more precise cause (NO CARRIER), after the tone.
    cleared = diagnose([result("gsm", "no_carrier", analysis, modem={"cause": None})],
                       ProbeFacts(), LIMITS, history=[True])
    assert [c["code"] for c in cleared.causes] == [cause], cleared.causes
    for language in ("en", "ru"):  # every cause renders in both catalogues
        text = diagnose([result("sip", "answered", analysis)], ProbeFacts(), LIMITS,
                        language=language).causes[0]
        assert "{" not in text["summary"] + text["remedy"]


def test_the_expectations_fail_a_call_that_heard_a_tone(heard: dict) -> None:
    record = CallRecord(channel="sip", target="t", destination="sip:x", wall_ns=0, mono_ns=0)
    for ms, kind, code in ((0, Ev.DIAL, None), (100, Ev.PROGRESS, 180), (300, Ev.ANSWER, 200),
                           (300, Ev.MEDIA_START, None), (5000, Ev.END, 200)):
        record.add(kind, ms * 1_000_000, code)
    expect = Expectations(require_media=False)
    t = timings(record)
    checks = {c.check: c for c in judge(Outcome.ANSWERED, t, record, expect,
                                        heard["VC"]).checks}
    sit = checks["no_special_information_tone"]
    assert not sit.met and sit.measured.startswith("SIT VC at 0.4"), sit
    assert checks["answered"].met  # the network did answer: the tone is why it failed
    clean = {**heard["VC"], "tones": []}
    assert judge(Outcome.ANSWERED, t, record, expect, clean).met


def test_an_intercept_on_one_path_is_not_a_path_that_reached_the_hotline(heard: dict) -> None:
    """SIP answered by the intercept: alone it is down; with GSM answered by the hotline the
    paths disagree (a routing difference), and GSM's answer is not contradicted by SIP's."""
    sip = result("sip", "answered", heard["IC"])
    alone = diagnose([sip], ProbeFacts(), LIMITS, history=[True])
    assert [c["code"] for c in alone.causes] == ["config.number_changed"]
    both = diagnose([sip, result("gsm", "answered", None)], ProbeFacts(), LIMITS)
    assert str(both.verdict) == "degraded"
    assert sorted(c["code"] for c in both.causes) == ["config.number_changed",
                                                      "diagnosis.conflicting_evidence"]


# -- real calls -------------------------------------------------------------------------------

def probe_call(config: Path, channel: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "probe", "call", "hot", "-c", str(config),
                           "--channel", channel, "--json"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    validate_result(doc)
    return proc.returncode, doc


def sit_check(doc: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in doc["expectations"]["checks"]
                if c["check"] == "no_special_information_tone")


def assert_failed_by(doc: dict[str, Any], code: str, cause: str) -> None:
    check = sit_check(doc)
    assert not check["met"] and check["measured"].startswith(f"SIT {code} at "), check
    assert doc["expectations"]["met"] is False
    diagnosis = doc["diagnosis"]
    assert diagnosis["verdict"] != "ok", diagnosis
    assert diagnosis["causes"][0]["code"] == cause, diagnosis["causes"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp not installed")
def test_sip_answered_by_an_intercept_announcement(tmp_path: Path) -> None:
    """200 OK, then the RTP carries SIT IC + "not in service": exit 1, never ok."""
    wav = make_intercept(tmp_path / "ic.wav", BY_CODE["IC"].segments(), encoding="u-law")
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=200, audio=wav)) as hotline:
        target = {"name": "hot", "sip_uri": hotline.uri, "channels": ["sip"],
                  "expect": {"hold_s": 2.5, "max_ring_s": 5}}
        config = probe_config.write_config(tmp_path, targets=[target], audio=FAST_HEARING)
        rc, doc = probe_call(config, "sip")
        assert hotline.wait(10) == 0, hotline.errors()
    assert doc["outcome"] == "answered" and rc == 1
    assert_failed_by(doc, "IC", "config.number_changed")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp not installed")
def test_sip_early_media_intercept_then_a_4xx(tmp_path: Path) -> None:
    """183 with SIT VC + announcement as early media, then 404: the SIP code names the cause,
    the tone is in its evidence and in the failed check."""
    wav = make_intercept(tmp_path / "vc.wav", BY_CODE["VC"].segments(), encoding="u-law")
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=2500, provisional=183, final=404,
                                      early_audio=wav)) as hotline:
        target = {"name": "hot", "sip_uri": hotline.uri, "channels": ["sip"],
                  "expect": {"hold_s": 1, "max_ring_s": 8}}
        config = probe_config.write_config(tmp_path, targets=[target], audio=FAST_HEARING)
        rc, doc = probe_call(config, "sip")
        assert hotline.wait(10) == 0, hotline.errors()
    assert doc["outcome"] == "not_found" and rc == 1
    assert_failed_by(doc, "VC", "config.number_not_found")
    assert "SIT VC" in doc["diagnosis"]["causes"][0]["evidence"]["evidence"]


def modem_config(tmp_path: Path, modem: ModemEmulator, channel: str,
                 hold_s: float = 5) -> Path:
    section: dict[str, Any] = {"port": modem.url, "model": modem.family}
    if channel == "gsm":
        section["audio_port"] = modem.audio_url
    else:
        section["ringback_silence_s"] = 0.5  # the modem says OK 0.5 s after the ringback
    target = {"name": "hot", "number": "+15550100", "channels": [channel],
              "expect": {"hold_s": hold_s, "max_ring_s": 5, "max_post_dial_delay_ms": 3000}}
    return probe_config.write_config(tmp_path, targets=[target], modems={channel: section},
                                     audio=FAST_HEARING)


@pytest.mark.slow
def test_gsm_network_connects_its_announcement_then_no_carrier(tmp_path: Path) -> None:
    """SIM7600: VOICE CALL: BEGIN, the PCM port carries SIT NC'' + the announcement, then the
    network clears (NO CARRIER) before the probe's hold is over."""
    wav = make_intercept(tmp_path / "nc.wav", BY_CODE["NC''"].segments(), lead_s=0.8)
    talk_ms = 3000  # cleared while the announcement speaks
    sc = Scenario("intercept", pdd_ms=150, ring_ms=100, talk_ms=talk_ms, far_audio=wav)
    with ModemEmulator("sim7600", sc, audio_port=True) as modem:
        rc, doc = probe_call(modem_config(tmp_path, modem, "gsm", hold_s=talk_ms / 1000 + 3),
                             "gsm")
        assert "end" in modem.marks  # the network cleared the call, not the probe
    assert doc["outcome"] == "answered" and rc == 1
    assert doc["modem"]["result"] == "NO CARRIER"
    assert_failed_by(doc, "NC''", "carrier.congestion")


@pytest.mark.slow
def test_analog_modem_hears_the_intercept_as_an_answer(tmp_path: Path) -> None:
    """V.253: one ringback burst, the exchange connects the announcement, the modem answers
    its timer (OK); the sample stream carries SIT RO' + the announcement."""
    # what plays before the modem's OK and AT+VRX is not recorded: the tone comes after it
    wav = make_intercept(tmp_path / "ro.wav", BY_CODE["RO'"].segments(), lead_s=1.0)
    sc = Scenario("intercept", pdd_ms=150, ring_ms=100, far_audio=wav)
    with ModemEmulator("v253", sc) as modem:
        rc, doc = probe_call(modem_config(tmp_path, modem, "analog", hold_s=3), "analog")
    assert doc["outcome"] == "answered" and rc == 1
    assert doc["modem"]["audio_source"] == "vrx"
    assert_failed_by(doc, "RO'", "carrier.reorder")
