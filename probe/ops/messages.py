"""What arrives on the broker, checked and turned into typed records — or refused with a reason.

Pure functions: a topic, its payload bytes and MQTT 5 properties in; a :class:`ResultIn`,
:class:`StatusIn`, :class:`HealthIn`, :class:`ReplyIn`, :class:`RecordingIn` or a
:class:`Rejected` out.  Nothing here raises for bad input: a message that is too big, not JSON,
nested to crash a parser, not valid against the result schema the probe package ships, or that
claims another probe's identity than its topic (spoofing) becomes a ``Rejected`` that ingest puts
in quarantine and counts.

The vote: ops decides across sites, so each result is reduced to what it says about the hotline:

``ok``        the call met the target's expectations
``degraded``  it met them, but the probe judged the hotline degraded (poor audio, slow, ...)
``fail``      it did not, and the probe saw no fault of its own on that channel
``local``     the probe's own line, modem, SIM, network or the probe itself stopped the call:
              says nothing about the hotline, kept out of the vote (ThousandEyes' "local
              problems" agents)
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jsonschema_rs

from probe.diagnosis.rules import CAUSES, Scope
from probe.results.document import result_schema
from probe.uplink.commands import nesting

TOPIC_RE = re.compile(r"^hotline-probe/v1/(?P<probe>[A-Za-z0-9._-]{1,64})/"
                      r"(?P<leaf>result|status|health|cmd-reply|recording)$")

# Outcomes that are the probe's own failure to place the call, whatever the diagnosis says.
LOCAL_OUTCOMES = frozenset({"failed", "aborted", "no_sim", "not_registered", "modem_error",
                            "no_dial_tone"})
MAX_DEPTH = 64  # deeper JSON is hostile: no result document nests more than ~8 levels
RECORDING_TYPES = frozenset({"audio/flac", "audio/wav", "audio/x-wav", "audio/ogg"})


@dataclass(frozen=True)
class Rejected:
    topic: str
    probe_id: str | None
    reason: str
    payload: bytes


@dataclass(frozen=True)
class ResultIn:
    id: str
    probe_id: str
    site: str | None
    target: str
    channel: str
    path: str
    started_at: dt.datetime
    outcome: str
    met: bool
    vote: str
    cause: str | None
    verdict: str | None
    final: str | None  # "503 Service Unavailable", "cause 17 User busy": the network's word
    cause_detail: dict[str, Any]  # the probe's evidence for its cause (placeholders of its text)
    pdd_ms: int | None
    answer_ms: int | None
    mos: float | None
    document: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class StatusIn:
    probe_id: str
    state: str  # online / offline
    boot: int | None
    reason: str | None


@dataclass(frozen=True)
class HealthIn:
    probe_id: str
    site: str | None
    health: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class ReplyIn:
    probe_id: str
    correlation_id: str
    reply: dict[str, Any]


@dataclass(frozen=True)
class RecordingIn:
    probe_id: str
    result_id: str
    content_type: str
    data: bytes = field(repr=False)


Parsed = ResultIn | StatusIn | HealthIn | ReplyIn | RecordingIn | Rejected


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int = 1_048_576
    max_recording_bytes: int = 2_097_152


def parse_message(topic: str, payload: bytes, properties: dict[str, Any] | None = None,
                  limits: Limits = Limits()) -> Parsed | None:
    """Classify one message.  None for what is not ours to store (an empty retained payload
    that clears a topic)."""
    properties = properties or {}
    match = TOPIC_RE.match(topic)
    if match is None:
        return Rejected(topic, None, "unexpected topic", payload[:4096])
    probe_id, leaf = match["probe"], match["leaf"]
    if leaf == "recording":
        return _recording(topic, probe_id, payload, properties, limits)
    if not payload:
        return None if leaf in ("status", "health") else Rejected(topic, probe_id,
                                                                  "empty payload", b"")
    if len(payload) > limits.max_payload_bytes:
        return Rejected(topic, probe_id, f"oversized: {len(payload)} bytes "
                        f"(limit {limits.max_payload_bytes})", payload[:4096])
    doc = _json(payload)
    if isinstance(doc, str):
        return Rejected(topic, probe_id, doc, payload[:4096])
    if not isinstance(doc, dict):
        return Rejected(topic, probe_id, "not a JSON object", payload[:4096])
    claimed = doc.get("probe_id")
    if claimed is not None and claimed != probe_id:
        return Rejected(topic, probe_id, f"spoofed: payload probe_id {str(claimed)[:64]!r} "
                        f"on {probe_id!r}'s topic", payload[:4096])
    if leaf == "result":
        return _result(topic, probe_id, doc, payload)
    if leaf == "status":
        return _status(topic, probe_id, doc, payload)
    if leaf == "health":
        site = doc.get("site")
        return HealthIn(probe_id, site if isinstance(site, str) else None, doc)
    correlation = properties.get("correlation_data")
    if not isinstance(correlation, bytes | str) or not correlation:
        return Rejected(topic, probe_id, "reply without correlation data", payload[:4096])
    correlation_id = correlation.decode("utf-8", "replace") if isinstance(
        correlation, bytes) else correlation
    return ReplyIn(probe_id, correlation_id[:36], doc)


def _json(payload: bytes) -> Any:
    """The decoded document, or the reason it is not one (a str)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    if nesting(text, stop_above=MAX_DEPTH) > MAX_DEPTH:
        return f"hostile: JSON nested deeper than {MAX_DEPTH}"
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        return f"not JSON: {str(err)[:120]}"


