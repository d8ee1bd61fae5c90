"""The ops service's deployment files: examples/ops.toml, the systemd unit, the Grafana dashboard.

The example is the reference of ops.toml: it must load, and every key the pydantic model
declares must appear in it (walked from the model, so a new key cannot be forgotten).  The unit
must keep its hardening; the dashboard may only query metrics the service exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import types
import typing
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from probe.ops.config import OpsConfig, load_ops_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples/ops.toml"
UNIT = REPO / "deploy/systemd/hotline-probe-ops.service"
DASHBOARD = REPO / "deploy/grafana/hotline-probe-ops.json"
PROVISIONING = REPO / "deploy/grafana/hotline-probe-ops.yaml"

#: Every metric the service exports (probe/ops/metrics): the dashboard may use only these.
METRICS = {
    "hotline_ops_results_ingested_total",
    "hotline_ops_quarantined_total",
    "hotline_ops_ingest_lag_seconds",
    "hotline_ops_availability_ratio",
    "hotline_ops_pdd_ms_bucket",
    "hotline_ops_answer_ms_bucket",
    "hotline_ops_mos",
    "hotline_ops_open_incidents",
    "hotline_ops_probes",
    "hotline_ops_notifications",
}

#: A secret key may be written in any of its three forms.
SECRET_FORMS = {"password": ("password", "password_file", "password_env")}


# --------------------------------------------------------------------------- examples/ops.toml


def example_environ() -> dict[str, str]:
    """A value for every environment variable the example names (password_env)."""
    names = re.findall(r'^\s*password_env\s*=\s*"([^"]+)"', EXAMPLE.read_text(), re.M)
    return {name: f"value-of-{name}" for name in names}


def test_example_loads() -> None:
    config = load_ops_config(EXAMPLE, environ=example_environ())
    kinds = {(r.kind, r.format if r.kind == "webhook" else None) for r in config.receivers}
    assert kinds == {("webhook", "json"), ("webhook", "slack"), ("email", None),
                     ("alertmanager", None)}
    assert config.mqtt.tls is not None
    assert config.database.password is not None


def test_example_loads_with_secrets_missing_reports_them() -> None:
    from probe.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_ops_config(EXAMPLE, environ={})
    assert "HOTLINE_PROBE_OPS_DATABASE_PASSWORD" in str(err.value)


def example_keys() -> dict[str, set[str]]:
    """Section ("" for the top, "mqtt.tls", "receivers"...) -> the keys written in it, set or
    commented out (``# key = ...``).  Every [[receivers]] block adds to one set."""
    keys: dict[str, set[str]] = defaultdict(set)
    section = ""
    keys[section] = set()
    for line in EXAMPLE.read_text().splitlines():
        header = re.match(r"^\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$", line)
        if header:
            section = header.group(1)
            keys[section] |= set()
            continue
        key = re.match(r"^#?\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=", line)
        if key:
            keys[section].add(key.group(1))
    return keys


def models_in(annotation: typing.Any) -> list[type[BaseModel]]:
    """The pydantic models inside a field's annotation (``X | None``, ``tuple[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is typing.Annotated:
        return models_in(typing.get_args(annotation)[0])
    found = []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, tuple, list):
        for arg in typing.get_args(annotation):
            found.extend(models_in(arg))
    return found


def model_sections(model: type[BaseModel], section: str = "") -> dict[str, list[str]]:
    """Section -> the keys the model declares there, recursively."""
    out: dict[str, list[str]] = {section: []}
    for name, field in model.model_fields.items():
        nested = models_in(field.annotation)
        if nested:
            for sub in nested:
                for path, names in model_sections(
                        sub, f"{section}.{name}" if section else name).items():
                    out.setdefault(path, []).extend(names)
        else:
            out[section].append(name)
    return out


def test_every_key_of_the_model_is_in_the_example() -> None:
    written = example_keys()
    missing = []
    declared = model_sections(OpsConfig)
    assert {"ops", "database", "mqtt", "mqtt.tls", "http", "correlation", "targets",
            "presence", "receivers", "notify", "retention"} <= set(declared)
    for section, names in declared.items():
        if section and section not in written:
            missing.append(f"[{section}] (the section)")
            continue
        for name in names:
            forms = SECRET_FORMS.get(name, (name,))
            if not any(form in written[section] for form in forms):
                missing.append(f"{section}.{name}" if section else name)
    assert not missing, f"examples/ops.toml lacks: {', '.join(missing)}"


def test_example_sections_are_all_known() -> None:
    declared = model_sections(OpsConfig)
    assert set(example_keys()) - {""} <= set(declared)


# --------------------------------------------------------------------------- the systemd unit


def unit_directives(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_has_the_hardening_and_the_restart_policy() -> None:
    unit = unit_directives(UNIT.read_text())
    service = unit["Service"]
    expected = {
        "Type": "notify",
        "WatchdogSec": "60",
        "User": "hotline-probe-ops",
        "StateDirectory": "hotline-probe-ops",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "EnvironmentFile": "-/etc/hotline-probe/ops.env",
    }
    for key, value in expected.items():
        assert service.get(key, [None])[-1] == value, key
    assert set(service["RestrictAddressFamilies"][-1].split()) == {"AF_INET", "AF_INET6",
                                                                   "AF_UNIX"}
    assert "@system-service" in service["SystemCallFilter"]
    assert "RestartSec" in service
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= set(unit["Unit"])
    assert service["ExecStartPre"] == [
        "/opt/hotline-probe-ops/.venv/bin/probe ops migrate -c /etc/hotline-probe/ops.toml"]
    assert service["ExecStart"] == [
        "/opt/hotline-probe-ops/.venv/bin/probe ops serve -c /etc/hotline-probe/ops.toml"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (the ansible test verifies the unit "
                    "inside the deployed root)")
    unit = tmp_path / UNIT.name
    shutil.copy2(UNIT, unit)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    # The service's own executable is installed by the ops role, not on this machine.
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if UNIT.name in line and not re.search(
                      r"Command /opt/hotline-probe-ops/\.venv/bin/probe is not executable", line)]
    assert not complaints, "\n".join(complaints)


# --------------------------------------------------------------------------- Grafana


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panels(panel))  # rows carry their panels
    return out


PROMQL_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
PROMQL_LABELS = re.compile(r"\{[^}]*\}")
PROMQL_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
PROMQL_RANGES = re.compile(r"\[[^\]]*\]")
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "and", "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables removed)."""
    text = re.sub(r"\$\{?\w+\}?", "1", expr)
    for pattern in (PROMQL_STRINGS, PROMQL_LABELS, PROMQL_GROUPING, PROMQL_RANGES):
        text = pattern.sub(" ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group(0).lower() in PROMQL_KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        if re.match(r"\d", text[match.start() - 1:match.start()] or " "):
            continue  # the unit of a number (5m)
        names.add(match.group(0))
    return names


def test_metric_names_parser() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le, target) '
                        '(rate(hotline_ops_pdd_ms_bucket{target=~"$target"}[$__rate_interval])))'
                        ) == {"hotline_ops_pdd_ms_bucket"}
    assert metric_names("sum(hotline_ops_probes) - on() group_left sum(up)") == {
        "hotline_ops_probes", "up"}


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    # A datasource variable (not only __inputs): file provisioning resolves no __inputs.
    assert any(v.get("name") == "DS_PROMETHEUS" and v.get("type") == "datasource"
               for v in dashboard["templating"]["list"])
    seen: set[str] = set()
    queried = 0
    for panel in panels(dashboard):
        if panel.get("type") == "row":
            continue
        assert panel.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", panel.get("title")
        targets = panel.get("targets", [])
        assert targets, f"panel {panel.get('title')!r} has no query"
        for target in targets:
            names = metric_names(target["expr"])
            assert names, f"{panel.get('title')}: {target['expr']}"
            assert names <= METRICS, (panel.get("title"), names - METRICS)
            seen |= names
            queried += 1
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query":
            query = variable["query"]
            query = query.get("query", "") if isinstance(query, dict) else query
            inner = re.search(r"label_values\((.*)\)", query)
            assert inner, query
            names = metric_names(inner.group(1).rsplit(",", 1)[0])
            assert names <= METRICS, (variable["name"], names - METRICS)
    assert queried >= len(METRICS)
    assert seen == METRICS, f"metrics with no panel: {sorted(METRICS - seen)}"


def test_dashboard_provisioning_points_at_the_dashboard() -> None:
    provisioning = yaml.safe_load(PROVISIONING.read_text())
    assert provisioning["apiVersion"] == 1
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    assert "path" in provider["options"]
