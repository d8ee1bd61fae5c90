"""The analysis of real SIP test calls: SIPp plays the stand-in hotline (µ-law RTP: 425 Hz
ringback as early media after a 183, then the spoken greeting), ``probe call --json`` records
it and puts what it heard into the result."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from probe.audio.prompts import add_prompt
from probe.sim.hotline import GREETING_WAV, HotlineBehaviour
from tests.test_sip_calls import run_scenario

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp not installed")]


def test_real_call_is_heard(tmp_path: Path) -> None:
    add_prompt(tmp_path / "state" / "prompts", "welcome", GREETING_WAV)
    run = run_scenario(tmp_path, HotlineBehaviour(pdd_ms=200, ring_ms=6000, provisional=183),
                       expect={"hold_s": 5, "max_ring_s": 10}, target={"zone": "DE"})
    doc = run.doc
    assert doc is not None and doc["outcome"] == "answered"
    a = doc["analysis"]
    assert a is not None, run.proc.stderr[-2000:]
    ring = [t for t in a["tones"] if t["kind"] == "ringback"]
    assert ring and ring[0]["country"] == "DE" and ring[0]["cycles"] >= 1, a["tones"]
    assert a["answer_at_s"] == pytest.approx(6.0, abs=0.3)
    assert a["speech"]["present"] and a["speech"]["first_after_answer_s"] < 1.0
    assert a["prompts"]["greeting"] == "welcome", a["prompts"]
    assert a["dead_air"] is False and a["one_way_audio"] is False
    e = a["quality"]["emodel"]
    assert e["method"].startswith("itu-t-g107") and e["mos"] > 4.0, e
    fr = a["quality"]["full_reference"]  # ViSQOL on the matched greeting, inside `probe call`
    assert fr["prompt"] == "welcome" and fr["mos"] is not None and fr["mos"] > 3.5, fr


def test_answered_without_rtp_is_one_way_audio(tmp_path: Path) -> None:
    run = run_scenario(tmp_path, HotlineBehaviour(ring_ms=300, audio=None, early_audio=None),
                       expect={"hold_s": 2, "require_media": False})
    doc = run.doc
    assert doc is not None and doc["outcome"] == "answered"
    a = doc["analysis"]
    if a is None:  # no RTP at all: pjsua wrote no recording
        assert doc["audio"] is None or doc["audio"]["duration_ms"] in (None, 0)
    else:
        assert a["one_way_audio"] is True, a