@cache
def _validator() -> Any:
    """The result schema compiled once by jsonschema-rs (MIT; Draft 2020-12): about 3 µs a
    document where the pure-Python jsonschema takes 0.6 ms — at a thousand results a second
    that was half of ingest.  Formats are annotations, as in the probe's own validator."""
    return jsonschema_rs.validator_for(result_schema(), validate_formats=False)


def _result(topic: str, probe_id: str, doc: dict[str, Any], payload: bytes) -> Parsed:
    validator = _validator()
    if not validator.is_valid(doc):
        error = next(iter(validator.iter_errors(doc)))
        where = "/".join(str(p) for p in error.instance_path) or "(document)"
        return Rejected(topic, probe_id, f"schema: {where}: {error.message[:200]}",
                        payload[:4096])
    try:
        started = dt.datetime.fromisoformat(doc["started_at"].replace("Z", "+00:00"))
        uuid.UUID(doc["id"])
    except ValueError as err:
        return Rejected(topic, probe_id, f"schema: {err}", payload[:4096])
    if started.tzinfo is None:
        return Rejected(topic, probe_id, "schema: started_at has no time zone", payload[:4096])
    channel = doc["channel"]
    vote, cause = vote_of(doc)
    cause_detail = next((dict(c.get("evidence") or {}) for c in
                         (doc.get("diagnosis") or {}).get("causes") or []
                         if c.get("code") == cause), {})
    timings = doc.get("timings_ms") or {}
    diagnosis = doc.get("diagnosis") or {}
    return ResultIn(
        id=doc["id"], probe_id=probe_id, site=doc.get("site"), target=doc["target"],
        channel=channel, path=path_of(doc), started_at=started.astimezone(dt.UTC),
        outcome=doc["outcome"], met=bool(doc["expectations"]["met"]), vote=vote, cause=cause,
        verdict=diagnosis.get("verdict"), final=final_of(doc), cause_detail=cause_detail,
        pdd_ms=timings.get("post_dial_delay"), answer_ms=timings.get("time_to_answer"),
        mos=_mos(doc), document=doc)


def path_of(doc: dict[str, Any]) -> str:
    """The way this call reached the hotline: ``sip``, ``analog`` or ``gsm:<operator>``."""
    channel = doc["channel"]
    if channel != "gsm":
        return channel
    operator = (doc.get("modem") or {}).get("operator") or "unknown operator"
    return f"gsm:{str(operator)[:60]}"


