"""Where a modem's signalling is weak, what the caller heard decides the outcome.

A modem that reports only ``NO CARRIER`` (no AT+CEER cause, a polled modem, a network that
clears without a cause) or nothing at all says little; the tones before the clearing say busy,
congestion, a special information tone or an announcement, and an analog modem's busy word is
told from congestion by the tone's cadence.  The result says which evidence decided.

The audio is made by ``sox`` and ``espeak-ng`` from the national tone specifications as ITU-T
E.180 Supplement 2 lists them — never by the probe's own synthesizer:

* Germany: busy 425 Hz, 480 ms on / 480 ms off; congestion 425 Hz, 240 ms on / 240 ms off;
  ringback 425 Hz, 1 s on / 4 s off.
* United States (ANSI T1.401): busy 480 + 620 Hz, 0.5 s / 0.5 s; reorder (congestion)
  480 + 620 Hz, 0.25 s / 0.25 s.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from probe.audio.analysis import analyze
from probe.audio.wavio import read_wav
from probe.config.model import Expectations, ProbeIdentity
from probe.diagnosis.rules import ProbeFacts, diagnose
from probe.results.document import build_result, validate_result
from probe.results.timeline import CallRecord, Ev
from tests.intercepts import BY_CODE, make_intercept, tools_missing
from tests.records import add_events

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=str(tools_missing()))
MONO = 7_000_000_000_000
WALL = 1_795_000_000_000_000_000
PROBE = ProbeIdentity("p1", "lab")


def tone(path: Path, freqs: tuple[float, ...], on_s: float, off_s: float, cycles: int,
         *, lead_s: float = 0.3, level_db: float = -18.0) -> Path:
    """``cycles`` of ``on_s`` tone (the sum of ``freqs``) and ``off_s`` silence, by sox."""
    sines = [arg for f in freqs for arg in ("sine", f"{f:g}")]
    subprocess.run(["sox", "-R", "-D", "-n", "-r", "8000", "-b", "16", "-e", "signed", "-c", "1",
                    str(path), "synth", f"{on_s:g}", *sines, "channels", "1",
                    "pad", "0", f"{off_s:g}", "repeat", str(cycles - 1),
                    "pad", f"{lead_s:g}", "0", "gain", "-n", f"{level_db:g}"], check=True)
    return path


def heard(path: Path, zone: str) -> dict[str, Any]:
    return analyze(read_wav(path).samples, zone=zone, quality_method=None, use_vad_model=False)


def modem_call(channel: str = "gsm", *, result: str = "NO CARRIER", cause: int | None = None,
               end_ms: float = 6000) -> CallRecord:
    """Dialled, never answered, cleared with ``result`` (and the network's ``cause``)."""
    record = CallRecord(channel=channel, target="hot", destination="+4930123456",
                        wall_ns=WALL, mono_ns=MONO)
    record.facts["modem"] = {"result": result, "cause": cause}
    return add_events(record, ((0, Ev.DIAL), (end_ms, Ev.END, None, result)),
                      lambda ms: MONO + round(ms * 1_000_000))


def result(record: CallRecord, analysis: dict[str, Any] | None) -> dict[str, Any]:
    doc = build_result(record, Expectations(), PROBE, analysis=analysis)
    validate_result(doc)
    return doc


@pytest.mark.parametrize(("zone", "freqs", "on_s", "off_s", "outcome"), [
    ("DE", (425,), 0.48, 0.48, "busy"),
    ("DE", (425,), 0.24, 0.24, "congestion"),
    ("US", (480, 620), 0.5, 0.5, "busy"),
    ("US", (480, 620), 0.25, 0.25, "congestion"),
])
def test_a_tone_before_no_carrier_decides(tmp_path: Path, zone: str, freqs: tuple[float, ...],
                                          on_s: float, off_s: float, outcome: str) -> None:
    wav = tone(tmp_path / "t.wav", freqs, on_s, off_s, cycles=round(4 / (on_s + off_s)))
    doc = result(modem_call(), heard(wav, zone))
    assert doc["outcome"] == outcome
    evidence = doc["outcome_evidence"]
    assert evidence["decided_by"] == "audio" and evidence["signalled"] == "no_carrier"
    assert evidence["heard"].startswith(f"{outcome} tone")
    assert "+".join(f"{f:g}" for f in freqs) + " Hz" in evidence["heard"]


def test_ringing_then_cleared_is_no_answer(tmp_path: Path) -> None:
    wav = tone(tmp_path / "ring.wav", (425,), 1.0, 4.0, cycles=3)
    doc = result(modem_call(end_ms=15000), heard(wav, "DE"))
    assert doc["outcome"] == "no_answer"
    assert doc["outcome_evidence"]["heard"].startswith("ringback tone")


@pytest.mark.parametrize(("code", "outcome"), [
    ("NC''", "congestion"), ("RO'", "congestion"), ("VC", "unassigned_number"),
    ("IC", "unassigned_number"),
])
def test_a_special_information_tone_before_no_carrier_decides(
        tmp_path: Path, code: str, outcome: str) -> None:
    wav = make_intercept(tmp_path / "sit.wav", BY_CODE[code].segments())
    doc = result(modem_call(), heard(wav, "US"))
    assert doc["outcome"] == outcome
    assert doc["outcome_evidence"]["heard"].startswith(f"SIT {code} at ")
    # and the diagnosis keeps the code's own cause (tests/intercepts.py, from GR-1162)
    diagnosis = diagnose([doc], ProbeFacts(), {}).as_json()
    assert BY_CODE[code].cause in [c["code"] for c in diagnosis["causes"]]


def test_an_announcement_with_no_tone_is_unavailable(tmp_path: Path) -> None:
    speech = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(speech),
                    "the person you are calling is not available at the moment"],
                   check=True, capture_output=True)
    wav = tmp_path / "announcement.wav"
    subprocess.run(["sox", "-R", "-D", str(speech), "-r", "8000", "-c", "1", "-b", "16",
                    "-e", "signed", str(wav), "pad", "0.5", "0.5"], check=True)
    doc = result(modem_call("analog"), heard(wav, "DE"))
    assert doc["outcome"] == "unavailable"
    assert doc["outcome_evidence"]["heard"].startswith("an announcement (")


