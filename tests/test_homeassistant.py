"""Home Assistant MQTT discovery (probe/uplink/homeassistant.py): its configuration, its configs and
templates (rendered with Jinja as Home Assistant renders them), the broker ACL it needs, and the
daemon publishing it against a real mosquitto and a SIPp hotline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from probe.config.model import HomeAssistantConfig, parse_config
from probe.errors import ConfigError
from probe.results.document import result_schema
from probe.sim import probe_config
from probe.sim.broker import LocalBroker, Message, Subscriber
from probe.sim.hotline import HotlineBehaviour, SippHotline
from probe.uplink import homeassistant as ha
from probe.uplink.mqtt import Publisher

jinja2 = pytest.importorskip("jinja2")  # what Home Assistant renders its templates with

REPO = Path(__file__).resolve().parents[1]
ASYNCAPI = yaml.safe_load((REPO / "probe" / "schema" / "asyncapi.yaml").read_text())
PROBE = "ha-1"
STATUS = f"hotline-probe/v1/{PROBE}/status"
BASE = {"probe": {"id": PROBE, "site": "Office"}, "mqtt": {"host": "127.0.0.1"},
        "targets": [{"name": "support", "sip_uri": "sip:3900@127.0.0.1", "channels": ["sip"]}],
        "sip": {"registrar": "sip:127.0.0.1", "username": "u", "password": "p"}}


def render(template: str, payload: bytes) -> str:
    """A value template on an MQTT payload, as Home Assistant does it (a sandbox, ``value`` and
    ``value_json``); undefined names are errors here, so a sloppy template cannot pass."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    text = payload.decode()
    return env.from_string(template).render(value=text, value_json=json.loads(text))


# -- configuration --------------------------------------------------------------------------------


def test_discovery_is_off_by_default_and_on_when_asked() -> None:
    assert parse_config(BASE).homeassistant == HomeAssistantConfig(False, "homeassistant")
    on = parse_config({**BASE, "homeassistant": {"enabled": True, "discovery_prefix": "ha/x"}})
    assert on.homeassistant == HomeAssistantConfig(True, "ha/x")


@pytest.mark.parametrize(("section", "changes", "key", "words"), [
    ({"enable": True}, {}, "homeassistant.enable", 'did you mean "enabled"'),
    ({"enabled": "yes"}, {}, "homeassistant.enabled", "true or false"),
    ({"discovery_prefix": "home/+/x"}, {}, "homeassistant.discovery_prefix", "wildcards"),
    ({"discovery_prefix": "a//b"}, {}, "homeassistant.discovery_prefix", "empty levels"),
    ({"enabled": True, "discovery_prefix": "hotline-probe/ha"}, {},
     "homeassistant.discovery_prefix", "own topic tree"),
    ({"enabled": True}, {"mqtt": None}, "homeassistant.enabled", "[mqtt]"),
    ({"enabled": True}, {"probe": {"id": "ha.1", "site": "x"}}, "homeassistant.enabled",
     "not a Home Assistant node id"),
])
def test_bad_sections_are_refused_with_their_key_path(section, changes, key, words) -> None:
    """Every problem names its key path; ``changes`` maps a top-level key to its new value
    (None: removed)."""
    data = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        parse_config({**data, "homeassistant": section})
    problems = caught.value.problems
    assert any(k == key and words in reason for k, reason in problems), problems


def test_the_example_configuration_shows_every_key() -> None:
    import tomllib

    example = tomllib.loads((REPO / "examples" / "probe.toml").read_text())["homeassistant"]
    assert set(example) == set(HomeAssistantConfig.__dataclass_fields__)
    assert example == {"enabled": False, "discovery_prefix": "homeassistant"}  # the defaults


# -- configs and templates ------------------------------------------------------------------------


def _status(**targets: Any) -> bytes:
    return json.dumps({"state": "online", "boot": 3, "since": "2026-12-02T08:00:00.123Z",
                       "targets": targets, "probe": {"ok": True, "faults": []}}).encode()


def _entry(verdict: str, **last: Any) -> dict[str, Any]:
    call = {"id": "0b6c9a52-1b47-4bd5-a7b6-1b3f0c2d9e11", "at": "2026-12-02T08:15:12.431Z",
            "channel": "sip", "outcome": "answered", "met": True, "post_dial_delay_ms": 812,
            "mos": 4.12, **last}
    return {"verdict": verdict, "summary": "", "causes": [], "at": call["at"],
            "channels": {"sip": call["outcome"]}, "last_call": call}


