"""probe.config.model: one TOML file -> frozen, validated objects; every problem named by its
key."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from probe.config.model import (
    CHANNELS,
    Config,
    Expectations,
    ProbeIdentity,
    Target,
    config_schema,
    load_config,
    parse_config,
    sip_uri_problem,
)
from probe.config.secrets import Secret
from probe.errors import ConfigError, ProbeError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "probe.toml"
DATA = Path(__file__).resolve().parent / "data" / "config"

# A password that must never leak into a repr, an error message or a problem.
SECRET = "Tr0ub4dor-never-shown"

# The base document: leaves are TOML literals, so a case can put any TOML value anywhere.
BASE: dict[str, Any] = {
    "probe": {"id": '"branch-017"', "site": '"Lyon Part-Dieu"'},
    "mqtt": {"host": '"broker.example.com"'},
    "sip": {
        "registrar": '"sip:pbx.example.com"',
        "username": '"probe-017"',
        "password": f'"{SECRET}"',
    },
    "modems": {"gsm": {"port": '"/dev/serial/by-id/usb-SimTech-if02-port0"'}},
    "targets": [
        {
            "name": '"support"',
            "sip_uri": '"sip:3900@pbx.example.com"',
            "number": '"+33472000390"',
            "channels": '["sip", "gsm"]',
        },
        {
            "name": '"sales"',
            "sip_uri": '"sip:3950@pbx.example.com"',
            "channels": '["sip"]',
            "expect": {"max_ring_s": "20"},
        },
    ],
}

DROP = None  # an override value that deletes the key


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for piece in path.split("."):
        m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", piece)
        assert m, piece
        steps.append(m[1])
        if m[2] is not None:
            steps.append(int(m[2]))
    return steps


def build(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """BASE with ``{"targets[1].expect.max_ring_s": "0", "sip": DROP, ...}`` applied."""
    doc = copy.deepcopy(BASE)
    for path, value in (overrides or {}).items():
        *parents, last = _steps(path)
        node: Any = doc
        for step in parents:
            node = node.setdefault(step, {}) if isinstance(step, str) else node[step]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return doc


def render(doc: dict[str, Any]) -> str:
    """The document as TOML text ([table], [[array of tables]], [sub.table])."""
    lines: list[str] = [f"{k} = {v}" for k, v in doc.items() if isinstance(v, str)]

    def table(header: str, body: dict[str, Any], array: bool = False) -> None:
        lines.append(f"\n[[{header}]]" if array else f"\n[{header}]")
        lines.extend(f"{k} = {v}" for k, v in body.items() if isinstance(v, str))
        for k, v in body.items():
            if isinstance(v, dict):
                table(f"{header}.{k}", v)

    for key, value in doc.items():
        if isinstance(value, dict):
            table(key, value)
        elif isinstance(value, list):
            for item in value:
                table(key, item, array=True)
    return "\n".join(lines) + "\n"


def load(tmp_path: Path, overrides: dict[str, Any] | None = None, **kw: Any) -> Config:
    path = tmp_path / "probe.toml"
    path.write_text(render(build(overrides)), encoding="utf-8")
    return load_config(path, environ=kw.get("environ", {}))


def problems(tmp_path: Path, overrides: dict[str, Any], **kw: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, overrides, **kw)
    error = info.value
    assert error.source == str(tmp_path / "probe.toml")
    assert SECRET not in str(error)
    return error.problems


def assert_problem(found: list[tuple[str, str]], key: str, fragment: str) -> None:
    assert any(k == key and fragment in reason for k, reason in found), (
        f"no problem {key!r} containing {fragment!r} in:\n"
        + "\n".join(f"  {k}: {r}" for k, r in found)
    )


# --------------------------------------------------------------------------- good files


def test_example_config_loads_with_its_env_var_set() -> None:
    config = load_config(EXAMPLE, environ={"PROBE_SIP_PASSWORD": SECRET})

    assert config.source == str(EXAMPLE)
    assert config.probe == ProbeIdentity(
        "branch-017", "Lyon Part-Dieu", Path("/var/lib/hotline-probe")
    )
    assert config.mqtt is not None and config.mqtt.password is None
    assert config.sip is not None
    assert config.sip.registrar == "sip:pbx.example.com"
    assert config.sip.password is not None
    assert config.sip.password.reveal() == SECRET
    assert config.sip.password.source == "env:PROBE_SIP_PASSWORD"
    assert [(t.name, t.channels) for t in config.targets] == [
        ("support", ("sip", "gsm")),
        ("sales", ("sip",)),
    ]
    assert config.target("sales").expect.hold_s == 20.0
    assert SECRET not in repr(config) and SECRET not in str(config)


def test_example_config_without_its_env_var_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, environ={})
    assert info.value.problems == [
        ("sip.password_env", "environment variable PROBE_SIP_PASSWORD is not set")
    ]


def test_minimal_config_gets_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "probe.toml"
    path.write_text(
        '[probe]\nid = "b1"\nsite = "Lyon"\n\n'
        '[[targets]]\nname = "support"\nnumber = "+33123456789"\nchannels = ["gsm"]\n'
        '[modems.gsm]\nport = "/dev/ttyUSB2"\n'
    )
    config = load_config(path, environ={})

    assert config.probe == ProbeIdentity("b1", "Lyon", Path("/var/lib/hotline-probe"))
    assert config.mqtt is None and config.sip is None
    assert config.targets == (
        Target("support", None, "+33123456789", ("gsm",), 900, Expectations()),
    )
    assert Expectations() == Expectations(5000, 30.0, 10.0, True)


def test_base_config_values_and_types(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.mqtt is not None
    assert (config.mqtt.port, config.mqtt.keepalive_s, config.mqtt.session_expiry_s) == (
        1883,
        30,
        86400,
    )
    sip = config.sip
    assert sip is not None
    assert (sip.transport, sip.local_address, sip.local_port, sip.rtp_port, sip.realm) == (
        "udp",
        "0.0.0.0",
        5060,
        4000,
        "*",
    )
    assert sip.password == Secret(SECRET, "inline")
    max_ring = config.target("sales").expect.max_ring_s
    assert max_ring == 20.0 and type(max_ring) is float  # integer in TOML, float in Python
    assert type(sip.register_timeout_s) is float


def test_config_objects_are_frozen(tmp_path: Path) -> None:
    config = load(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.probe.id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.targets[0].expect.hold_s = 1  # type: ignore[misc]


def test_target_lookup(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.target("support").number == "+33472000390"
    with pytest.raises(ConfigError) as info:
        config.target("billing")
    assert info.value.problems == [("targets", "no target named 'billing' (known: support, sales)")]
    assert info.value.source == config.source


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"mqtt.port": "8883"}, lambda c: c.mqtt.port == 8883),
        ({"mqtt.session_expiry_s": "4294967295"}, lambda c: c.mqtt.session_expiry_s == 2**32 - 1),
        ({"mqtt.host": '"10.1.2.3"'}, lambda c: c.mqtt.host == "10.1.2.3"),
        ({"mqtt.host": '"2001:db8::1"'}, lambda c: c.mqtt.host == "2001:db8::1"),
        ({}, lambda c: c.mqtt.recording_max_kib == 1024),
        ({"mqtt.recording_max_kib": "0"}, lambda c: c.mqtt.recording_max_kib == 0),
        ({"mqtt.recording_max_kib": "51200"}, lambda c: c.mqtt.recording_max_kib == 51200),
        ({"sip.local_port": "0", "sip.rtp_port": "0"}, lambda c: c.sip.local_port == 0),
        ({"sip.rtp_port": "65534"}, lambda c: c.sip.rtp_port == 65534),
        (
            {"sip.local_address": '"::"', "sip.transport": '"tcp"'},
            lambda c: c.sip.transport == "tcp",
        ),
        ({"sip.register_timeout_s": "120"}, lambda c: c.sip.register_timeout_s == 120.0),
        ({"sip.registrar": DROP, "sip.password": DROP, "sip.username": DROP}, lambda c: True),
        ({"targets[0].interval_s": "30"}, lambda c: c.targets[0].interval_s == 30),
        ({"targets[0].interval_s": "86400"}, lambda c: c.targets[0].interval_s == 86400),
        ({"targets[1].expect.hold_s": "0"}, lambda c: c.targets[1].expect.hold_s == 0.0),
        ({"targets[1].expect.max_ring_s": "0.5"}, lambda c: c.targets[1].expect.max_ring_s == 0.5),
        (
            {"targets[1].expect.require_media": "false"},
            lambda c: not c.targets[1].expect.require_media,
        ),
        (
            {"targets[0].channels": '["analog", "gsm", "sip"]',
             "modems.analog.port": '"/dev/ttyS0"'},
            lambda c: len(c.targets[0].channels) == 3,
        ),
        (
            {
                "sip": DROP,
                "targets[0].channels": '["gsm"]',
                "targets[1].channels": '["analog"]',
                "targets[1].number": '"*31#0123"',
                "modems.analog.port": '"rfc2217://10.0.0.7:4001"',
            },
            lambda c: c.sip is None,
        ),
    ],
)
def test_accepted_values(tmp_path: Path, overrides: dict[str, Any], check: Any) -> None:
    assert check(load(tmp_path, overrides))


def test_parse_config_on_a_dict_uses_base_dir(tmp_path: Path) -> None:
    (tmp_path / "sip.pw").write_text(SECRET + "\n")
    data = {
        "probe": {"id": "b1", "site": "Lyon", "state_dir": "state"},
        "sip": {"username": "u", "password_file": "sip.pw"},
        "targets": [{"name": "t", "sip_uri": "sip:1@pbx", "channels": ["sip"]}],
    }
    config = parse_config(data, base_dir=tmp_path, environ={})
    assert config.source == "<memory>"
    assert config.probe.state_dir == tmp_path / "state"
    assert config.sip is not None and config.sip.password is not None
    assert config.sip.password.reveal() == SECRET
    assert config.sip.password.source == f"file:{tmp_path / 'sip.pw'}"

    with pytest.raises(ConfigError) as info:
        parse_config({"probe": {}}, source="inline-test")
    assert info.value.source == "inline-test"
    assert ("probe.id", "missing (required)") in info.value.problems


def test_channels_constant() -> None:
    assert CHANNELS == ("sip", "gsm", "analog")


# --------------------------------------------------------------------------- bad values

# One row per mistake: (overrides of BASE, the key path reported, a fragment of the reason).
# fmt: off
BAD_CASES: list[tuple[dict[str, Any], str, str]] = [
    # missing sections and keys
    ({"probe": DROP}, "probe", "missing"),
    ({"probe.id": DROP}, "probe.id", "missing (required)"),
    ({"probe.site": DROP}, "probe.site", "missing (required)"),
    ({"mqtt.host": DROP}, "mqtt.host", "missing (required)"),
    ({"targets": DROP}, "targets", "missing (required"),
    ({"targets[1].name": DROP}, "targets[1].name", "missing (required)"),
    ({"targets[1].channels": DROP}, "targets[1].channels", "missing (required"),
    # sections of the wrong shape
    ({"probe": '"branch-017"'}, "probe", "must be a table"),
    ({"mqtt": "1883"}, "mqtt", "must be a table"),
    ({"targets": "[]"}, "targets", "at least one target"),
    ({"targets": '["support"]'}, "targets[0]", "must be a table"),
    ({"targets": {"name": '"support"'}}, "targets", "must be an array of tables"),
    ({"targets[1].expect": "20"}, "targets[1].expect", "must be a table"),
    # wrong types
    ({"probe.site": "42"}, "probe.site", "must be a non-empty string, got 42"),
    ({"probe.site": '"  "'}, "probe.site", "non-empty string"),
    ({"probe.state_dir": "5"}, "probe.state_dir", "path"),
    ({"mqtt.port": '"abc"'}, "mqtt.port", 'must be an integer from 1 to 65535, got "abc"'),
    ({"mqtt.port": "1883.0"}, "mqtt.port", "integer from 1 to 65535, got 1883.0"),
    ({"mqtt.host": "5"}, "mqtt.host", "hostname or IP address"),
    ({"mqtt.username": "[]"}, "mqtt.username", "non-empty string, got an array"),
    ({"sip.transport": '"tls"'}, "sip.transport", 'must be one of "udp", "tcp", got "tls"'),
    ({"sip.transport": '"UDP"'}, "sip.transport", "must be one of"),
    ({"sip.realm": '""'}, "sip.realm", "non-empty string"),
    ({"sip.local_address": '"eth0"'}, "sip.local_address", "IPv4 or IPv6 address"),
    ({"sip.local_address": '"localhost"'}, "sip.local_address", "IPv4 or IPv6 address"),
    ({"sip.local_address": "3"}, "sip.local_address", "IPv4 or IPv6 address"),
    ({"targets[1].expect.max_ring_s": '"30"'}, "targets[1].expect.max_ring_s", "must be a number"),
    ({"targets[1].expect.require_media": "1"}, "targets[1].expect.require_media",
     "must be true or false, got 1"),
    ({"targets[1].expect.require_media": '"yes"'}, "targets[1].expect.require_media",
     "true or false"),
    ({"targets[0].interval_s": "900.5"}, "targets[0].interval_s", "integer from 30 to 86400"),
    ({"targets[1].expect.max_post_dial_delay_ms": "5000.0"},
     "targets[1].expect.max_post_dial_delay_ms", "must be an integer"),
    # booleans are not numbers
    ({"mqtt.port": "true"}, "mqtt.port", "got true"),
    ({"sip.local_port": "false"}, "sip.local_port", "got false"),
    ({"sip.register_timeout_s": "true"}, "sip.register_timeout_s", "must be a number"),
    ({"targets[0].interval_s": "true"}, "targets[0].interval_s", "must be an integer"),
    ({"targets[1].expect.hold_s": "true"}, "targets[1].expect.hold_s", "got true"),
    # out of range
    ({"mqtt.port": "0"}, "mqtt.port", "from 1 to 65535, got 0"),
    ({"mqtt.port": "65536"}, "mqtt.port", "from 1 to 65535"),
    ({"mqtt.keepalive_s": "4"}, "mqtt.keepalive_s", "from 5 to 3600"),
    ({"mqtt.keepalive_s": "3601"}, "mqtt.keepalive_s", "from 5 to 3600"),
    ({"mqtt.session_expiry_s": "-1"}, "mqtt.session_expiry_s", "from 0 to 4294967295"),
    ({"mqtt.session_expiry_s": "4294967296"}, "mqtt.session_expiry_s", "4294967295"),
    ({"sip.local_port": "-1"}, "sip.local_port", "from 0 to 65535"),
    ({"sip.local_port": "70000"}, "sip.local_port", "from 0 to 65535"),
    ({"sip.rtp_port": "80"}, "sip.rtp_port", "0 (any) or an integer from 1024 to 65534"),
    ({"sip.rtp_port": "65535"}, "sip.rtp_port", "1024 to 65534"),
    ({"sip.register_timeout_s": "0"}, "sip.register_timeout_s", "greater than 0 and at most 120"),
    ({"sip.register_timeout_s": "120.5"}, "sip.register_timeout_s", "at most 120"),
    ({"targets[0].interval_s": "29"}, "targets[0].interval_s", "from 30 to 86400 (seconds)"),
    ({"targets[0].interval_s": "86401"}, "targets[0].interval_s", "from 30 to 86400"),
    ({"targets[1].expect.max_post_dial_delay_ms": "0"},
     "targets[1].expect.max_post_dial_delay_ms", "from 1 to 120000"),
    ({"targets[1].expect.max_post_dial_delay_ms": "120001"},
     "targets[1].expect.max_post_dial_delay_ms", "from 1 to 120000"),
    ({"targets[1].expect.max_ring_s": "0"}, "targets[1].expect.max_ring_s", "greater than 0"),
    ({"targets[1].expect.max_ring_s": "600.1"}, "targets[1].expect.max_ring_s", "at most 600"),
    ({"targets[1].expect.max_ring_s": "inf"}, "targets[1].expect.max_ring_s", "got inf"),
    ({"targets[1].expect.max_ring_s": "nan"}, "targets[1].expect.max_ring_s", "got nan"),
    ({"targets[1].expect.hold_s": "-1"}, "targets[1].expect.hold_s", "from 0 to 3600"),
    ({"targets[1].expect.hold_s": "3600.5"}, "targets[1].expect.hold_s", "from 0 to 3600"),
    # unknown keys, at every level
    ({"colour": '"blue"'}, "colour", "unknown key (allowed: probe, mqtt, sip, targets"),
    ({"target": {"name": '"x"'}}, "target", 'did you mean "targets"?'),
    ({"probe.name": '"x"'}, "probe.name", "unknown key (allowed: id, site, state_dir"),
    ({"mqtt.hots": '"b"'}, "mqtt.hots", "unknown key (allowed: host, port, keepalive_s"),
    ({"mqtt.hots": '"b"'}, "mqtt.hots", 'did you mean "host"?'),
    ({"mqtt.tls": {"ca_fil": '"ca.pem"'}}, "mqtt.tls.ca_fil", 'did you mean "ca_file"?'),
    ({"mqtt.tls": {"ca_file": '"ca.pem"'}}, "mqtt.tls.ca_file", "no such file"),
    ({"mqtt.tls": {"ca_file": '"ca.pem"'}}, "mqtt.tls.key_file", "missing"),
    ({"mqtt.drain_rate_per_s": "0"}, "mqtt.drain_rate_per_s", "greater than 0"),
    ({"mqtt.recording_max_kib": "-1"}, "mqtt.recording_max_kib", "from 0 to 65536 (KiB"),
    ({"mqtt.recording_max_kib": "1.5"}, "mqtt.recording_max_kib", "must be an integer"),
    ({"mqtt.recording_max_kib": "2048", "mqtt.outbox_max_mib": "1"}, "mqtt.recording_max_kib",
     "must not exceed outbox_max_mib (1 MiB = 1024 KiB), got 2048"),
    ({"sip.pasword": '"x"'}, "sip.pasword", 'did you mean "password"?'),
    ({"targets[0].chanels": '["sip"]'}, "targets[0].chanels", 'did you mean "channels"?'),
    ({"targets[1].expect.max_ring": "20"}, "targets[1].expect.max_ring",
     "unknown key (allowed: max_post_dial_delay_ms, max_ring_s, hold_s, require_media)"),
    # probe ids: an MQTT topic level and a certificate CN
    ({"probe.id": '"branch/017"'}, "probe.id", 'no "/", "+", "#" or spaces'),
    ({"probe.id": '"branch+017"'}, "probe.id", 'got "branch+017"'),
    ({"probe.id": '"branch#017"'}, "probe.id", 'got "branch#017"'),
    ({"probe.id": '"branch 017"'}, "probe.id", 'got "branch 017"'),
    ({"probe.id": '"-branch"'}, "probe.id", "starting with a letter or digit"),
    ({"probe.id": '".branch"'}, "probe.id", "starting with a letter or digit"),
    ({"probe.id": '""'}, "probe.id", "1-64 characters"),
    ({"probe.id": '"' + "a" * 65 + '"'}, "probe.id", "1-64 characters"),
    ({"probe.id": '"branch-017\\n"'}, "probe.id", "1-64 characters"),
    ({"probe.id": "17"}, "probe.id", "got 17"),
    # target names
    ({"targets[0].name": '"Support"'}, "targets[0].name", "lowercase letters"),
    ({"targets[0].name": '"sup port"'}, "targets[0].name", "lowercase letters"),
    ({"targets[0].name": '"_support"'}, "targets[0].name", "starting with a letter or digit"),
    ({"targets[0].name": '"' + "a" * 64 + '"'}, "targets[0].name", "1-63 characters"),
    ({"targets[0].name": "1"}, "targets[0].name", "got 1"),
    ({"targets[1].name": '"support"'}, "targets[1].name",
     'duplicate target name "support" (already used by targets[0])'),
    # bad SIP URIs
    ({"targets[0].sip_uri": '"3900@pbx.example.com"'}, "targets[0].sip_uri", "sip: or sips:"),
    ({"targets[0].sip_uri": '"tel:+33472000390"'}, "targets[0].sip_uri", "sip: or sips:"),
    ({"targets[0].sip_uri": '"http://pbx.example.com"'}, "targets[0].sip_uri", "sip: or sips:"),
    ({"targets[0].sip_uri": '"sip:"'}, "targets[0].sip_uri", "host is missing"),
    ({"targets[0].sip_uri": '"sip:3900@"'}, "targets[0].sip_uri", "host is missing"),
    ({"targets[0].sip_uri": '"sip:@pbx.example.com"'}, "targets[0].sip_uri", "empty user"),
    ({"targets[0].sip_uri": '"sip:3900@pbx.example.com:0"'}, "targets[0].sip_uri", "port"),
    ({"targets[0].sip_uri": '"sip:3900@pbx.example.com:65536"'}, "targets[0].sip_uri", "port"),
    ({"targets[0].sip_uri": '"sip:3900@pbx.example.com:sip"'}, "targets[0].sip_uri", "port"),
    ({"targets[0].sip_uri": '"sip:3900@pbx..example.com"'}, "targets[0].sip_uri",
     "not a valid hostname"),
    ({"targets[0].sip_uri": '"sip:3900@-pbx.example.com"'}, "targets[0].sip_uri",
     "not a valid hostname"),
    ({"targets[0].sip_uri": '"sip:3900@pbx_1.example.com"'}, "targets[0].sip_uri",
     "not a valid hostname"),
    ({"targets[0].sip_uri": '"sip:3900@300.1.1.1"'}, "targets[0].sip_uri", "not an IPv4 address"),
    ({"targets[0].sip_uri": '"sip:3900@[2001:db8::g]"'}, "targets[0].sip_uri", "IPv6"),
    ({"targets[0].sip_uri": '"sip:3900@2001:db8::1"'}, "targets[0].sip_uri", "port"),
    ({"targets[0].sip_uri": '"sip:3900 @pbx.example.com"'}, "targets[0].sip_uri", "no spaces"),
    ({"targets[0].sip_uri": '"sip:3900@pbx.example.com;"'}, "targets[0].sip_uri", "parameter"),
    ({"targets[0].sip_uri": '"sip:3900@pbx.example.com?subject=x"'}, "targets[0].sip_uri",
     "headers"),
    ({"targets[0].sip_uri": '""'}, "targets[0].sip_uri", "empty"),
    ({"targets[0].sip_uri": "3900"}, "targets[0].sip_uri", "must be a SIP URI string"),
    ({"sip.registrar": '"pbx.example.com"'}, "sip.registrar", "sip: or sips:"),
    ({"sip.identity": '"sip:probe@"'}, "sip.identity", "host is missing"),
    # bad numbers
    ({"targets[0].number": '"+33 4 72 00 03 90"'}, "targets[0].number", "no spaces or dashes"),
    ({"targets[0].number": '"04-72-00-03-90"'}, "targets[0].number", 'got "04-72-00-03-90"'),
    ({"targets[0].number": '"1"'}, "targets[0].number", "2 to 32"),
    ({"targets[0].number": '"+"'}, "targets[0].number", "2 to 32"),
    ({"targets[0].number": '"33+123"'}, "targets[0].number", "leading"),
    ({"targets[0].number": '"0472abc"'}, "targets[0].number", "digits"),
    ({"targets[0].number": '"' + "1" * 33 + '"'}, "targets[0].number", "2 to 32"),
    ({"targets[0].number": "33472000390"}, "targets[0].number", "got 33472000390"),
    # channels and what they require
    ({"targets[0].channels": "[]"}, "targets[0].channels", "non-empty array"),
    ({"targets[0].channels": '"sip"'}, "targets[0].channels", 'non-empty array of "sip", "gsm"'),
    ({"targets[0].channels": '["voip"]'}, "targets[0].channels[0]", 'unknown channel "voip"'),
    ({"targets[0].channels": '["sip", 1]'}, "targets[0].channels[1]", "unknown channel 1"),
    ({"targets[0].channels": '["sip", "gsm", "sip"]'}, "targets[0].channels[2]",
     'duplicate channel "sip"'),
    ({"targets[1].sip_uri": DROP}, "targets[1].sip_uri",
     'missing: required because channels include "sip"'),
    ({"targets[0].number": DROP}, "targets[0].number",
     'missing: required because channels include "gsm"'),
    ({"targets[1].channels": '["analog", "gsm"]'}, "targets[1].number",
     'channels include "analog" and "gsm"'),
    ({"sip": DROP}, "sip", 'targets "support", "sales" use channel "sip"'),
    ({"sip": DROP, "targets[0].channels": '["gsm"]'}, "sip", 'target "sales" uses channel "sip"'),
    # SIP account rules
    ({"sip.username": DROP}, "sip.username", "required when registrar and password is set"),
    ({"sip.username": DROP, "sip.registrar": DROP}, "sip.username", "when password is set"),
    ({"sip.username": DROP, "sip.password": DROP}, "sip.username", "when registrar is set"),
    ({"mqtt.password": f'"{SECRET}"'}, "mqtt.username", "required when password is set"),
    # secrets
    ({"sip.password_env": '"PROBE_SIP_PASSWORD"'}, "sip.password",
     "at most one of password, password_file, password_env (got password and password_env)"),
    ({"mqtt.username": '"u"', "mqtt.password_file": '"m.pw"', "mqtt.password_env": '"M"'},
     "mqtt.password", "got password_file and password_env"),
    ({"sip.password": DROP, "sip.password_file": '"missing.pw"'}, "sip.password_file",
     "cannot read file"),
    ({"sip.password": DROP, "sip.password_file": '"/nonexistent/sip.pw"'}, "sip.password_file",
     "No such file or directory"),
    ({"sip.password": DROP, "sip.password_env": '"PROBE_SIP_PASSWORD"'}, "sip.password_env",
     "environment variable PROBE_SIP_PASSWORD is not set"),
    ({"sip.password": DROP, "sip.password_env": '""'}, "sip.password_env", "non-empty string"),
    ({"sip.password": '""'}, "sip.password", "must be a non-empty string, got an empty string"),
    ({"sip.password": "1234567"}, "sip.password", "must be a non-empty string, got an integer"),
]
# fmt: on


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    BAD_CASES,
    ids=[f"{key}:{fragment[:30]}" for _, key, fragment in BAD_CASES],
)
def test_bad_value_is_named_by_key(
    tmp_path: Path, overrides: dict[str, Any], key: str, fragment: str
) -> None:
    assert_problem(problems(tmp_path, overrides), key, fragment)


def test_reasons_inside_a_target_name_the_target(tmp_path: Path) -> None:
    found = problems(tmp_path, {"targets[1].expect.max_ring_s": "900"})
    assert found == [
        (
            "targets[1].expect.max_ring_s",
            'must be a number greater than 0 and at most 600 (seconds), got 900 (target "sales")',
        )
    ]


def test_one_mistake_gives_exactly_one_problem(tmp_path: Path) -> None:
    # An invalid sip_uri must not also be reported as "missing" for channel "sip".
    assert [k for k, _ in problems(tmp_path, {"targets[0].sip_uri": '"tel:1"'})] == [
        "targets[0].sip_uri"
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"probe": DROP}, [("probe", "missing (required: a [probe] table with id and site)")]),
        ({"probe": "4"}, [("probe", "must be a table ([probe]), got 4")]),
        (
            {"targets": '[5, "x"]'},
            [
                ("targets[0]", "must be a table ([[targets]]), got 5"),
                ("targets[1]", 'must be a table ([[targets]]), got "x"'),
            ],
        ),
    ],
    ids=["probe-missing", "probe-not-a-table", "targets-not-tables"],
)
def test_a_broken_section_is_not_also_reported_key_by_key(
    tmp_path: Path, overrides: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert problems(tmp_path, overrides) == expected


def test_integer_in_a_secret_is_not_shown(tmp_path: Path) -> None:
    found = problems(tmp_path, {"sip.password": "8675309"})
    assert "8675309" not in repr(found)


# --------------------------------------------------------------------------- secrets


def test_password_file_relative_to_config_dir_one_newline_stripped(tmp_path: Path) -> None:
    (tmp_path / "sip.pw").write_text(SECRET + "\n\n")
    config = load(tmp_path, {"sip.password": DROP, "sip.password_file": '"sip.pw"'})
    assert config.sip is not None and config.sip.password is not None
    assert config.sip.password.reveal() == SECRET + "\n"
    assert config.sip.password.source == f"file:{tmp_path / 'sip.pw'}"


@pytest.mark.parametrize("content", [SECRET, SECRET + "\n", SECRET + "\r\n"])
def test_password_file_line_endings(tmp_path: Path, content: str) -> None:
    (tmp_path / "mqtt.pw").write_bytes(content.encode())
    config = load(tmp_path, {"mqtt.username": '"u"', "mqtt.password_file": '"mqtt.pw"'})
    assert config.mqtt is not None and config.mqtt.password is not None
    assert config.mqtt.password.reveal() == SECRET


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"])
def test_empty_password_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "sip.pw").write_bytes(content)
    found = problems(tmp_path, {"sip.password": DROP, "sip.password_file": '"sip.pw"'})
    assert_problem(found, "sip.password_file", "is empty")


def test_password_file_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "pw").mkdir()
    found = problems(tmp_path, {"sip.password": DROP, "sip.password_file": '"pw"'})
    assert_problem(found, "sip.password_file", "cannot read file")


def test_password_env_set_but_empty(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        {"sip.password": DROP, "sip.password_env": '"PROBE_SIP_PASSWORD"'},
        environ={"PROBE_SIP_PASSWORD": ""},
    )
    assert found == [("sip.password_env", "environment variable PROBE_SIP_PASSWORD is empty")]


def test_password_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PROBE_TEST_SIP_PASSWORD", SECRET)
    path = tmp_path / "probe.toml"
    path.write_text(
        render(build({"sip.password": DROP, "sip.password_env": '"PROBE_TEST_SIP_PASSWORD"'}))
    )
    config = load_config(path)
    assert config.sip is not None and config.sip.password is not None
    assert config.sip.password.reveal() == SECRET


def test_secret_never_shows_itself() -> None:
    secret = Secret(SECRET, source="env:X")
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    assert SECRET not in repr([secret]) and SECRET not in repr({"p": secret})
    assert secret.reveal() == SECRET and secret.source == "env:X"


def test_secret_not_in_asdict_but_equality_still_compares_values(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert SECRET not in repr(dataclasses.asdict(config))
    assert dataclasses.asdict(config)["sip"]["password"] == {"source": "inline"}
    assert Secret("a") == Secret("a", "inline") != Secret("b")
    assert Secret("a", "env:X") != Secret("a", "inline")


def test_secret_absent_from_repr_errors_and_problems(tmp_path: Path) -> None:
    (tmp_path / "mqtt.pw").write_text(SECRET)
    good = load(
        tmp_path, {"mqtt.username": '"u"', "mqtt.password_file": '"mqtt.pw"'}, environ={"X": SECRET}
    )
    assert SECRET not in repr(good) and SECRET not in str(good)

    # Secrets present and valid, plus a pile of unrelated mistakes.
    with pytest.raises(ConfigError) as info:
        load(
            tmp_path,
            {
                "mqtt.password_file": '"mqtt.pw"',  # no username
                "sip.password_env": '"X"',  # two sources
                "probe.id": '"a/b"',
                "targets[1].expect.hold_s": "-3",
            },
            environ={"X": SECRET},
        )
    error = info.value
    assert len(error.problems) == 4
    for text in (str(error), repr(error), repr(error.problems), repr(error.args)):
        assert SECRET not in text


# --------------------------------------------------------------------------- whole files


def test_many_problems_reported_at_once() -> None:
    path = DATA / "many_problems.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    error = info.value
    assert isinstance(error, ProbeError) and isinstance(error, ValueError)
    assert error.source == str(path)
    assert sorted(k for k, _ in error.problems) == sorted(
        [
            "colour",
            "probe.id",
            "mqtt.port",
            "mqtt.username",
            "targets[0].number",
            "targets[0].sip_uri",
            "targets[1].name",
            "targets[1].expect.max_ring_s",
            "sip",
            "modems.gsm",
        ]
    )
    assert "Never-Show-Me-42" not in str(error)
    # One line per problem, each prefixed with the file.
    lines = str(error).splitlines()
    assert len(lines) == len(error.problems)
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_toml_syntax_error_gives_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / "syntax_error.toml", environ={})
    [(key, reason)] = info.value.problems
    assert key == "(file)"
    assert "TOML syntax error" in reason and "line 4, column" in reason


def test_toml_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "probe.toml"
    path.write_text('[probe]\nid = "a"\nid = "b"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert_problem(info.value.problems, "(file)", "line 3")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: None, "No such file or directory"),
        (lambda p: p.mkdir(), "Is a directory"),
        (lambda p: p.write_bytes(b'[probe]\nsite = "Lyon \xe9"\n'), "UTF-8"),
    ],
    ids=["missing", "directory", "not-utf8"],
)
def test_unreadable_file_is_one_problem(tmp_path: Path, make: Any, fragment: str) -> None:
    path = tmp_path / "probe.toml"
    make(path)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    [(key, reason)] = info.value.problems
    assert key == "(file)" and fragment in reason
    assert info.value.source == str(path)


def test_state_dir_relative_to_config_file(tmp_path: Path) -> None:
    config = load(tmp_path, {"probe.state_dir": '"state"'})
    assert config.probe.state_dir == tmp_path / "state"


# --------------------------------------------------------------------------- SIP URI checker


@pytest.mark.parametrize(
    "uri",
    [
        "sip:3900@pbx.example.com",
        "sips:3900@pbx.example.com:5061",
        "sip:pbx.example.com",
        "sip:localhost",
        "SIP:3900@PBX.Example.com",
        "sip:+33472000390@10.0.0.1:5060;user=phone",
        "sip:3900@[2001:db8::1]:5060",
        "sip:3900@[::1]",
        "sip:3900@pbx.example.com;transport=tcp;lr",
        "sip:probe-017@pbx.example.com",
        "sip:alice%40home@pbx.example.com",
    ],
)
def test_good_sip_uris(uri: str) -> None:
    assert sip_uri_problem(uri) is None


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "pbx.example.com",
        "sip:",
        "sip:a@b@c",
        "sip:3900@[::1",
        "sip:3900@pbx.example.com:",
        "sip:3900@1.2.3",
        "sip:3900@pbx.example.com;=x",
        "sip:3900@pbx.example.com\n",
        "sip:3900@" + "a" * 64 + ".com",
    ],
)
def test_bad_sip_uris(uri: str) -> None:
    assert sip_uri_problem(uri)


# --------------------------------------------------------------------------- [audio] (probe/audio)


def test_audio_section_and_target_audio_keys(tmp_path: Path) -> None:
    config = load(tmp_path, {
        "audio": {"zone": '"fr"', "prompts_dir": '"prompts"', "quality": '"pesq"',
                  "vad_model": "false", "jitter_buffer_ms": "80"},
        "targets[0].zone": '"de"', "targets[0].expected_prompts": '["welcome", "closed"]',
    })
    audio = config.audio
    assert (audio.zone, audio.quality, audio.vad_model, audio.jitter_buffer_ms) == (
        "FR", "pesq", False, 80.0)
    assert audio.prompts_dir == tmp_path / "prompts"
    support = config.target("support")
    assert support.zone == "DE" and support.expected_prompts == ("welcome", "closed")
    sales = config.target("sales")
    assert sales.zone is None and sales.expected_prompts == ()


def test_audio_defaults(tmp_path: Path) -> None:
    audio = load(tmp_path).audio
    assert (audio.zone, audio.prompts_dir, audio.quality, audio.vad_model) == (
        None, None, "visqol", True)


def test_audio_problems_are_named_by_key(tmp_path: Path) -> None:
    found = problems(tmp_path, {
        "audio": {"zone": '"XX"', "quality": '"mos"', "vad": "true",
                  "jitter_buffer_ms": "true"},
        "targets[1].expected_prompts": '"welcome"', "targets[1].zone": "7",
    })
    assert_problem(found, "audio.zone", "ISO 3166 code of a country with a tone plan")
    assert_problem(found, "audio.quality", 'must be one of "visqol", "pesq", "off"')
    assert_problem(found, "audio.vad", "unknown key")
    assert_problem(found, "audio.jitter_buffer_ms", "must be a number")
    assert_problem(found, "targets[1].expected_prompts", "array of prompt names")
    assert_problem(found, "targets[1].zone", "ISO 3166")


# --------------------------------------------------------------------------- [modems.*]


def test_modem_sections_parse(tmp_path: Path) -> None:
    config = load(tmp_path, {
        "modems.gsm.model": '"sim7600"', "modems.gsm.audio_port": '"/dev/ttyUSB4"',
        "modems.gsm.power_pin": "4", "modems.gsm.status_pin": "17",
        "modems.gsm.sim_pin": '"1234"', "modems.analog.port": '"rfc2217://10.0.0.7:4001"',
        "modems.analog.ringback_silence_s": "5",
    })
    gsm, analog = config.modem("gsm"), config.modem("analog")
    assert gsm is not None and analog is not None
    assert (gsm.kind, gsm.model, gsm.baud, gsm.power_pin, gsm.status_pin) == (
        "gsm", "sim7600", 115200, 4, 17)
    assert gsm.sim_pin is not None and gsm.sim_pin.reveal() == "1234"
    assert "1234" not in repr(config)
    assert (analog.model, analog.ringback_silence_s) == ("auto", 5.0)


@pytest.mark.parametrize(("overrides", "key", "fragment"), [
    ({"modems.gsm.prot": '"/dev/x"'}, "modems.gsm.prot", 'did you mean "port"?'),
    ({"modems.gsm.port": '"ttyUSB2"'}, "modems.gsm.port", "pyserial URL"),
    ({"modems.gsm.model": '"v253"'}, "modems.gsm.model", "must be one of"),
    ({"modems.gsm.baud": "12345"}, "modems.gsm.baud", "must be one of 9600"),
    ({"modems.gsm.power_pin": "40"}, "modems.gsm.power_pin", "from 0 to 27"),
    ({"modems.gsm.power_pin": "4", "modems.gsm.reset_pin": "4"}, "modems.gsm.reset_pin",
     "already the power_pin"),
    ({"modems.gsm.status_pin": "17"}, "modems.gsm.status_pin", "needs power_pin"),
    ({"modems.gsm.sim_pin": '"12ab"'}, "modems.gsm.sim_pin", "4 to 8 digits"),
    ({"modems.gsm.ringback_silence_s": "5"}, "modems.gsm.ringback_silence_s", "unknown key"),
    ({"modems.analog.port": '"/dev/ttyS0"', "modems.analog.audio_port": '"/dev/x"'},
     "modems.analog.audio_port", "unknown key"),
    ({"modems.gsm": DROP}, "modems.gsm", 'target "support" uses channel "gsm"'),
    ({"targets[1].channels": '["analog"]', "targets[1].number": '"+33472000391"'},
     "modems.analog", 'target "sales" uses channel "analog"'),
    ({"modems.umts": "{}"}, "modems.umts", "unknown key (allowed: gsm, analog)"),
])
def test_modem_problems_are_named_by_key(tmp_path: Path, overrides: dict[str, Any], key: str,
                                         fragment: str) -> None:
    assert_problem(problems(tmp_path, overrides), key, fragment)


# A pin is claimed once across every section: [indicator], [line] (the MCP3008's SPI0) and
# each modem.  The later key is named, with the key (or section) already holding the pin.
PIN_CLASH_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"indicator": {}, "modems.gsm.power_pin": "18"}, "modems.gsm.power_pin",
     "GPIO 18 is already indicator.buzzer_pin"),
    ({"indicator.led": '"single"', "modems.gsm.status_pin": "23", "modems.gsm.power_pin": "4"},
     "modems.gsm.status_pin", "GPIO 23 is already indicator.led_pin"),
    ({"line": {}, "modems.gsm.reset_pin": "9"}, "modems.gsm.reset_pin",
     "GPIO 9 is already [line]'s SPI0 MISO (the MCP3008 on spidev0.0)"),
    ({"line": {}, "modems.gsm.power_pin": "7"}, "modems.gsm.power_pin",
     "GPIO 7 is already [line]'s SPI0 CE1 (kept free for a stock dtparam=spi=on)"),
    ({"modems.gsm.power_pin": "5", "modems.analog.port": '"/dev/ttyS0"',
      "modems.analog.power_pin": "5"}, "modems.analog.power_pin",
     "GPIO 5 is already modems.gsm.power_pin"),
]


@pytest.mark.parametrize(("overrides", "key", "reason"), PIN_CLASH_CASES,
                         ids=[key for _, key, _ in PIN_CLASH_CASES])
def test_a_pin_two_sections_claim_is_one_problem_naming_both(
        tmp_path: Path, overrides: dict[str, Any], key: str, reason: str) -> None:
    assert problems(tmp_path, overrides) == [(key, reason)]


def test_pins_free_in_the_other_sections_are_accepted(tmp_path: Path) -> None:
    # SPI0 is only the line's while [line] is on; a buzzer switched off frees its pin.
    config = load(tmp_path, {"indicator.buzzer": "false", "modems.gsm.power_pin": "18",
                             "modems.gsm.reset_pin": "9"})
    gsm = config.modem("gsm")
    assert gsm is not None and (gsm.power_pin, gsm.reset_pin) == (18, 9)


def test_modem_alsa_device_and_register_wait(tmp_path: Path) -> None:
    config = load(tmp_path, {"modems.gsm.alsa_device": '"plughw:CARD=Device,DEV=0"',
                             "modems.gsm.register_wait_s": "12.5"})
    gsm = config.modem("gsm")
    assert gsm is not None
    assert (gsm.alsa_device, gsm.register_wait_s) == ("plughw:CARD=Device,DEV=0", 12.5)
    default = load(tmp_path).modem("gsm")
    assert default is not None and (default.alsa_device, default.register_wait_s) == (None, 30.0)


@pytest.mark.parametrize(("overrides", "key", "fragment"), [
    ({"modems.gsm.alsa_device": '"hw 1,0"'}, "modems.gsm.alsa_device", "ALSA PCM name"),
    ({"modems.gsm.alsa_device": "3"}, "modems.gsm.alsa_device", "ALSA PCM name"),
    ({"modems.gsm.register_wait_s": "-1"}, "modems.gsm.register_wait_s", "from 0 to 600"),
    ({"modems.analog.port": '"/dev/ttyS0"', "modems.analog.register_wait_s": "5"},
     "modems.analog.register_wait_s", "unknown key"),
])
def test_modem_audio_and_registration_problems(tmp_path: Path, overrides: dict[str, Any],
                                               key: str, fragment: str) -> None:
    assert_problem(problems(tmp_path, overrides), key, fragment)


def test_sim_pin_never_shown_in_problems(tmp_path: Path) -> None:
    found = problems(tmp_path, {"modems.gsm.sim_pin": '"98x7"'})
    assert all("98x7" not in reason for _, reason in found)


# --------------------------------------------------------------------------- [line], [indicator]


def test_line_and_indicator_are_optional_and_empty_tables_give_the_defaults(
        tmp_path: Path) -> None:
    from probe.config.model import IndicatorConfig, LineConfig

    config = load(tmp_path)
    assert config.line is None and config.indicator is None
    config = load(tmp_path, {"line": {}, "indicator": {}})
    assert config.line == LineConfig() and config.indicator == IndicatorConfig()
    assert config.indicator.buzzer_pin == 18 and config.indicator.quiet_hours is None


def test_line_and_indicator_values(tmp_path: Path) -> None:
    config = load(tmp_path, {
        "line.zero_code": "513.7", "line.volts_per_count": "0.48144",
        "line.idle_above_v": "30", "line.sample_rate_hz": "400", "line.adc_channel": "2",
        "indicator.led": '"single"', "indicator.led_pin": "25", "indicator.red_pin": "9",
        "indicator.buzzer": "false", "indicator.quiet_hours": '"21:30-06:45"',
        "indicator.alarm_on": '["down", "degraded"]', "indicator.alarm_repeat_s": "0",
    })
    assert config.line is not None and config.indicator is not None
    assert (config.line.zero_code, config.line.volts_per_count) == (513.7, 0.48144)
    assert config.line.idle_above_v == 30.0 and config.line.adc_channel == 2
    ind = config.indicator
    assert (ind.led, ind.led_pin, ind.buzzer_pin, ind.button_pin) == ("single", 25, None, 27)
    assert ind.quiet_hours == ("21:30", "06:45")
    assert ind.alarm_on == ("down", "degraded") and ind.alarm_repeat_s == 0
    # red_pin = 9 (SPI0 MISO) is fine: a single-LED board does not use it


# fmt: off
BOARD_BAD_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"line": "1"}, "line", "must be a table ([line])"),
    ({"line.sample_rate": "200"}, "line.sample_rate", 'did you mean "sample_rate_hz"?'),
    ({"line.adc_channel": "8"}, "line.adc_channel", "from 0 to 7"),
    ({"line.reference_channel": "0"}, "line.reference_channel", "must differ from adc_channel"),
    ({"line.sample_rate_hz": "20"}, "line.sample_rate_hz", "from 50 to 2000"),
    ({"line.zero_code": '"512"'}, "line.zero_code", "must be a number"),
    ({"line.volts_per_count": "0"}, "line.volts_per_count", "greater than 0"),
    ({"line.off_hook_below_v": "2"}, "line.off_hook_below_v",
     "must be more than line.no_voltage_below_v (2.5) plus twice hysteresis_v (1.5), got 2"),
    ({"line.idle_above_v": "16"}, "line.idle_above_v", "line.off_hook_below_v (15)"),
    ({"line.hysteresis_v": "true"}, "line.hysteresis_v", "got true"),
    ({"line.window_s": "0.05", "line.sample_rate_hz": "100"}, "line.window_s",
     "at least 10 samples"),
    ({"line.settle_s": "0.1"}, "line.settle_s", "at least window_s (0.2)"),
    ({"line.ring_hold_s": "-1"}, "line.ring_hold_s", "from 0 to 60"),
    ({"indicator": "true"}, "indicator", "must be a table ([indicator])"),
    ({"indicator.led": '"blinky"'}, "indicator.led", 'must be one of "rgb", "single", "none"'),
    ({"indicator.buzer": "false"}, "indicator.buzer", 'did you mean "buzzer"?'),
    ({"indicator.red_pin": "1"}, "indicator.red_pin", "from 2 to 27"),
    ({"indicator.red_pin": "28"}, "indicator.red_pin", "from 2 to 27"),
    ({"indicator.green_pin": "9"}, "indicator.green_pin", "GPIO9 is reserved (SPI0 MISO"),
    ({"indicator.button_pin": "14"}, "indicator.button_pin", "reserved (UART0 TXD"),
    ({"indicator.buzzer_pin": "7"}, "indicator.buzzer_pin", "reserved (SPI0 CE1"),
    ({"indicator.buzzer_pin": "5"}, "indicator.buzzer_pin", "GPIO5 is the board's modem_pwrkey"),
    ({"indicator.buzzer_pin": "22"}, "indicator.buzzer_pin",
     "GPIO22 is already indicator.red_pin"),
    ({"indicator.led": '"single"', "indicator.button_pin": "23"}, "indicator.button_pin",
     "GPIO23 is already indicator.led_pin"),
    ({"indicator.buzzer": '"yes"'}, "indicator.buzzer", "true or false"),
    ({"indicator.quiet_hours": '"22-7"'}, "indicator.quiet_hours", '"HH:MM-HH:MM"'),
    ({"indicator.quiet_hours": '"24:00-07:00"'}, "indicator.quiet_hours", "HH:MM"),
    ({"indicator.quiet_hours": '"07:00-07:00"'}, "indicator.quiet_hours", "must differ"),
    ({"indicator.quiet_hours": '["22:00", "07:00"]'}, "indicator.quiet_hours", "got an array"),
    ({"indicator.alarm_on": '["down", "panic"]'}, "indicator.alarm_on", '"down", "degraded"'),
    ({"indicator.alarm_on": '["down", "down"]'}, "indicator.alarm_on", "twice"),
    ({"indicator.alarm_on": '"down"'}, "indicator.alarm_on", "must be an array"),
    ({"indicator.alarm_repeat_s": "-5"}, "indicator.alarm_repeat_s", "from 0 to 86400"),
    ({"indicator.alarm_repeat_max": "1.5"}, "indicator.alarm_repeat_max", "integer"),
]
# fmt: on


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    BOARD_BAD_CASES,
    ids=[f"{key}:{fragment[:30]}" for _, key, fragment in BOARD_BAD_CASES],
)
def test_board_sections_bad_value_is_named_by_key(
    tmp_path: Path, overrides: dict[str, Any], key: str, fragment: str
) -> None:
    assert_problem(problems(tmp_path, overrides), key, fragment)


def test_board_sections_report_every_problem_at_once(tmp_path: Path) -> None:
    found = problems(tmp_path, {"line.adc_channel": "9", "line.colour": "1",
                                "indicator.led": '"x"', "indicator.buzzer_pin": "30"})
    assert sorted(k for k, _ in found) == ["indicator.buzzer_pin", "indicator.led",
                                           "line.adc_channel", "line.colour"]


# --------------------------------------------------------------------------- the JSON Schema

SCHEMA_FILE = ROOT / "probe" / "schema" / "config-v1.json"


def config_validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(".".join(map(str, e.absolute_path)), e.message)
            for e in config_validator().iter_errors(doc)]


def test_the_checked_in_schema_is_the_one_the_declarations_give() -> None:
    # Regenerate with: probe config-schema > probe/schema/config-v1.json
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == config_schema()


def test_probe_config_schema_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    from probe.cli import main

    assert main(["config-schema"]) == 0
    assert capsys.readouterr().out == SCHEMA_FILE.read_text(encoding="utf-8")


def test_every_table_of_the_schema_has_the_keys_the_reader_accepts() -> None:
    # Plant an unknown key in each table the schema describes: the reader's "allowed" list
    # must be exactly the schema's properties, in the same order.
    full = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    full["modems"]["analog"] = {"port": "/dev/ttyS0"}
    full["line"], full["indicator"] = {}, {}
    full["mqtt"]["tls"] = {}
    full["targets"][0].setdefault("diagnose", {})

    def walk(node: dict[str, Any], path: tuple[str | int, ...]) -> list[tuple[Any, dict]]:
        found = [(path, node)]
        for name, prop in node.get("properties", {}).items():
            if prop.get("type") == "object":
                found += walk(prop, (*path, name))
            elif prop.get("type") == "array" and prop["items"].get("type") == "object":
                found += walk(prop["items"], (*path, name, 0))
        return found

    tables = walk(config_schema(), ())
    assert len(tables) == 15  # the top, 12 sections, [modems.gsm] and [modems.analog]
    for path, table in tables:
        doc = copy.deepcopy(full)
        node: Any = doc
        for step in path:
            node = node[step]
        node["zz_unknown"] = 1
        with pytest.raises(ConfigError) as info:
            parse_config(doc, base_dir=EXAMPLE.parent, environ={"PROBE_SIP_PASSWORD": "x"})
        where = ".".join(f"[{p}]" if isinstance(p, int) else p for p in (*path, "zz_unknown"))
        where = where.replace(".[", "[")
        [reason] = [r for k, r in info.value.problems if k == where]
        allowed = re.fullmatch(r"unknown key \(allowed: ([^)]*)\).*", reason)
        assert allowed, reason
        assert allowed[1].split(", ") == list(table["properties"]), where


def test_the_examples_and_the_demo_configs_are_valid_by_the_schema(tmp_path: Path) -> None:
    from probe.demo import fleet, script
    from probe.sim.probe_config import sip_target, write_config

    assert schema_errors(tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))) == []
    # The configurations `probe demo` writes (script.py's probe, fleet.py's three offices),
    # with the stand-ins' addresses filled in.
    name, number, _, _ = script.MOBILE
    for office in ("demo", *fleet.SITES):
        (tmp_path / office).mkdir()
    demo = [write_config(
        tmp_path / "demo", probe_id="demo-probe", site="Demo branch office",
        targets=[*(sip_target(n, "sip:hotline@127.0.0.1:5070", interval_s=900, **script.EXPECT)
                   for n in script.HOTLINES),
                 {"name": name, "number": number, "channels": ["gsm"],
                  "expect": {**script.EXPECT, "hold_s": 3}}],
        mqtt={"host": "127.0.0.1", "port": 1883},
        modems={"gsm": {"port": "/dev/pts/7", "audio_port": "/dev/pts/8"}})]
    for probe_id, site in fleet.SITES.items():
        targets = [sip_target("orders", "sip:orders@127.0.0.1:5071", interval_s=900,
                              **fleet.EXPECT),
                   {"name": "support", "number": "0240000000", "channels": ["analog"],
                    "expect": fleet.EXPECT}]
        demo.append(write_config(tmp_path / probe_id, probe_id=probe_id, site=site,
                                 targets=targets, mqtt={"host": "127.0.0.1", "port": 1883},
                                 modems={"analog": {"port": "/dev/pts/9", "model": "v253"}}))
    for path in demo:
        assert load_config(path) is not None  # the reader takes it ...
        assert schema_errors(tomllib.loads(path.read_text(encoding="utf-8"))) == []  # and so


@pytest.mark.parametrize(("overrides", "where", "fragment"), [
    ({"modems.gsm.power_pin": "40"}, "modems.gsm.power_pin", "40 is greater than the maximum"),
    ({"modems.gsm.prot": '"/dev/x"'}, "modems.gsm", "'prot' was unexpected"),
    ({"targets[1].expect.max_ring_s": "0"}, "targets.1.expect.max_ring_s", "less than or equal"),
    ({"targets[0].channels": '["sip", "isdn"]'}, "targets.0.channels.1", "'isdn' is not one of"),
    ({"indicator.buzzer": '"yes"'}, "indicator.buzzer", "'yes' is not of type 'boolean'"),
    ({"probe.site": DROP}, "probe", "'site' is a required property"),
    ({"mqtt.port": "true"}, "mqtt.port", "True is not of type 'integer'"),
])
def test_a_bad_file_is_refused_by_the_schema_as_by_the_reader(
        tmp_path: Path, overrides: dict[str, Any], where: str, fragment: str) -> None:
    doc = tomllib.loads(render(build(overrides)))
    assert any(k == where and fragment in m for k, m in schema_errors(doc)), schema_errors(doc)
    assert problems(tmp_path, overrides)  # the reader refuses it too