def test_an_analog_busy_word_with_a_congestion_cadence_is_congestion(tmp_path: Path) -> None:
    """V.253 ``<DLE>b`` / ``BUSY`` says only "a busy-like tone"; the cadence says which."""
    wav = tone(tmp_path / "fast.wav", (425,), 0.24, 0.24, cycles=8)
    doc = result(modem_call("analog", result="BUSY"), heard(wav, "DE"))
    assert doc["outcome"] == "congestion"
    assert doc["outcome_evidence"] == {"decided_by": "audio", "signalled": "busy",
                                       "heard": doc["outcome_evidence"]["heard"]}
    slow = tone(tmp_path / "slow.wav", (425,), 0.48, 0.48, cycles=4)
    doc = result(modem_call("analog", result="BUSY"), heard(slow, "DE"))
    assert doc["outcome"] == "busy" and doc["outcome_evidence"]["decided_by"] == "signalling"


def test_a_network_cause_is_not_overruled(tmp_path: Path) -> None:
    """Cause 17 (user busy, 24.008 / Q.850) is precise: a congestion tone does not change it."""
    wav = tone(tmp_path / "fast.wav", (425,), 0.24, 0.24, cycles=8)
    doc = result(modem_call(result="BUSY", cause=17), heard(wav, "DE"))
    assert doc["outcome"] == "busy"
    assert doc["outcome_evidence"] == {"decided_by": "signalling", "signalled": "busy",
                                       "heard": None}


def test_no_audio_leaves_the_signalling(tmp_path: Path) -> None:
    doc = result(modem_call(), None)
    assert doc["outcome"] == "no_carrier"
    assert doc["outcome_evidence"]["decided_by"] == "signalling"
    silence = tmp_path / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-b", "16", "-e", "signed", "-c", "1",
                    str(silence), "trim", "0", "3"], check=True)
    assert result(modem_call(), heard(silence, "DE"))["outcome"] == "no_carrier"


def test_sip_status_is_never_overruled(tmp_path: Path) -> None:
    """A 503 after early media with a busy tone stays congestion: SIP's status is precise."""
    wav = tone(tmp_path / "busy.wav", (425,), 0.48, 0.48, cycles=4)
    record = CallRecord(channel="sip", target="hot", destination="sip:hot@127.0.0.1",
                        wall_ns=WALL, mono_ns=MONO)
    add_events(record, ((0, Ev.DIAL), (100, Ev.PROGRESS, 183, "Session Progress"),
                        (5000, Ev.END, 503, "Service Unavailable", {"from_network": True})),
               lambda ms: MONO + round(ms * 1_000_000))
    doc = result(record, heard(wav, "DE"))
    assert doc["outcome"] == "congestion"
    assert doc["outcome_evidence"]["decided_by"] == "signalling"
