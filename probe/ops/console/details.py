"""Tables read out of documents the probe wrote: a result's measured values, a probe's health.

Nothing is computed or filled in here: a value the document holds is shown with the method it
names (its sibling ``method`` field, else the result schema's own description of the field), and
a null is shown as "not measured" — never as 0 or a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from probe.results.document import result_schema

#: The parts of a result that hold measurements, in reading order: (document path, whether to
#: descend into nested objects).  Identity and bookkeeping (ids, file paths, IMEI) stay out.
SECTIONS: tuple[tuple[str, ...], ...] = (
    ("timings_ms",),
    ("rtp",),
    ("analysis",),
    ("analysis", "level"),
    ("analysis", "speech"),
    ("analysis", "quality", "emodel"),
    ("analysis", "quality", "full_reference"),
    ("audio",),
    ("modem",),
    ("line",),
)
SKIP = {"method", "file", "version", "imei", "imsi", "firmware", "manufacturer", "model",
        "profile", "recovery", "segments", "tones", "dtmf", "prompts", "quality", "level",
        "speech", "timings_ms", "registration", "zone", "candidates", "error"}
UNITS = (("_ms", "ms"), ("_s", "s"), ("_dbfs", "dBFS"), ("_dbm", "dBm"), ("_db", "dB"),
         ("_percent", "%"), ("_hz", "Hz"), ("_volts", "V"), ("_vrms", "V rms"))


@dataclass(frozen=True)
class Measure:
    name: str
    value: Any  # None: not measured
    unit: str
    method: str  # the field's own method or description; "" when only the section says


@dataclass(frozen=True)
class Section:
    path: str
    description: str  # what the schema says about the whole part
    measures: list[Measure]  # empty: the part is null in the document (not measured)


def measures(doc: Mapping[str, Any]) -> list[Section]:
    out: list[Section] = []
    for path in SECTIONS:
        node, schema = _at(doc, path), _schema_at(path)
        if node is not None and not isinstance(node, dict):
            continue
        rows = [] if node is None else _rows(node, schema, path)
        out.append(Section(".".join(path), _describe(schema), rows))
    return out


def _rows(node: dict[str, Any], schema: dict[str, Any], path: tuple[str, ...]
          ) -> list[Measure]:
    method = node.get("method") if isinstance(node.get("method"), str) else ""
    rows = []
    for key, value in node.items():
        if key in SKIP or isinstance(value, dict | list):
            continue
        field = _properties(schema).get(key, {})
        # A key names its unit (jitter_max_ms), or its section does (timings_ms.ring_duration).
        rows.append(Measure(key, value, _unit(key) or _unit(path[-1]),
                            method or _describe(field)))
    return rows


def checks(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = (doc.get("expectations") or {}).get("checks") or []
    return [c for c in found if isinstance(c, dict)]


def _at(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


@cache
def _schema() -> dict[str, Any]:
    return result_schema()


def _schema_at(path: tuple[str, ...]) -> dict[str, Any]:
    node: dict[str, Any] = _schema()
    for key in path:
        node = _properties(node).get(key, {})
    return node


def _properties(node: dict[str, Any]) -> dict[str, Any]:
    """The ``properties`` of a schema node, looking through ``oneOf: [null, {...}]``."""
    if "properties" in node:
        return node["properties"]
    for option in node.get("oneOf") or node.get("anyOf") or []:
        if isinstance(option, dict) and "properties" in option:
            return option["properties"]
    return {}


def _describe(node: dict[str, Any]) -> str:
    if isinstance(node.get("description"), str):
        return node["description"]
    for option in node.get("oneOf") or []:
        if isinstance(option, dict) and isinstance(option.get("description"), str):
            return option["description"]
    return ""


def _unit(key: str) -> str:
    for suffix, unit in UNITS:
        if key.endswith(suffix):
            return unit
    return ""


# --------------------------------------------------------------------------- probe health


@dataclass(frozen=True)
class Fact:
    label: str
    value: Any  # None: the probe did not report it
    warn: bool = False


@dataclass(frozen=True)
class ChannelFacts:
    name: str
    state: str | None
    error: str | None
    last_call: Any
    last_success: Any
    registration: Any
    modem: dict[str, Any] | None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def health_facts(health: Mapping[str, Any] | None) -> list[Fact]:
    """The key facts of the probe's latest health report (``hotline-probe/v1/<id>/health``)."""
    if not isinstance(health, Mapping):
        return []
    outbox, status = _dict(health.get("outbox")), _dict(health.get("status"))
    versions, line = _dict(health.get("versions")), health.get("line")
    faults = [str(f) for f in status.get("faults") or []]
    out = [
        Fact("Outbox", _outbox(outbox), warn=bool(outbox.get("count"))),
        Fact("Clock synchronised", health.get("clock_synced"),
             warn=health.get("clock_synced") is False),
        Fact("Uptime", _uptime(health.get("uptime_s"))),
        Fact("Own faults", ", ".join(faults) if faults
             else ("—" if status.get("ok") is True else None), warn=bool(faults)),
    ]
    if isinstance(line, dict):
        out.append(Fact("Line", " · ".join(str(x) for x in (
            line.get("state"), _with(line.get("dc_volts"), "V"), line.get("fault"))
            if x is not None), warn=bool(line.get("fault"))))
    out.append(Fact("Versions", " · ".join(f"{k} {v}" for k, v in versions.items()) or None))
    return out


def channel_facts(health: Mapping[str, Any] | None) -> list[ChannelFacts]:
    channels = _dict(_dict(dict(health or {})).get("channels"))
    out = []
    for name, raw in sorted(channels.items()):
        c = _dict(raw)
        modem = c.get("modem") if isinstance(c.get("modem"), dict) else None
        out.append(ChannelFacts(str(name), c.get("state"), c.get("error"), c.get("last_call"),
                                c.get("last_success"), c.get("registration"), modem))
    return out


def _outbox(outbox: dict[str, Any]) -> str | None:
    if not outbox:
        return None
    # The report's own keys: count (results waiting), bytes, then the troubles if any.
    parts = [f"count {outbox.get('count')}", f"bytes {outbox.get('bytes')}"]
    parts += [f"{key} {outbox[key]}" for key in ("in_flight", "dropped", "recordings_dropped",
                                                  "refused") if outbox.get(key)]
    return " · ".join(parts)


def _uptime(seconds: Any) -> str | None:
    if not isinstance(seconds, int | float):
        return None
    s = int(seconds)
    return f"{s // 86400} d {s % 86400 // 3600} h {s % 3600 // 60} min"


def _with(value: Any, unit: str) -> str | None:
    return None if value is None else f"{value} {unit}"