def test_configs_name_the_probe_and_each_target_on_the_discovery_topics() -> None:
    configs = ha.discovery_configs(PROBE, ["support", "sales"], "homeassistant")
    expected = {f"homeassistant/binary_sensor/{PROBE}/probe_fault/config"} | {
        f"homeassistant/{component}/{PROBE}/{target}_{suffix}/config"
        for target in ("support", "sales") for suffix, component in ha.TARGET_ENTITIES.items()}
    assert set(configs) == expected
    schema = ASYNCAPI["components"]["messages"]["homeAssistantDiscovery"]["payload"]
    for config in configs.values():
        jsonschema.validate(config, schema)  # the contract's description of them
        assert config["state_topic"] == STATUS
        assert config["availability"] == [{
            "topic": STATUS, "value_template": "{{ value_json.state }}",
            "payload_available": "online", "payload_not_available": "offline"}]
        assert config["device"]["identifiers"] == [f"hotline-probe_{PROBE}"]
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    outcome = configs[f"homeassistant/sensor/{PROBE}/support_outcome/config"]
    assert outcome["options"] == result_schema()["properties"]["outcome"]["enum"]
    pdd = configs[f"homeassistant/sensor/{PROBE}/support_post_dial_delay/config"]
    assert (pdd["device_class"], pdd["unit_of_measurement"]) == ("duration", "ms")


@pytest.mark.parametrize(("entry", "expected"), [
    (_entry("ok"), {"problem": "OFF", "post_dial_delay": "812", "mos": "4.12",
                    "outcome": "answered"}),
    (_entry("degraded", post_dial_delay_ms=9120), {"problem": "ON", "post_dial_delay": "9120"}),
    (_entry("down", outcome="busy", post_dial_delay_ms=None, mos=None),
     {"problem": "ON", "post_dial_delay": "None", "mos": "None", "outcome": "busy"}),
    (_entry("unknown"), {"problem": "None"}),
    (None, dict.fromkeys(ha.TARGET_ENTITIES, "None")),  # no call yet: unknown
])
def test_templates_render_the_status_entry(entry, expected) -> None:
    payload = _status(**({"support": entry} if entry else {}), other=_entry("down"))
    rendered = {suffix: render(t, payload) for suffix, t in ha.templates("support").items()}
    assert {k: rendered[k] for k in expected} == expected


def test_the_last_will_makes_everything_unavailable_and_unknown() -> None:
    will = json.dumps({"state": "offline", "boot": 3, "reason": "connection lost"}).encode()
    assert render(ha.AVAILABILITY_TEMPLATE, will) == "offline"
    assert render(ha.AVAILABILITY_TEMPLATE, _status()) == "online"
    assert {render(t, will) for t in ha.templates("support").values()} == {"None"}
    assert render(ha.PROBE_TEMPLATE, will) == "None"
    faulty = json.dumps({"state": "online", "boot": 1,
                         "probe": {"ok": False, "faults": ["line.no_voltage"]}}).encode()
    assert (render(ha.PROBE_TEMPLATE, faulty), render(ha.PROBE_TEMPLATE, _status())) == \
        ("ON", "OFF")


def test_a_target_name_cannot_break_out_of_its_template() -> None:
    with pytest.raises(ValueError):
        ha.templates("x') or ('")


# -- the broker's ACL -----------------------------------------------------------------------------

ACL_LINE = "pattern write homeassistant/+/%u/+/config"


def test_the_documented_acl_line_lets_a_probe_write_its_own_configs_only() -> None:
    shipped = (REPO / "deploy" / "mosquitto" / "hotline-probe.acl").read_text()
    assert f"# {ACL_LINE}\n" in shipped  # off, as discovery is by default
    enabled = shipped.replace(f"# {ACL_LINE}\n", f"{ACL_LINE}\n")
    own = f"homeassistant/sensor/{PROBE}/support_mos/config"
    foreign = "homeassistant/sensor/other-probe/support_mos/config"
    for acl, allowed in ((shipped, False), (enabled, True)):
        with LocalBroker(acl=acl) as broker, \
                Publisher(probe_id=PROBE, username=PROBE, host=broker.host,
                          port=broker.port) as pub:
            mine = pub.publish_to(own, {"name": "x"}, retain=True)
            theirs = pub.publish_to(foreign, {"name": "x"}, retain=True)
            assert mine.wait(5) is allowed, mine
            assert theirs.wait(5) is False and theirs.reason_code == 0x87
            assert pub.publish("status", {}).wait(5)  # the rest of its tree as before


def _ansible_acl(**variables: Any) -> list[str]:
    role = REPO / "ansible" / "roles" / "broker"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)  # as Ansible
    text = env.from_string((role / "templates" / "hotline-probe.acl.j2").read_text()).render(
        {**defaults, "ansible_managed": "managed",
         "broker_ops_consumers": ["ops-dashboard", "hotline-probe-ops"],  # as shipped
         **variables})
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_ansible_broker_role_writes_the_line_only_when_given_a_prefix() -> None:
    shipped = (REPO / "deploy" / "mosquitto" / "hotline-probe.acl").read_text()
    significant = [line for line in shipped.splitlines()
                   if line.strip() and not line.startswith("#")]
    assert _ansible_acl() == significant
    with_ha = _ansible_acl(broker_homeassistant_discovery_prefix="homeassistant")
    assert [line for line in with_ha if line not in significant] == [ACL_LINE]


# -- the daemon -----------------------------------------------------------------------------------


