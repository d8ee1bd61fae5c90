"""probe/schema/asyncapi.yaml: valid for the official AsyncAPI parser, and its MQTT bindings
(QoS, retain, the last will, the CONNECT) the same as what probe/uplink/mqtt.py does on the wire."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.config.model import MqttConfig
from probe.sim.broker import LocalBroker, Message, Subscriber
from probe.uplink import mqtt
from probe.uplink.mqtt import Publisher
from tests.asyncapi import checker

REPO = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO / "probe" / "schema"
DOCUMENT = SCHEMA_DIR / "asyncapi.yaml"
PREFIX = f"{mqtt.TOPIC_ROOT}/{{probeId}}/"


def _doc() -> dict[str, Any]:
    return yaml.safe_load(DOCUMENT.read_text())


def _ref(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _operations(doc: dict[str, Any], action: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Operation name -> (its channel's leaf under the probe's tree, its MQTT binding)."""
    found = {}
    for name, op in doc["operations"].items():
        if op["action"] != action:
            continue
        address = _ref(doc, op["channel"]["$ref"])["address"]
        if address.startswith(PREFIX):
            found[name] = (address.removeprefix(PREFIX), op["bindings"]["mqtt"])
    return found


def _server_binding(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["servers"]["broker"]["bindings"]["mqtt"]


# -- the parser ------------------------------------------------------------------------------------


BREAKAGES = [
    # (what is broken, how, the path the parser must point at)
    ("a QoS MQTT has not", lambda d: d["operations"]["publishResult"]["bindings"]["mqtt"]
     .update(qos=3), ["operations", "publishResult", "bindings", "mqtt"]),
    ("a will whose retain flag is a string", lambda d: _server_binding(d)["lastWill"]
     .update(retain="yes"), ["servers", "broker", "bindings", "mqtt"]),
    ("an unknown key in a binding", lambda d: _server_binding(d).update(cleanStart=False),
     ["servers", "broker", "bindings", "mqtt"]),
    ("an operation on a channel that does not exist", lambda d: d["operations"]["publishHealth"]
     ["channel"].update({"$ref": "#/channels/nowhere"}), ["operations", "publishHealth"]),
]


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The parser's diagnostics for the document ("") and for each broken copy of it (next to
    the schemas it refers to), from one run of the parser."""
    paths = {"": DOCUMENT}
    for what, break_it, _ in BREAKAGES:
        folder = tmp_path_factory.mktemp("broken")
        shutil.copy(SCHEMA_DIR / "result-v1.json", folder)
        doc = _doc()
        break_it(doc)
        paths[what] = folder / "asyncapi.yaml"
        paths[what].write_text(yaml.safe_dump(doc, sort_keys=False))
    return dict(zip(paths, checker.diagnostics(*paths.values()), strict=True))


def test_the_official_parser_finds_no_error_in_the_document(parsed) -> None:
    found = parsed[""]
    assert checker.errors(found) == [], json.dumps(found, indent=1)


@pytest.mark.parametrize(("what", "where"), [(b[0], b[2]) for b in BREAKAGES],
                         ids=[b[0] for b in BREAKAGES])
def test_a_broken_copy_of_the_document_gives_an_error(parsed, what: str,
                                                      where: list[str]) -> None:
    """The check can fail: each broken copy is an error at the broken spot."""
    found = checker.errors(parsed[what])
    assert found, f"{what}: no error"
    assert any(d["path"][:len(where)] == where for d in found), json.dumps(found, indent=1)


# -- the bindings against the code ---------------------------------------------------------------


def test_operation_bindings_are_the_publishers_delivery_table() -> None:
    doc = _doc()
    sends = _operations(doc, "send")
    bound = {leaf: (b["qos"], b["retain"]) for leaf, b in sends.values()}
    assert bound == mqtt.DELIVERY
    (receive,) = _operations(doc, "receive").values()
    assert receive[0] == "cmd/{command}"
    assert receive[1]["qos"] == mqtt.SUBSCRIBE_QOS
    assert all(b["bindingVersion"] == "0.2.0" for _, b in [*sends.values(), receive])


def test_server_binding_is_the_probes_connect_and_will() -> None:
    binding = _server_binding(_doc())
    defaults = inspect.signature(Publisher).parameters
    assert binding["clientId"] == "{probeId}"  # Publisher: client_id=probe_id
    assert binding["cleanSession"] is False
    assert binding["keepAlive"] == defaults["keepalive_s"].default == MqttConfig.keepalive_s
    expiry = binding["sessionExpiryInterval"]
    assert expiry["default"] == defaults["session_expiry_s"].default \
        == MqttConfig.session_expiry_s
    assert binding["maximumPacketSize"] == defaults["max_packet_size"].default \
        == mqtt.MAX_INCOMING_PACKET
    will = binding["lastWill"]
    assert will["topic"] == PREFIX + mqtt.STATUS
    assert (will["qos"], will["retain"]) == mqtt.DELIVERY[mqtt.STATUS]
    assert json.loads(will["message"]) == {"state": "offline", "boot": 0,
                                           "reason": mqtt.WILL_REASON}


def test_message_bindings_carry_the_content_type_the_probe_sets() -> None:
    doc = _doc()
    messages = doc["components"]["messages"]
    json_messages = ("status", "result", "health", "commandReply")
    for name in json_messages:
        assert messages[name]["contentType"] == mqtt.JSON_CONTENT_TYPE
        assert messages[name]["bindings"]["mqtt"]["contentType"] == mqtt.JSON_CONTENT_TYPE
    command = messages["command"]["bindings"]["mqtt"]
    assert command["responseTopic"] == PREFIX + mqtt.CMD_REPLY


# -- the bindings against mosquitto --------------------------------------------------------------


def test_what_the_broker_receives_has_the_bound_qos_and_retain(broker: LocalBroker) -> None:
    """Every send operation, published the way the probe publishes it (defaults), arrives with
    the binding's QoS and retain flag (live, retain-as-published); the CONNECT is the
    server binding's."""
    doc = _doc()
    sends = _operations(doc, "send")
    with Subscriber(broker.host, broker.port, f"{mqtt.TOPIC_ROOT}/p1/#", qos=2) as sub, \
            Publisher(probe_id="p1", host=broker.host, port=broker.port) as pub:
        for leaf, _ in sends.values():
            if leaf != mqtt.STATUS:  # the birth is the publisher's own
                assert pub.publish(leaf, {"leaf": leaf}).wait(5)
        got = sub.wait_for(lambda ms: {m.topic for m in ms} >= {
            f"{mqtt.TOPIC_ROOT}/p1/{leaf}" for leaf, _ in sends.values()}, timeout=5)
    first: dict[str, Message] = {}
    for message in got:
        first.setdefault(message.topic, message)
    for leaf, binding in sends.values():
        message = first[f"{mqtt.TOPIC_ROOT}/p1/{leaf}"]
        assert (message.qos, message.retain) == (binding["qos"], binding["retain"]), leaf
    server = _server_binding(doc)
    # mosquitto: "New client connected from <addr> as <client id> (p5, c<clean start>, k<keep>)"
    connect = re.search(r"as p1 \(p5, c(\d), k(\d+)\)", broker.log_text())
    assert connect is not None, broker.log_text()[-2000:]  # client id = probe id, MQTT 5
    assert connect.groups() == (str(int(server["cleanSession"])), str(server["keepAlive"]))


_CHILD = """
import sys, time
from probe.uplink.mqtt import Publisher
pub = Publisher(probe_id="p1", host=sys.argv[1], port=int(sys.argv[2]), boot_count=9)
if not pub.wait_connected(5):
    sys.exit(3)
time.sleep(60)  # until SIGKILL
"""


def test_the_last_will_is_the_bound_one(broker: LocalBroker) -> None:
    will = _server_binding(_doc())["lastWill"]
    topic = will["topic"].replace("{probeId}", "p1")
    with Subscriber(broker.host, broker.port, topic) as sub:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, broker.host, str(broker.port)],
                                 cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            sub.wait_for(lambda ms: any(m.json()["state"] == "online" for m in ms), timeout=8)
            child.send_signal(signal.SIGKILL)
            child.wait(5)
            got = sub.wait_for(lambda ms: any(m.json()["state"] == "offline" for m in ms), 5)
        finally:
            child.kill()
            child.wait(5)
    message = next(m for m in got if m.json()["state"] == "offline")
    assert message.json() == {**json.loads(will["message"]), "boot": 9}
    assert (message.qos, message.retain) == (will["qos"], will["retain"])
