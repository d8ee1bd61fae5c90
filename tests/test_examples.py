"""examples/probe.toml names every key the configuration accepts.

The accepted keys are not listed here (a list in the test would go stale exactly like the
example): they are read from the validator itself.  Every table rejects an unknown key with
``unknown key (allowed: a, b, ...)``, so the test plants one unknown key in each table and reads
the answer; a key whose value is itself a table is found the same way, one level down.

A key counts as documented when the example sets it, or shows it commented out
(``# key = ...``) under its table's header: some keys cannot all be set at once (a secret is
given in exactly one of ``x``, ``x_file`` or ``x_env``; TLS needs real files), so one form of a
secret stands for all three.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

from probe.config.model import parse_config
from probe.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "probe.toml"
ENVIRON = {"PROBE_SIP_PASSWORD": "x", "PROBE_SIM_PIN": "1234"}
UNKNOWN = "zz_not_a_key"
ALLOWED_RE = re.compile(r"unknown key \(allowed: ([^)]*)\)")
HEADER_RE = re.compile(r"^\s*#?\s*\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?\s*(#.*)?$")
COMMENTED_KEY_RE = re.compile(r"^\s*#\s*([a-z_][a-z0-9_]*)\s*=")

Path_ = tuple[str | int, ...]


def problems_with(document: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        parse_config(document, base_dir=EXAMPLE.parent, environ=ENVIRON)
    except ConfigError as error:
        return list(error.problems)
    return []


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def allowed_keys(example: dict[str, Any], path: Path_) -> list[str] | None:
    """The keys the table at ``path`` accepts, or None when ``path`` is not a table."""
    document = copy.deepcopy(example)
    node: Any = document
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    if path:
        last = path[-1]
        if isinstance(last, int) or isinstance(node.get(last), dict):
            node = node[last]
        else:
            node[last] = {}
            node = node[last]
    node[UNKNOWN] = 1
    where = dotted((*path, UNKNOWN))
    for key, reason in problems_with(document):
        if key == where and (match := ALLOWED_RE.search(reason)):
            return [k.strip() for k in match.group(1).split(",")]
    return None


def schema_path(path: Path_) -> str:
    """``targets[1].expect`` and ``targets[0].expect`` are the same table of the schema."""
    return ".".join("[]" if isinstance(p, int) else p for p in path).replace(".[]", "[]")


def accepted_tables(example: dict[str, Any]) -> dict[str, set[str]]:
    """Schema path of every table -> its accepted keys, found by asking the validator."""
    tables: dict[str, set[str]] = {}
    pending: list[Path_] = [()]
    while pending:
        path = pending.pop()
        keys = allowed_keys(example, path)
        assert keys is not None, f"{dotted(path) or 'the top level'} is not a table"
        tables.setdefault(schema_path(path), set()).update(keys)
        for key in keys:
            value = lookup(example, (*path, key))
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                pending.extend((*path, key, i) for i in range(len(value)))
            elif isinstance(value, dict) or (value is None and
                                             allowed_keys(example, (*path, key)) is not None):
                pending.append((*path, key))
    return tables


def lookup(document: Any, path: Path_) -> Any:
    for part in path:
        if isinstance(part, int):
            document = document[part] if part < len(document) else None
        elif isinstance(document, dict):
            document = document.get(part)
        else:
            return None
    return document


def documented_keys(example: dict[str, Any], text: str) -> dict[str, set[str]]:
    """Schema path of each table -> keys the example sets or shows commented out under it."""
    found: dict[str, set[str]] = {}

    def walk(node: Any, path: Path_) -> None:
        if isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
            for i, item in enumerate(node):
                walk(item, (*path, i))
        elif isinstance(node, dict):
            found.setdefault(schema_path(path), set()).update(node)
            for key, value in node.items():
                walk(value, (*path, key))

    walk(example, ())
    header = ""
    for line in text.splitlines():
        if match := HEADER_RE.match(line):
            parts = match.group(1).split(".")
            # a header names a table of an array of tables ([[targets]]) by its plain name
            header = ".".join(p + ("[]" if isinstance(example.get(p), list) and i == 0 else "")
                              for i, p in enumerate(parts)).replace(".[]", "[]")
            found.setdefault(header, set())
            # the header of a table also documents its key in the parent: [mqtt.tls] -> tls
            parent, _, key = header.rpartition(".")
            found.setdefault(parent, set()).add(key.removesuffix("[]"))
        elif match := COMMENTED_KEY_RE.match(line):
            found.setdefault(header, set()).add(match.group(1))
    return found


def secret_forms(keys: set[str]) -> list[set[str]]:
    """The groups ``x``, ``x_file``, ``x_env`` of a secret among ``keys``."""
    return [{base, f"{base}_file", f"{base}_env"} for base in keys
            if f"{base}_file" in keys and f"{base}_env" in keys]


def missing_from_example(path: Path = EXAMPLE) -> list[str]:
    text = path.read_text()
    example = tomllib.loads(text)
    documented = documented_keys(example, text)
    missing = []
    for table, keys in sorted(accepted_tables(example).items()):
        have = documented.get(table, set())
        for group in secret_forms(keys):
            if have & group:
                have = have | group
        missing += [f"{table}.{key}" if table else key for key in sorted(keys - have)]
    return missing


def test_the_example_names_every_accepted_key() -> None:
    missing = missing_from_example()
    assert not missing, f"examples/probe.toml lacks {len(missing)} keys: {', '.join(missing)}"


def test_the_key_discovery_sees_keys_the_example_must_have() -> None:
    """The discovery is not vacuous: it finds nested tables and keys of every kind."""
    text = EXAMPLE.read_text()
    tables = accepted_tables(tomllib.loads(text))
    assert {"probe", "mqtt.tls", "modems.gsm", "modems.analog", "targets[].expect",
            "targets[].diagnose"} <= set(tables)
    assert "port" in tables["modems.analog"]
    assert {"password", "password_file", "password_env"} <= tables["sip"]


def test_a_key_removed_from_the_example_is_reported(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    stripped = re.sub(r"(?m)^\s*#?\s*max_jitter_s\s*=.*$", "", text)
    assert stripped != text
    copy_ = tmp_path / "probe.toml"
    copy_.write_text(stripped)
    assert "probe.max_jitter_s" in missing_from_example(copy_)
