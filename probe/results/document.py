"""The result record: one JSON document per test call, following ``schema/result-v1.json``.

:func:`build_result` is a pure function of the call record, its measurement and the probe's
identity; the id is a fresh UUID so that consumers can de-duplicate what the outbox re-sends.
"""

from __future__ import annotations

import json
import platform
import uuid
import wave
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from probe import __version__
from probe.clock import rfc3339
from probe.config.model import Expectations, ProbeIdentity
from probe.results.measure import (
    Outcome,
    Timings,
    Verdict,
    classify,
    decide_outcome,
    judge,
    timings,
)
from probe.results.timeline import CallRecord, Ev

SCHEMA_ID = "https://hotline-probe.invalid/schema/result-v1.json"
SCHEMA_VERSION = 1


@cache
def result_schema() -> dict[str, Any]:
    text = (resources.files("probe") / "schema" / "result-v1.json").read_text()
    return json.loads(text)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = result_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_result(doc: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``doc`` breaks the result contract.

    (The validator is built once: checking the schema itself on every call cost ~60 ms.)"""
    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is not None:
        raise error


def build_result(record: CallRecord, expect: Expectations, probe: ProbeIdentity,
                 *, result_id: str | None = None, clock_synced: bool | None = None,
                 analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    outcome, evidence = decide_outcome(classify(record), record, analysis)
    t = timings(record)
    verdict = judge(outcome, t, record, expect, analysis)
    start = record.first(Ev.DIAL)
    end = record.first(Ev.END)
    t0 = start.t_ns if start else record.mono_ns
    doc: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "id": result_id or str(uuid.uuid4()),
        "probe_id": probe.id,
        "site": probe.site,
        "target": record.target,
        "channel": record.channel,
        "destination": record.destination,
        "started_at": rfc3339(record.wall_ns + t0 - record.mono_ns),
        "ended_at": rfc3339(record.wall_ns + (end.t_ns if end else t0) - record.mono_ns),
        # False: the wall clock was not NTP-synchronised, so started_at/ended_at may be wrong
        # (durations are not affected: they come from the monotonic clock).
        "clock_synced": clock_synced,
        "outcome": str(outcome),
        "outcome_evidence": {"decided_by": evidence.decided_by,
                             "signalled": str(evidence.signalled), "heard": evidence.heard},
        "expectations": _expectations(verdict),
        "timings_ms": _timings(t),
        "sip": _sip(record) if record.channel == "sip" else None,
        "modem": modem_facts(record) if record.channel != "sip" else None,
        "rtp": _rtp(record),
        "audio": _audio(record, t0),
        # what was heard (probe/audio): null when there was no recording to analyse
        "analysis": analysis,
        "diagnosis": None,  # filled in across channels: probe.diagnosis
        "line": None,  # the analog line as the board reads it (probe.board.line snapshot)
        "timeline": [
            {"at_ms": round((e.t_ns - t0) / 1e6, 1), "event": str(e.kind), "code": e.code,
             "reason": e.reason}
            for e in record.events
        ],
        "versions": {
            "probe": __version__,
            "python": platform.python_version(),
            "pjproject": record.facts.get("pjproject"),
        },
    }
    return doc


def hotline_ok(doc: dict[str, Any]) -> bool:
    return bool(doc["expectations"]["met"])


def _expectations(verdict: Verdict) -> dict[str, Any]:
    return {
        "met": verdict.met,
        "checks": [{"check": c.check, "met": c.met, "limit": c.limit, "measured": c.measured}
                   for c in verdict.checks],
    }


def _timings(t: Timings) -> dict[str, int | None]:
    return {
        "post_dial_delay": t.post_dial_delay_ms,
        "time_to_answer": t.time_to_answer_ms,
        "ring_duration": t.ring_duration_ms,
        "talk_duration": t.talk_duration_ms,
        "call_duration": t.call_duration_ms,
    }


def _sip(record: CallRecord) -> dict[str, Any]:
    end = record.first(Ev.END)
    hangup = record.first(Ev.HANGUP)
    ended_by: str | None
    if record.has(Ev.REMOTE_HANGUP):
        ended_by = "hotline"
    elif hangup is not None:
        ended_by = "probe"
    else:
        ended_by = "hotline" if end and end.detail.get("from_network") else None
    registration = record.facts.get("registration")
    return {
        "final_code": end.code if end else None,
        "final_reason": end.reason if end else None,
        "final_from_network": bool(end and end.detail.get("from_network")),
        "call_id": end.detail.get("call_id") if end else None,
        "attempts": sum(1 for e in record.events if e.kind == Ev.DIAL),
        "provisional": [e.code for e in record.events if e.kind == Ev.PROGRESS],
        "early_media": record.has(Ev.EARLY_MEDIA),
        "hangup_reason": hangup.reason if hangup else None,
        "ended_by": ended_by,
        "registration": registration,
    }


MODEM_FIELDS = (
    "profile", "manufacturer", "model", "firmware", "imei", "imsi", "sim", "registration_state",
    "operator", "access_technology", "signal_dbm", "ber", "rsrp_dbm", "rsrq_db", "call_progress",
    "answer_source", "through_connect_possible", "ringback_bursts", "dial_tone", "sit", "result",
    "cause", "cause_text", "cause_source", "end_duration_s", "ended_by", "dropped",
    "audio_source", "idle_after", "error", "through_connected", "port")


def modem_facts(record: CallRecord) -> dict[str, Any]:
    """The ``modem`` object: radio/line facts and the modem's own account of the call.

    IMEI/IMSI arrive masked from ``probe.at.parse.mask_identity``; the schema's pattern
    refuses a full one, so a regression cannot publish it."""
    facts = record.facts.get("modem") or {}
    doc: dict[str, Any] = {key: facts.get(key) for key in MODEM_FIELDS}
    registration = facts.get("registration")
    doc["registration"] = ({k: registration.get(k) for k in ("cs", "ps", "eps")}
                           if isinstance(registration, dict) else None)
    doc["dropped"] = bool(facts.get("dropped"))
    doc["through_connect_possible"] = bool(facts.get("through_connect_possible"))
    # Where the network may through-connect at ringback, the UART's answer is not proof:
    # null until audio analysis confirms it, true/false once it has.
    doc["answer_confirmed"] = facts.get("answer_confirmed",
                                        None if doc["through_connect_possible"] else
                                        (True if record.has(Ev.ANSWER) else None))
    doc["audio_frames"] = record.facts.get("audio_frames")
    doc["recovery"] = list(facts.get("recovery") or [])
    return doc


def _rtp(record: CallRecord) -> dict[str, Any] | None:
    r = record.rtp
    if r is None:
        return None
    expected = r.packets_received + r.packets_lost
    return {
        "codec": r.codec,
        "packets_received": r.packets_received,
        "packets_lost": r.packets_lost,
        "loss_ratio": round(r.packets_lost / expected, 4) if expected else None,
        "packets_discarded": r.packets_discarded,
        "packets_reordered": r.packets_reordered,
        "packets_duplicated": r.packets_duplicated,
        "jitter_mean_ms": round(r.jitter_mean_us / 1000, 2),
        "jitter_max_ms": round(r.jitter_max_us / 1000, 2),
        "packets_sent": r.packets_sent,
        "rtt_mean_ms": round(r.rtt_mean_us / 1000, 2) if r.rtt_mean_us is not None else None,
    }


def _audio(record: CallRecord, t0: int) -> dict[str, Any] | None:
    path = record.audio_path
    if path is None:
        return None
    early = record.first(Ev.EARLY_MEDIA)
    return {
        "file": str(path),
        "duration_ms": wav_duration_ms(path),
        "early_media_at_ms": round((early.t_ns - t0) / 1e6, 1) if early else None,
    }


def wav_duration_ms(path: Path) -> int | None:
    try:
        with wave.open(str(path), "rb") as w:
            return round(w.getnframes() * 1000 / w.getframerate())
    except (OSError, wave.Error, EOFError):
        return None


OUTCOMES = [str(o) for o in Outcome]
EVENTS = [str(e) for e in Ev]
