"""ops.toml: every problem at once, each with its key path and reason; exit 2 from the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from probe.errors import ConfigError
from probe.ops.config import config_json_schema, load_ops_config, parse_ops_config


def problems(data: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        parse_ops_config(data)
    return dict(err.value.problems)


def test_empty_file_runs_on_sqlite_in_the_state_dir() -> None:
    config = parse_ops_config({})
    assert config.database_url == "sqlite:////var/lib/hotline-probe-ops/ops.sqlite3"
    assert config.correlation.rounds_required == 2 and config.correlation.rounds_window == 3


def test_every_problem_with_its_key_and_a_suggestion() -> None:
    found = problems({
        "mqtt": {"prot": 1883, "port": "1883"},
        "http": {"port": 70000},
        "ops": {"language": "de"},
        "receivers": [{"name": "page", "kind": "pager"}],
    })
    assert found["mqtt.prot"].startswith("unknown key (allowed: host, port,")
    assert found["mqtt.prot"].endswith('did you mean "port"?')
    assert "integer" in found["mqtt.port"] and '"1883"' in found["mqtt.port"]  # strict
    assert "65535" in found["http.port"]
    assert "'en' or 'ru'" in found["ops.language"]
    assert "webhook" in found["receivers[0].kind"]


def test_rules_across_keys() -> None:
    assert "rounds_window" in problems({"correlation": {"rounds_required": 4}})["correlation"]
    found = problems({"receivers": [{"name": "mail", "kind": "email"}]})
    assert found["receivers[0]"] == "an email receiver needs smtp_host, mail_from, mail_to"
    found = problems({"receivers": [{"name": "a", "kind": "webhook", "url": "http://x/"},
                                     {"name": "a", "kind": "webhook", "url": "http://y/"}]})
    assert "repeated: a" in next(iter(found.values()))


def test_per_target_overrides_and_secrets(tmp_path: Path) -> None:
    (tmp_path / "db.secret").write_text("s3cret\n")
    config = parse_ops_config({
        "database": {"url": "postgresql+psycopg://ops@db/ops", "password_file": "db.secret"},
        "targets": [{"name": "support", "min_sites": 5}],
    }, base_dir=tmp_path)
    assert config.correlation_for("support").min_sites == 5
    assert config.correlation_for("sales").min_sites == 2
    assert config.database.password is not None
    assert config.database.password.reveal() == "s3cret"
    assert "s3cret" not in repr(config)
    found = problems({"mqtt": {"password": "a", "password_env": "B"}})
    assert "at most one" in found["mqtt.password"]


def test_cli_exits_2_naming_each_problem(tmp_path: Path) -> None:
    bad = tmp_path / "ops.toml"
    bad.write_text('[mqtt]\nhots = "broker"\n[correlation]\nround_s = -5\n')
    done = subprocess.run([sys.executable, "-m", "probe", "ops", "check-config", "-c",
                           str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert any(line.startswith(f"{bad}: mqtt.hots: unknown key") and '"host"' in line
               for line in lines), done.stderr
    assert any(line.startswith(f"{bad}: correlation.round_s:") for line in lines)
    good = tmp_path / "good.toml"
    good.write_text(f'[ops]\nstate_dir = "{tmp_path}"\n')
    done = subprocess.run([sys.executable, "-m", "probe", "ops", "check-config", "-c",
                           str(good)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "OK" in done.stdout
    assert load_ops_config(good).ops.state_dir == tmp_path


def test_config_json_schema_for_editors() -> None:
    schema = config_json_schema()
    assert set(schema["properties"]) >= {"ops", "database", "mqtt", "http", "correlation",
                                         "targets", "receivers", "notify", "retention"}