def final_of(doc: dict[str, Any]) -> str | None:
    """How the network ended the call, as an engineer quotes it to a carrier."""
    sip, modem = doc.get("sip") or {}, doc.get("modem") or {}
    if sip.get("final_code") is not None:
        return f"{sip['final_code']} {sip.get('final_reason') or ''}".strip()[:80]
    if modem.get("cause") is not None:
        return f"cause {modem['cause']} {modem.get('cause_text') or ''}".strip()[:80]
    return str(modem["result"])[:80] if modem.get("result") else None


def vote_of(doc: dict[str, Any]) -> tuple[str, str | None]:
    """(vote, leading cause code) of one result: see the module docstring."""
    channel = doc["channel"]
    causes = [c for c in ((doc.get("diagnosis") or {}).get("causes") or [])
              if not c.get("channels") or channel in c["channels"]]
    local = [c["code"] for c in causes if c.get("scope") == Scope.PROBE.value]
    hotline = [c["code"] for c in causes if c.get("scope") in (Scope.HOTLINE.value,
                                                               Scope.PATH.value)]
    if doc["expectations"]["met"]:
        degraded = (doc.get("diagnosis") or {}).get("verdict") == "degraded" and hotline
        return ("degraded", hotline[0]) if degraded else ("ok", None)
    if doc["outcome"] in LOCAL_OUTCOMES or (local and not hotline):
        return "local", (local[0] if local else f"probe.{doc['outcome']}")
    return "fail", hotline[0] if hotline else _cause_of_outcome(doc["outcome"])


def _cause_of_outcome(outcome: str) -> str:
    """A cause code when the probe sent no diagnosis (an older probe, or diagnosis off)."""
    table = {"busy": "hotline.busy", "no_answer": "hotline.no_answer",
             "congestion": "carrier.congestion", "server_error": "hotline.server_error",
             "unavailable": "hotline.unavailable", "auth_failed": "config.auth_failed",
             "not_found": "config.number_not_found",
             "unassigned_number": "config.number_not_found", "rejected": "config.rejected",
             "unreachable": "network.sip_unreachable", "no_carrier": "carrier.path_failure",
             "answered": "hotline.no_media"}
    code = table.get(outcome, "hotline.unavailable")
    return code if code in CAUSES else "hotline.unavailable"


def _mos(doc: dict[str, Any]) -> float | None:
    quality = ((doc.get("analysis") or {}).get("quality") or {})
    for key in ("full_reference", "emodel"):  # a measured prompt beats the E-model estimate
        item = quality.get(key)
        if isinstance(item, dict) and isinstance(item.get("mos"), int | float):
            return float(item["mos"])
    return None


def _status(topic: str, probe_id: str, doc: dict[str, Any], payload: bytes) -> Parsed:
    state, boot, reason = doc.get("state"), doc.get("boot"), doc.get("reason")
    if state not in ("online", "offline"):
        return Rejected(topic, probe_id, "status: state must be online or offline",
                        payload[:4096])
    if boot is not None and (isinstance(boot, bool) or not isinstance(boot, int)):
        return Rejected(topic, probe_id, "status: boot must be an integer", payload[:4096])
    return StatusIn(probe_id, state, boot, str(reason)[:200] if reason is not None else None)


def _recording(topic: str, probe_id: str, payload: bytes, properties: dict[str, Any],
               limits: Limits) -> Parsed:
    if len(payload) > limits.max_recording_bytes:
        return Rejected(topic, probe_id, f"oversized recording: {len(payload)} bytes "
                        f"(limit {limits.max_recording_bytes})", payload[:256])
    content_type = str(properties.get("content_type") or "")
    if content_type not in RECORDING_TYPES:
        return Rejected(topic, probe_id, f"recording: content type {content_type[:40]!r} "
                        "is not audio/flac or audio/wav", payload[:256])
    result_id = dict(properties.get("user_properties") or []).get("result_id", "")
    try:
        result_id = str(uuid.UUID(result_id))
    except ValueError:
        return Rejected(topic, probe_id, "recording: no result_id user property",
                        payload[:256])
    if not payload:
        return Rejected(topic, probe_id, "recording: empty", b"")
    return RecordingIn(probe_id, result_id, content_type, payload)
