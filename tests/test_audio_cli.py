"""``probe analyze`` / ``probe prompts add`` end to end, and the analysis inside a result.

The commands run as real processes; the result test builds a call record the way the SIP
dialer does (timeline + WAV whose first sample is the first media event + RTP statistics) and
validates the whole document against the shipped schema.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from probe.audio.call import analyze_record, answer_offset_s
from probe.audio.plans import plan
from probe.audio.synth import cadenced, codec, silence, sit_tone
from probe.audio.wavio import read_wav, write_wav
from probe.config.model import Expectations, ProbeIdentity
from probe.results.document import build_result, result_schema, validate_result
from probe.results.timeline import CallRecord, Ev, RtpStats
from probe.sim.hotline import GREETING_WAV

ROOT = Path(__file__).resolve().parent.parent


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_analyze_command_json(tmp_path: Path) -> None:
    us = {s.kind: s for s in plan("US")}
    x = np.concatenate([silence(0.3), cadenced(us["ringback"], 7.0, -18), silence(0.5),
                        sit_tone((985.2, 1370.6, 1776.7), (0.38, 0.274, 0.38), -24),
                        silence(1.0)])
    wav = tmp_path / "call.wav"
    write_wav(wav, codec("ulaw", x))
    proc = probe("analyze", str(wav), "--zone", "us", "--json", "--quality", "off")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    kinds = [(t["kind"], t["sit_code"]) for t in doc["tones"]]
    assert kinds == [("ringback", None), ("sit", "VC")]
    assert doc["ring_cycles"] == 2 and doc["zone"] == "US"
    import jsonschema

    jsonschema.validate(doc, result_schema()["properties"]["analysis"])

    human = probe("analyze", str(wav), "--quality", "off")
    assert human.returncode == 0 and "ringback" in human.stdout and "VC" in human.stdout


def test_analyze_usage_errors(tmp_path: Path) -> None:
    assert probe("analyze", str(tmp_path / "missing.wav")).returncode == 2
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    assert probe("analyze", str(tmp_path / "bad.wav")).returncode == 2
    proc = probe("analyze", str(GREETING_WAV), "--zone", "XX")
    assert proc.returncode == 2 and "no tone plan" in proc.stderr
    assert proc.stderr.startswith("probe: --zone:") and "DE, DK" in proc.stderr  # the choices


def test_analyze_zone_aliases() -> None:
    proc = probe("analyze", str(GREETING_WAV), "--zone", "uk", "--json", "--quality", "off",
                 "--no-vad-model")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["zone"] == "GB"


def test_prompts_add_then_analyze(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    proc = probe("prompts", "add", "welcome", str(GREETING_WAV), "--prompts", str(prompts))
    assert proc.returncode == 0, proc.stderr
    assert read_wav(prompts / "welcome.wav").encoding == "pcm"
    assert probe("prompts", "add", "bad/name", str(GREETING_WAV), "--prompts",
                 str(prompts)).returncode == 2
    x = np.concatenate([silence(2.0), read_wav(GREETING_WAV).samples])
    write_wav(tmp_path / "call.wav", codec("ulaw", x))
    proc = probe("analyze", str(tmp_path / "call.wav"), "--prompts", str(prompts),
                 "--answer-at", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (m,) = doc["prompts"]["matched"]
    assert m["name"] == "welcome" and abs(m["start_s"] - 2.0) < 0.02
    assert doc["prompts"]["greeting"] == "welcome"
    fr = doc["quality"]["full_reference"]
    assert fr["method"].startswith("visqol") and fr["mos"] is not None and fr["mos"] > 4.0


def _record(tmp_path: Path, audio: np.ndarray | None) -> CallRecord:
    record = CallRecord(channel="sip", target="support", destination="sip:1@127.0.0.1",
                        wall_ns=1_800_000_000_000_000_000, mono_ns=0)
    ms = 1_000_000
    record.add(Ev.DIAL, 0)
    record.add(Ev.PROGRESS, 100 * ms, 183, "Session Progress")
    record.add(Ev.EARLY_MEDIA, 120 * ms)
    record.add(Ev.ANSWER, 5_120 * ms, 200, "OK")
    record.add(Ev.MEDIA_START, 5_130 * ms)
    record.add(Ev.HANGUP, 13_120 * ms, reason="hold_done")
    record.add(Ev.END, 13_130 * ms, 200, "Normal call clearing")
    record.rtp = RtpStats(codec="PCMU/8000", packets_received=650, packets_lost=6,
                          packets_discarded=4, packets_reordered=0, packets_duplicated=0,
                          jitter_mean_us=3000, jitter_max_us=9000, packets_sent=650,
                          rtt_mean_us=42_000)
    if audio is not None:
        record.audio_path = tmp_path / "call.wav"
        write_wav(record.audio_path, audio)
    return record


def test_analysis_in_the_result_document(tmp_path: Path) -> None:
    de = {s.kind: s for s in plan("DE")}
    greeting = read_wav(GREETING_WAV).samples
    audio = codec("ulaw", np.concatenate([cadenced(de["ringback"], 5.0, -15), greeting]))
    record = _record(tmp_path, audio)
    assert answer_offset_s(record) == 5.0
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    write_wav(prompts / "welcome.wav", greeting)
    analysis = analyze_record(record, zone="DE", prompts_dir=prompts,
                              expected_prompts=("welcome",), quality="off")
    assert analysis is not None
    doc = build_result(record, Expectations(), ProbeIdentity("p1", "lab"), analysis=analysis)
    validate_result(doc)
    a = doc["analysis"]
    assert a["answer_at_s"] == 5.0 and a["tones"][0]["kind"] == "ringback"
    assert a["tones"][0]["cycles"] == 1 and a["ring_cycles"] == 1
    assert a["prompts"]["greeting"] == "welcome" and a["prompts"]["unexpected"] is False
    assert 0 <= a["speech"]["first_after_answer_s"] < 0.3
    e = a["quality"]["emodel"]
    assert e["method"] == "itu-t-g107" and 80 < e["r"] < 93.2 and e["loss_percent"] > 1.4
    assert a["quality"]["full_reference"] is None  # quality "off": not measured, so null

    no_audio = _record(tmp_path / "none", None)
    assert analyze_record(no_audio, zone=None, prompts_dir=None) is None
    doc = build_result(no_audio, Expectations(), ProbeIdentity("p1", "lab"))
    validate_result(doc)
    assert doc["analysis"] is None
