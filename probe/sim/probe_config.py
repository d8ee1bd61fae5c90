"""Probe configuration files for the stand-ins (tests, benchmarks, ``make demo``), written
from plain dicts.

    write_config(tmp_path, targets=[sip_target("support", hotline.uri, hold_s=1)],
                 mqtt=broker_section(broker))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LOOPBACK_SIP = {"local_address": "127.0.0.1", "local_port": 0, "rtp_port": 0}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | list | tuple):
        return json.dumps(list(value) if isinstance(value, tuple) else value)  # valid TOML
    return repr(value)


def render(doc: dict[str, Any]) -> str:
    """TOML for the shapes a probe configuration has: scalars, string arrays, tables, nested
    tables and arrays of tables (``targets``)."""
    lines: list[str] = []

    def table(name: str, body: dict[str, Any], header: str) -> None:
        lines.append(header)
        nested = []
        for key, value in body.items():
            if isinstance(value, dict):
                nested.append((key, value))
            elif value is not None:
                lines.append(f"{key} = {toml_value(value)}")
        for key, value in nested:
            table(f"{name}.{key}", value, f"[{name}.{key}]")

    for name, body in doc.items():
        if isinstance(body, list):
            for item in body:
                table(name, item, f"[[{name}]]")
        elif body is not None:
            table(name, body, f"[{name}]")
    return "\n".join(lines) + "\n"


def broker_section(broker: Any, **extra: Any) -> dict[str, Any]:
    return {"host": broker.host, "port": broker.port, **extra}


def sip_target(name: str, uri: str, *, interval_s: int = 30, **expect: Any) -> dict[str, Any]:
    return {"name": name, "sip_uri": uri, "channels": ["sip"], "interval_s": interval_s,
            "expect": expect}


def write_config(directory: Path, *, targets: list[dict[str, Any]], probe_id: str = "p1",
                 site: str = "lab", name: str = "probe.toml", probe: dict[str, Any] | None = None,
                 mqtt: dict[str, Any] | None = None, sip: dict[str, Any] | None = None,
                 header: str = "", **sections: Any) -> Path:
    """A configuration in ``directory`` (state under ``directory/state``); a [sip] section on
    loopback whenever a target uses SIP and ``sip`` does not say otherwise."""
    uses_sip = any("sip" in t.get("channels", ()) for t in targets)
    doc = {
        "probe": {"id": probe_id, "site": site, "state_dir": str(directory / "state"),
                  **(probe or {})},
        "mqtt": mqtt,
        "sip": {**LOOPBACK_SIP, **(sip or {})} if uses_sip or sip else None,
        **sections,
        "targets": targets,
    }
    path = directory / name
    path.write_text(header + render(doc))
    return path
