"""The result contract: the shipped JSON Schema, what build_result makes, and `probe schema`."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import wave
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from probe.config.model import Expectations, ProbeIdentity
from probe.results.document import build_result, result_schema, rfc3339, validate_result
from probe.results.measure import Outcome, classify, judge, timings
from probe.results.timeline import CallRecord, Ev, RtpStats
from tests.records import add_events

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "probe" / "schema" / "result-v1.json"
PROBE = ProbeIdentity(id="branch-017", site="Lyon Part-Dieu")
MONO = 7_000_000_000_000
WALL = 1_795_691_399_123_456_789  # 2026-11-26T11:09:59.123456789Z
RESULT_ID = "0b6a3f3e-7c1d-4d0e-9a51-5d2b8f6c9e10"


def at(ms: float) -> int:
    return MONO + round(ms * 1_000_000)


def sip_record(*events: tuple[Any, ...], rtp: RtpStats | None = None,
               audio: Path | None = None) -> CallRecord:
    r = CallRecord(channel="sip", target="support", destination="sip:3900@pbx.example.com",
                   wall_ns=WALL, mono_ns=MONO, rtp=rtp, audio_path=audio)
    r.facts["pjproject"] = "2.15.1"
    return add_events(r, events, at)


def write_wav(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * round(8000 * seconds))
    return path


RTP = RtpStats(codec="PCMU/8000", packets_received=98, packets_lost=2, packets_discarded=0,
               packets_reordered=1, packets_duplicated=0, jitter_mean_us=1250,
               jitter_max_us=4000, packets_sent=100, rtt_mean_us=None)
NET = {"from_network": True, "call_id": "abc@probe"}
LOCAL = {"from_network": False}


def answered_record(tmp_path: Path) -> CallRecord:
    return sip_record(
        (0, Ev.DIAL), (250, Ev.PROGRESS, 183, "Session Progress"), (250.3, Ev.EARLY_MEDIA),
        (1500, Ev.ANSWER, 200, "OK"), (1500.4, Ev.MEDIA_START), (2000, Ev.DTMF, None, "1"),
        (3500, Ev.HANGUP, None, "hold_done"), (3500.2, Ev.END, 200, "OK", NET),
        rtp=RTP, audio=write_wav(tmp_path / "call.wav", 3.25))


RECORDS: dict[str, Callable[[Path], CallRecord]] = {
    "answered": answered_record,
    "busy": lambda _: sip_record((0, Ev.DIAL), (200, Ev.PROGRESS, 180, "Ringing"),
                                 (900, Ev.END, 486, "Busy Here", NET)),
    "auth_failed": lambda _: sip_record(
        (0, Ev.DIAL), (3, Ev.CHALLENGE, 401, None), (3, Ev.DIAL),
        (6, Ev.END, 403, "Forbidden", NET)),
    "no_answer": lambda _: sip_record(
        (0, Ev.DIAL), (200, Ev.PROGRESS, 180, "Ringing"), (30200, Ev.HANGUP, None, "max_ring"),
        (30201, Ev.END, 487, "Request Terminated", NET)),
    "unreachable": lambda _: sip_record(
        (0, Ev.DIAL), (6000, Ev.HANGUP, None, "no_progress"),
        (6000.5, Ev.END, 487, "Request Terminated", LOCAL)),
    "failed": lambda _: sip_record((0, Ev.END, None, "Invalid URI", LOCAL)),
    "no_rtp": lambda tmp: sip_record(
        (0, Ev.DIAL), (100, Ev.ANSWER, 200, "OK"), (100.2, Ev.MEDIA_START),
        (1100, Ev.REMOTE_HANGUP), (1100.1, Ev.END, 200, "OK", NET),
        rtp=RtpStats("PCMU/8000", 0, 0, 0, 0, 0, 0, 0, 50, None),
        audio=write_wav(tmp / "silent.wav", 0)),
}


def built(tmp_path: Path, kind: str = "answered", **expect: Any) -> dict[str, Any]:
    return build_result(RECORDS[kind](tmp_path), Expectations(**expect), PROBE,
                        result_id=RESULT_ID)


# ------------------------------------------------------------------------------- the schema


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(result_schema())


def test_shipped_schema_is_the_package_resource() -> None:
    text = (resources.files("probe") / "schema" / "result-v1.json").read_text()
    assert json.loads(text) == json.loads(SCHEMA_FILE.read_text())


def _enum(*path: str | int) -> list[Any]:
    node: Any = result_schema()
    for key in path:
        node = node[key]
    return node["enum"]


def test_outcome_enum_is_exactly_the_outcomes() -> None:
    enum = _enum("properties", "outcome")
    assert len(enum) == len(set(enum))
    assert sorted(enum) == sorted(str(o) for o in Outcome)


def test_event_enum_is_exactly_the_timeline_vocabulary() -> None:
    enum = _enum("properties", "timeline", "items", "properties", "event")
    assert len(enum) == len(set(enum))
    assert sorted(enum) == sorted(str(e) for e in Ev)


def test_hangup_reasons_used_by_the_sip_dialer_are_in_the_schema() -> None:
    enum = _enum("properties", "sip", "oneOf", 1, "properties", "hangup_reason")
    source = (ROOT / "probe" / "dial" / "sip.py").read_text()
    reasons = set(re.findall(r'\bwhy = "(\w+)"', source))
    assert {"max_ring", "no_progress", "hold_done"} <= reasons
    assert reasons <= set(enum)
    assert None in enum


def test_check_names_made_by_judge_are_in_the_schema(tmp_path: Path) -> None:
    enum = result_schema()["properties"]["expectations"]["properties"]["checks"]["items"][
        "properties"]["check"]["enum"]
    names = set()
    heard = {"tones": [{"kind": "sit", "sit_code": "IC", "start_s": 0.4, "sit_meaning": None}]}
    for make in RECORDS.values():
        r = make(tmp_path)
        for analysis in (None, heard):
            names |= {c.check for c in judge(classify(r), timings(r), r, Expectations(),
                                             analysis).checks}
    assert names == {"answered", "post_dial_delay_ms", "ring_duration_ms", "media_received",
                     "no_special_information_tone"}
    assert names <= set(enum)


# ------------------------------------------------------------------------------- built results


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_built_results_validate(tmp_path: Path, kind: str) -> None:
    doc = built(tmp_path, kind)
    validate_result(doc)
    assert doc["outcome"] == ("answered" if kind == "no_rtp" else kind)
    json.dumps(doc, allow_nan=False)  # plain JSON, no NaN/Infinity


def test_built_answered_result_fields(tmp_path: Path) -> None:
    doc = built(tmp_path)
    assert doc["id"] == RESULT_ID
    assert (doc["probe_id"], doc["site"], doc["target"], doc["channel"]) == (
        "branch-017", "Lyon Part-Dieu", "support", "sip")
    assert doc["started_at"] == "2026-11-26T11:09:59.123Z"  # wall clock at the INVITE
    assert doc["ended_at"] == "2026-11-26T11:10:02.623Z"  # + 3500.2 ms
    assert doc["timings_ms"] == {"post_dial_delay": 250, "time_to_answer": 1500,
                                 "ring_duration": 1250, "talk_duration": 2000,
                                 "call_duration": 3500}
    assert doc["expectations"]["met"] is True
    sip = doc["sip"]
    assert (sip["final_code"], sip["attempts"], sip["provisional"], sip["early_media"]) == (
        200, 1, [183], True)
    assert (sip["hangup_reason"], sip["ended_by"], sip["call_id"]) == (
        "hold_done", "probe", "abc@probe")
    assert doc["rtp"]["loss_ratio"] == 0.02
    assert doc["rtp"]["jitter_mean_ms"] == 1.25
    assert doc["audio"] == {"file": str(tmp_path / "call.wav"), "duration_ms": 3250,
                            "early_media_at_ms": 250.3}
    assert [(e["at_ms"], e["event"]) for e in doc["timeline"]][:3] == [
        (0.0, "dial"), (250.0, "progress"), (250.3, "early_media")]
    assert doc["versions"]["pjproject"] == "2.15.1"


def test_built_result_of_a_call_never_placed(tmp_path: Path) -> None:
    doc = built(tmp_path, "failed")
    assert doc["started_at"] == doc["ended_at"]
    assert doc["timings_ms"] == dict.fromkeys(doc["timings_ms"])
    assert doc["sip"]["attempts"] == 0
    assert doc["rtp"] is None and doc["audio"] is None


def test_result_ids_are_fresh_uuids(tmp_path: Path) -> None:
    r = RECORDS["busy"](tmp_path)
    a = build_result(r, Expectations(), PROBE)
    b = build_result(r, Expectations(), PROBE)
    assert a["id"] != b["id"]
    validate_result(a)
    validate_result(b)


# ------------------------------------------------------------------------------- tampering


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def _set(*path_and_value: Any) -> Callable[[dict[str, Any]], None]:
    *path, value = path_and_value

    def mutate(d: dict[str, Any]) -> None:
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


TAMPERED: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown top-level key": _set("colour", "blue"),
    "unknown key in timings": _set("timings_ms", "setup", 3),
    "unknown key in sip": _set("sip", "via", "x"),
    "unknown key in rtp": _set("rtp", "mos", 4.2),
    "unknown key in a timeline event": _set("timeline", 0, "detail", {}),
    "bad outcome": _set("outcome", "ok"),
    "outcome in capitals": _set("outcome", "ANSWERED"),
    "bad event": _set("timeline", 0, "event", "ring"),
    "bad channel": _set("channel", "pstn"),
    "bad check name": _set("expectations", "checks", 0, "check", "mos"),
    "negative timing": _set("timings_ms", "post_dial_delay", -1),
    "fractional timing": _set("timings_ms", "post_dial_delay", 250.5),
    "timing as string": _set("timings_ms", "time_to_answer", "1500"),
    "wrong schema version": _set("schema_version", 2),
    "wrong schema id": _set("schema", "https://example.com/other.json"),
    "uuid in capitals": _set("id", RESULT_ID.upper()),
    "not a uuid": _set("id", "1234"),
    "final code out of range": _set("sip", "final_code", 99),
    "loss ratio above 1": _set("rtp", "loss_ratio", 1.5),
    "met is not a boolean": _set("expectations", "met", "yes"),
    "time without milliseconds": _set("started_at", "2026-11-26T11:09:59Z"),
    "time with microseconds": _set("started_at", "2026-11-26T11:09:59.123456Z"),
    "time with an offset": _set("started_at", "2026-11-26T11:09:59.123+00:00"),
    "time without zone": _set("ended_at", "2026-11-26T11:09:59.123"),
    "time with a space": _set("ended_at", "2026-11-26 11:09:59.123Z"),
    "time with lowercase z": _set("ended_at", "2026-11-26T11:09:59.123z"),
    "time as a number": _set("started_at", 1795691399123),
    "bad probe id": _set("probe_id", "branch/017"),
    "missing sip field": lambda d: d["sip"].pop("attempts"),
    "missing timing": lambda d: d["timings_ms"].pop("ring_duration"),
}


@pytest.mark.parametrize("mutation", sorted(TAMPERED))
def test_tampered_documents_fail_validation(tmp_path: Path, mutation: str) -> None:
    doc = copy.deepcopy(built(tmp_path))
    validate_result(doc)
    TAMPERED[mutation](doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_result(doc)


@pytest.mark.parametrize("field", result_schema()["required"])
def test_every_required_field_is_required(tmp_path: Path, field: str) -> None:
    doc = built(tmp_path)
    _drop(field)(doc)
    with pytest.raises(jsonschema.ValidationError, match=re.escape(repr(field))):
        validate_result(doc)


# ------------------------------------------------------------------------------- rfc3339


@pytest.mark.parametrize(("wall_ns", "text"), [
    (0, "1970-01-01T00:00:00.000Z"),
    (WALL, "2026-11-26T11:09:59.123Z"),  # sub-millisecond digits are cut, not rounded up
    (1_795_691_399_999_000_000, "2026-11-26T11:09:59.999Z"),
    (1_795_691_399_000_400_000, "2026-11-26T11:09:59.000Z"),
    (1_795_691_399_050_000_000, "2026-11-26T11:09:59.050Z"),
    (951_782_400_000_000_000, "2000-02-29T00:00:00.000Z"),
])
def test_rfc3339_is_utc_with_milliseconds(wall_ns: int, text: str) -> None:
    assert rfc3339(wall_ns) == text
    pattern = result_schema()["$defs"]["time"]["pattern"]
    assert re.fullmatch(pattern, text)


# ------------------------------------------------------------------------------- probe schema


def test_probe_schema_prints_the_shipped_schema() -> None:
    proc = subprocess.run([sys.executable, "-m", "probe", "schema"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(printed)
