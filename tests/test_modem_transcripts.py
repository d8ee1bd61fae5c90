"""Every modem family x answered / busy / no answer, from transcripts written from the public
AT manuals (tests/data/modem-transcripts/, each naming the manual and section in its header),
replayed by the emulator behind a real pseudo-terminal to the real dialer and AT layer.

What the transcripts hold is the vendors' word (the URCs and state numbers of Telit ``#ECAM``,
u-blox ``+UCALLSTAT``, Wavecom ``+WIND`` with its dial held until the answer, Quectel EC200
``+QIND: "ccinfo"``, SIMCom A7670 ``VOICE CALL: BEGIN/END``, ZTE's and older Huawei firmware's
unsolicited ``CONNECT`` and ``HANGUP``, and a modem no profile knows dialling as V.250 allows:
the generic profile, family ``generic`` with its own identity); each case checks that the
probe picks the family's profile from AT+CGMI/+CGMM/ATI, reaches the scenario's outcome,
stamps alerting and answer on the lines that said so, sends every command the session
expects, never a character while a dial is pending, and leaves the modem idle.
"""

from __future__ import annotations

import gc
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from probe.config.model import Expectations, ModemConfig, ProbeIdentity
from probe.dial.modem import ModemDialer
from probe.results.document import build_result, result_schema
from probe.results.measure import classify
from probe.results.timeline import CallRecord, Ev
from probe.sim.modem import ModemEmulator
from probe.sim.transcript import ABORT, load, parse, transcripts

DIRECTORY = Path(__file__).resolve().parent / "data" / "modem-transcripts"
TRANSCRIPTS = list(transcripts(DIRECTORY))
EXPECT = Expectations(max_post_dial_delay_ms=2000, max_ring_s=1.0, hold_s=0.5,
                      require_media=False)
TOLERANCE_MS = 20.0
WORKERS = 4
VALIDATOR = jsonschema.Draft202012Validator(result_schema())


@dataclass
class Replayed:
    record: CallRecord
    marks: dict[str, int]
    received: list[tuple[int, str]]
    missing: list[str]
    unscripted: list[tuple[int, str]]


def replay(path: Path) -> Replayed:
    with ModemEmulator.replaying(path) as modem:
        config = ModemConfig(kind="gsm", port=modem.url, register_wait_s=1.0)
        with ModemDialer(config, poll_s=0.025, reopen_wait_s=0.5, sync_timeout_s=0.15,
                         sim_wait_s=2.0) as dialer:
            record = dialer.call("+33472000390", EXPECT, target="support",
                                 audio_path=path.with_suffix(".wav"))
        assert modem.replay is not None
        return Replayed(record, dict(modem.marks),
                        list(zip(modem.received_ns, modem.received, strict=True)),
                        modem.replay.missing(), list(modem.replay.unscripted))


@pytest.fixture(scope="module")
def replayed() -> dict[str, Future[Replayed]]:
    """Every transcript, :data:`WORKERS` at a time (each call mostly waits on its script)."""
    gc.collect()
    gc.disable()  # a full collection pauses every thread: the rig's pause, not the probe's
    try:
        pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="replay")
        futures = {p.name: pool.submit(replay, p) for p in TRANSCRIPTS}
        pool.shutdown(wait=True)
    finally:
        gc.enable()
    return futures


def test_every_family_has_its_three_scenarios_from_a_named_source() -> None:
    seen: dict[str, set[str]] = {}
    for path in TRANSCRIPTS:
        t = load(path)
        assert {"family", "scenario", "profile", "outcome"} <= set(t.headers), path.name
        source = " ".join(t.comments)
        assert "section" in source, f"{path.name}: the header names no manual section"
        seen.setdefault(t.family, set()).add(str(t.scenario))
    families = {"telit", "ublox", "wavecom", "ec200", "a76xx", "zte", "generic"}
    assert set(seen) >= families
    assert all(seen[f] >= {"answered", "busy", "no_answer"} for f in families), seen


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_transcript(path: Path, replayed: dict[str, Future[Replayed]]) -> None:
    t = load(path)
    lived = replayed[path.name].result()
    record, marks = lived.record, lived.marks
    facts = record.facts["modem"]
    assert facts["profile"] == t.headers["profile"]  # from AT+CGMI / +CGMM / ATI
    assert str(classify(record)) == t.headers["outcome"], facts
    assert lived.missing == [], f"the probe never sent {lived.missing}"
    dial = record.first(Ev.DIAL)
    assert dial is not None and "dial" in marks and "dial_final" in marks
    during = [c for ns, c in lived.received if marks["dial"] < ns < marks["dial_final"]]
    assert during == [], f"sent while the dial was pending: {during}"
    for kind, mark in ((Ev.PROGRESS, "alerting"), (Ev.ANSWER, "answer")):
        event = record.first(kind)
        if mark in marks:
            assert event is not None, (kind, record.events)
            error = (event.t_ns - marks[mark]) / 1e6
            assert abs(error) <= TOLERANCE_MS, (kind, error)
    if t.headers.get("ended_by") == "network":  # the far end hung up (HANGUP, NO CARRIER)
        assert record.has(Ev.REMOTE_HANGUP) and facts["ended_by"] == "network", record.events
    if t.headers["outcome"] == "no_answer" and "end" not in marks:
        assert record.first(Ev.HANGUP).reason == "max_ring"  # type: ignore[union-attr]
    doc = build_result(record, EXPECT, ProbeIdentity("test-probe", "Lab"))
    VALIDATOR.validate(doc)
    assert facts["idle_after"] is True


def test_a_held_dial_is_aborted_by_any_character_and_the_replay_says_so(tmp_path: Path
                                                                       ) -> None:
    """The replay's own rule, against V.250: a character while the dial is pending ends it,
    and what the dial still had to say (here its answer) is never written."""
    import os
    import select
    import time

    path = tmp_path / "held.txt"
    path.write_text("# family: generic\n+0.000 > ATD123;\n+0.300 < OK  {answer}\n")
    with ModemEmulator.replaying(path) as modem:
        fd = os.open(modem.url, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, b"ATD123;\r")
            time.sleep(0.1)
            os.write(fd, b"\r")  # the probe gives up
            time.sleep(0.4)
            out = b""
            while select.select([fd], [], [], 0.05)[0]:
                out += os.read(fd, 1024)
        finally:
            os.close(fd)
        assert modem.replay is not None
        assert modem.replay.unscripted[-1][1] == ABORT
    assert b"NO CARRIER" in out and b"OK" not in out.replace(b"ATD123;", b""), out
    assert "answer" not in modem.marks


@pytest.mark.parametrize(("text", "problem"), [
    ("+1.0 > AT\n+0.5 < OK\n", "time goes back"),
    ("1.0 > AT\n", "not '+<seconds>"),
])
def test_a_malformed_transcript_names_its_line(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse(text, "bad.txt")


def test_marks_and_headers_are_read() -> None:
    t = parse("# Telit manual, section #ECAM\n# family: telit\n"
              "+0.0 > ATD1;\n+0.4 < #ECAM: 0,2,1,,,  {alerting}\n", "x")
    assert t.family == "telit" and t.comments == ("Telit manual, section #ECAM",)
    assert t.lines[1].text == "#ECAM: 0,2,1,,," and t.lines[1].mark == "alerting"