def _write(tmp_path: Path, broker: LocalBroker, uri: str, targets: tuple[str, ...],
           enabled: bool) -> Path:
    return probe_config.write_config(
        tmp_path, probe_id=PROBE, site="Small office", probe={"max_jitter_s": 0},
        mqtt=probe_config.broker_section(broker, keepalive_s=5),
        homeassistant={"enabled": enabled},
        audio={"quality": "off", "vad_model": False},  # spares the CPU; MOS from the E-model
        targets=[probe_config.sip_target(name, uri, interval_s=3600, hold_s=0.3)
                 for name in targets])


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "probe", "run", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _called(*names: str):
    """A status saying every one of ``names`` had its call."""
    def predicate(messages: list[Message]) -> bool:
        return any(m.topic == STATUS and all(
            "last_call" in (m.json().get("targets") or {}).get(n, {}) for n in names)
            for m in messages)
    return predicate


def _last_status(messages: list[Message]) -> Message:
    return [m for m in messages if m.topic == STATUS][-1]


def _mos(result: dict[str, Any]) -> str:
    quality = result["analysis"]["quality"] if result.get("analysis") else {}
    for key in ("full_reference", "emodel"):
        if (quality.get(key) or {}).get("mos") is not None:
            return str(quality[key]["mos"])
    return "None"


@pytest.mark.slow
def test_daemon_publishes_discovery_whose_templates_read_its_status(tmp_path: Path,
                                                                     broker: LocalBroker) -> None:
    binding = ASYNCAPI["operations"]["publishHomeAssistantDiscovery"]["bindings"]["mqtt"]
    with SippHotline(HotlineBehaviour(pdd_ms=300, ring_ms=100), calls=4) as hotline, \
            Subscriber(broker.host, broker.port, "#", qos=2) as sub:
        config = _write(tmp_path, broker, hotline.uri, ("support", "sales"), enabled=True)
        proc = _start(config)
        try:
            messages = sub.wait_for(lambda ms: _called("support", "sales")(ms) and sum(
                m.topic.endswith("/result") for m in ms) == 2, timeout=60)
            configs = {m.topic: m for m in messages if m.topic.startswith("homeassistant/")}
            assert set(configs) == set(ha.discovery_configs(PROBE, ["support", "sales"]))
            for message in configs.values():
                assert (message.qos, message.retain) == (binding["qos"], binding["retain"])
                assert message.properties.ContentType == "application/json"
            status = _last_status(messages)
            results = {m.json()["target"]: m.json() for m in messages
                       if m.topic.endswith("/result")}
            for name in ("support", "sales"):
                result = results[name]
                expected = {"problem": {"ok": "OFF", "degraded": "ON", "down": "ON"}.get(
                                status.json()["targets"][name]["verdict"], "None"),
                            "post_dial_delay": str(result["timings_ms"]["post_dial_delay"]),
                            "mos": _mos(result), "outcome": result["outcome"]}
                assert expected["outcome"] == "answered"
                float(expected["mos"])  # a real measure (the E-model's), not "None"
                for suffix, component in ha.TARGET_ENTITIES.items():
                    cfg = configs[f"homeassistant/{component}/{PROBE}/{name}_{suffix}/config"]
                    template = cfg.json()["value_template"]
                    assert render(template, status.payload) == expected[suffix], suffix
            fault = configs[f"homeassistant/binary_sensor/{PROBE}/probe_fault/config"].json()
            assert render(fault["value_template"], status.payload) == "OFF"
            assert render(fault["availability"][0]["value_template"], status.payload) == "online"

            # A reload that drops "sales" deletes its entities (empty retained configs).
            gone = {t for t in configs if "/sales_" in t}
            _write(tmp_path, broker, hotline.uri, ("support",), enabled=True)
            proc.send_signal(signal.SIGHUP)
            sub.wait_for(lambda ms: {m.topic for m in ms if m.topic in gone
                                     and m.payload == b""} == gone, timeout=10)
            kept = set(configs) - gone
            with Subscriber(broker.host, broker.port, "homeassistant/#") as late:
                late.wait_for(lambda ms: {m.topic for m in ms} >= kept, timeout=5)
                time.sleep(0.2)  # room for a deleted one to show up
                assert {m.topic for m in late.messages} == kept
                assert all(m.retain for m in late.messages)

            # Killed: the broker's last will makes the entities unavailable.
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            will = sub.wait_for(lambda ms: _last_status(ms).json()["state"] == "offline", 10)
            payload = _last_status(will).payload
            assert render(fault["availability"][0]["value_template"], payload) == "offline"
        finally:
            proc.kill()
            _, err = proc.communicate(timeout=10)
        assert "Traceback" not in err, err


@pytest.mark.slow
def test_daemon_publishes_nothing_under_the_prefix_when_disabled(tmp_path: Path,
                                                                  broker: LocalBroker) -> None:
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=100), calls=1) as hotline, \
            Subscriber(broker.host, broker.port, "#") as sub:
        proc = _start(_write(tmp_path, broker, hotline.uri, ("support",), enabled=False))
        try:
            sub.wait_for(_called("support"), timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)  # a planned stop sends the result first
            proc.communicate(timeout=15)
        sub.wait_for(lambda ms: any(m.topic.endswith("/result") for m in ms), timeout=5)
    assert [m.topic for m in sub.messages if not m.topic.startswith("hotline-probe/")] == []
