"""README.md is exactly true: what it lists, names and shows is what the code does.

Each check reads the README and asks the code (the schema, the CLI's own parser, the config
validator, the repository tree), so a change to either side that breaks the other fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml

from probe.cli import _parser
from tests.test_examples import EXAMPLE, accepted_tables

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SCHEMA = json.loads((ROOT / "probe" / "schema" / "result-v1.json").read_text())
ASYNCAPI = yaml.safe_load((ROOT / "probe" / "schema" / "asyncapi.yaml").read_text())


def table_row(first_cell: str) -> str:
    """The rest of the README table row whose first cell is ``first_cell``."""
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return "|".join(cells[1:])
    raise AssertionError(f"README has no table row {first_cell}")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"(?ms)^```{language}\n(.*?)^```", README)


def test_the_outcome_list_is_the_schemas_enum() -> None:
    row = table_row("`outcome`")
    # the explanations in parentheses name keys too (`max_ring_s`): only the outcomes count
    outcomes = re.findall(r"`([a-z_]+)`", re.sub(r"\([^()]*\)", "", row))
    assert outcomes == SCHEMA["properties"]["outcome"]["enum"]


def test_the_timeline_events_are_the_schemas() -> None:
    row = table_row("`timeline`")
    events = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^()]*\)", "", row)))
    kinds = SCHEMA["properties"]["timeline"]["items"]["properties"]["event"]["enum"]
    assert events == set(kinds)


def test_every_file_it_names_exists() -> None:
    linked = re.findall(r"\]\(([^)#:]+)\)", README)
    top = {p.name for p in ROOT.iterdir()}
    quoted = [p for p in re.findall(r"`([A-Za-z0-9_.-]+/[A-Za-z0-9_./*-]*)`", README)
              if p.split("/")[0] in top]
    names = linked + quoted
    assert len(names) > 30  # the extraction sees the README's paths
    missing = [n for n in names if not list(ROOT.glob(n.rstrip("/")))]
    assert not missing, f"README names files that do not exist: {missing}"


def probe_command_lines() -> list[str]:
    lines = []
    for block in code_blocks("sh"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip().removeprefix("$ ")
            if line.startswith("probe ") and "|" not in line and "..." not in line:
                lines.append(line)
    return lines


def test_every_probe_command_it_shows_is_accepted_by_the_cli() -> None:
    lines = probe_command_lines()
    assert len(lines) > 15
    refused = []
    for line in lines:
        try:
            _parser().parse_args(shlex.split(line)[1:])
        except SystemExit:
            refused.append(line)
    assert not refused, f"the probe CLI refuses these README commands: {refused}"


def test_every_config_section_it_names_exists() -> None:
    from probe.ops.config import OpsConfig

    probe_tables = set(accepted_tables(tomllib.loads(EXAMPLE.read_text())))
    ops_tables = set(OpsConfig.model_fields)
    named = set(re.findall(r"`\[\[?([a-z_.]+)\]\]?", README))
    assert {"probe", "mqtt", "targets", "modems.analog"} <= named
    unknown = {n for n in named
               if n not in ops_tables and n.replace("targets.", "targets[].") not in probe_tables}
    assert not unknown, f"README names config sections that do not exist: {sorted(unknown)}"


def test_the_sample_error_messages_are_the_real_ones(tmp_path: Path) -> None:
    block = next(b for b in code_blocks("text") if b.startswith("$ probe check-config"))
    command, *shown = block.strip().splitlines()
    text = EXAMPLE.read_text()
    # the mistakes the sample shows: a typo of a key, a bad id, a number given as words
    text = text.replace('site = "Lyon Part-Dieu"', 'sitex = "Lyon Part-Dieu"\nsite = "Lyon"')
    text = text.replace('id = "branch-017"', 'id = "a/b"')
    text = text.replace("max_ring_s = 30\n", 'max_ring_s = "thirty"\n', 1)
    (tmp_path / "bad.toml").write_text(text)
    argv = shlex.split(command.removeprefix("$ "))[1:]
    run = subprocess.run([sys.executable, "-m", "probe", *argv], cwd=tmp_path, text=True,
                         capture_output=True, env={**os.environ, "PROBE_SIP_PASSWORD": "x"},
                         timeout=60)
    assert run.returncode == 2
    real = run.stderr.splitlines()
    for line in shown:
        pattern = ".*".join(re.escape(part) for part in line.split("..."))
        assert any(re.fullmatch(pattern, r) for r in real), (line, real)


def readme_json(after: str) -> dict:
    """The JSON example in the ```json block that follows the text ``after``."""
    rest = README[README.index(after):]
    return json.loads(re.search(r"(?ms)^```json\n(.*?)^```", rest).group(1))


STATUS_EXAMPLE = "The retained status, as sent"


def test_the_status_example_is_valid_against_the_contract() -> None:
    example = readme_json(STATUS_EXAMPLE)
    schema = ASYNCAPI["components"]["messages"]["status"]["payload"]
    jsonschema.validate(example, schema)
    assert example["state"] == "online" and "targets" in example and "probe" in example


def status_keys(status: dict) -> tuple[set[str], set[str], set[str]]:
    """The keys of a status, of its first target's verdict and of its probe health."""
    target = next(iter(status["targets"].values()))
    return set(status), set(target), set(status["probe"])


def readme_status_keys() -> tuple[set[str], set[str], set[str]]:
    """What the README shows the online status to hold (tests/test_daemon.py compares)."""
    return status_keys(readme_json(STATUS_EXAMPLE))
