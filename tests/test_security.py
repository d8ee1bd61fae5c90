"""TLS and ACLs against a real mosquitto running the shipped security settings.

Certificates come from a throw-away CA made by the test; the broker takes the TLS, identity and
ACL settings of ``deploy/mosquitto/`` verbatim (only file paths and the port are the test's).
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from probe.config.model import MqttConfig, MqttTls
from probe.sim.broker import LocalBroker, Subscriber
from probe.uplink.mqtt import RECORDING, Publisher, message_properties
from probe.uplink.tls import tls_context
from tests.pki import Issued, TestCA

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
TLS_KEYS = ("protocol", "tls_version", "cafile", "certfile", "keyfile", "crlfile",
            "require_certificate", "use_identity_as_username", "use_username_as_clientid")
NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    directory = tmp_path_factory.mktemp("pki")
    ca = TestCA(directory)
    rogue = TestCA(directory / "rogue", name="rogue CA")
    return {
        "ca": ca,
        "broker": ca.issue("localhost", server=True),
        "p-a": ca.issue("p-a"),
        "p-b": ca.issue("p-b"),
        "ops": ca.issue("ops-dashboard"),
        "expired": ca.issue("p-old", expired=True),
        "rogue": rogue.issue("p-a"),
        "crl": ca.crl(),
    }


def shipped_tls_settings(pki: dict) -> str:
    """The shipped listener's security lines, with the test's files."""
    paths = {"/etc/mosquitto/certs/ca.crt": pki["ca"].cert_file,
             "/etc/mosquitto/certs/broker.crt": pki["broker"].cert,
             "/etc/mosquitto/certs/broker.key": pki["broker"].key,
             "/etc/mosquitto/certs/ca.crl": pki["crl"]}
    lines = []
    for line in (DEPLOY / "hotline-probe.conf").read_text().splitlines():
        if line.split(" ", 1)[0] in TLS_KEYS:
            for shipped, ours in paths.items():
                line = line.replace(shipped, str(ours))
            lines.append(line)
    assert len(lines) == len(TLS_KEYS), lines
    return "\n".join(lines)


@pytest.fixture(scope="module")
def tls_broker(pki: dict) -> LocalBroker:
    broker = LocalBroker(allow_anonymous=False, acl=(DEPLOY / "hotline-probe.acl").read_text(),
                         extra_config=shipped_tls_settings(pki))
    with broker:
        yield broker


def context_for(pki: dict, who: str | None) -> ssl.SSLContext:
    issued: Issued | None = pki[who] if who else None
    if issued is not None:
        return tls_context(MqttConfig(host="127.0.0.1", tls=MqttTls(
            pki["ca"].cert_file, issued.cert, issued.key)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki["ca"].cert_file))
    return context


def publisher(pki: dict, broker: LocalBroker, cert: str, probe_id: str) -> Publisher:
    return Publisher(probe_id=probe_id, host=broker.host, port=broker.port,
                     tls=context_for(pki, cert), reconnect_delay_s=(0.2, 1.0))


def connects(pki: dict, broker: LocalBroker, context: ssl.SSLContext) -> bool:
    """Whether a client with this TLS context gets a successful CONNACK."""
    accepted = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="tester", protocol=paho.MQTTv5)
    client.on_connect = lambda c, u, f, rc, p: accepted.set() if not rc.is_failure else None
    client.tls_set_context(context)
    try:
        client.connect(broker.host, broker.port, keepalive=5)
    except (ssl.SSLError, OSError):
        return False
    client.loop_start()
    ok = accepted.wait(3)
    client.loop_stop()
    client.disconnect()
    return ok


def test_probe_publishes_its_own_tree_over_tls(pki: dict, tls_broker: LocalBroker) -> None:
    ops = context_for(pki, "ops")
    with Subscriber(tls_broker.host, tls_broker.port, "hotline-probe/v1/#", tls=ops) as sub, \
            publisher(pki, tls_broker, "p-a", "p-a") as pub:
        delivery = pub.publish("result", {"id": "r1"})
        assert delivery.wait(5)
        sub.wait_for(lambda msgs: any(m.topic == "hotline-probe/v1/p-a/result" for m in msgs))


def test_probe_cannot_write_another_probes_tree(pki: dict, tls_broker: LocalBroker) -> None:
    # p-a's certificate, pretending to be p-b: every topic of p-b is refused with 0x87.
    with Subscriber(tls_broker.host, tls_broker.port, "hotline-probe/v1/p-b/#",
                    tls=context_for(pki, "ops")) as sub, \
            publisher(pki, tls_broker, "p-a", "p-b") as impostor:
        for leaf in ("result", "health", "recording", "cmd-reply"):
            delivery = impostor.publish(leaf, {"forged": True})
            assert not delivery.wait(5)
            assert delivery.reason_code == NOT_AUTHORIZED
        impostor.publish("result", {"forged": True}).wait(5)
    assert not [m for m in sub.messages if b"forged" in m.payload]


def test_probe_uploads_only_its_own_recordings(pki: dict, tls_broker: LocalBroker) -> None:
    """The shipped ACL lets p-a write its own recording topic, and refuses it p-b's."""
    props = message_properties("audio/flac", (("result_id", "r1"), ("duration_s", "1.000")))
    with Subscriber(tls_broker.host, tls_broker.port, "hotline-probe/v1/+/recording",
                    tls=context_for(pki, "ops")) as sub:
        with publisher(pki, tls_broker, "p-a", "p-a") as own:
            assert own.publish(RECORDING, b"fLaC-own", properties=props).wait(5)
        with publisher(pki, tls_broker, "p-a", "p-b") as impostor:
            forged = impostor.publish(RECORDING, b"fLaC-forged", properties=props)
            assert not forged.wait(5)
            assert forged.reason_code == NOT_AUTHORIZED
        (message,) = sub.wait_for(lambda msgs: len(msgs) == 1, timeout=5)
    assert (message.topic, message.payload) == ("hotline-probe/v1/p-a/recording", b"fLaC-own")
    assert [m for m in sub.messages if m.payload == b"fLaC-forged"] == []


def test_probe_cannot_forge_commands_even_to_itself(pki: dict, tls_broker: LocalBroker) -> None:
    with publisher(pki, tls_broker, "p-a", "p-a") as pub:
        delivery = pub.publish("cmd/run", {"target": "x"})
        assert not delivery.wait(5)
        assert delivery.reason_code == NOT_AUTHORIZED


def test_probe_reads_only_its_own_commands(pki: dict, tls_broker: LocalBroker) -> None:
    a_ctx, b_ctx = context_for(pki, "p-a"), context_for(pki, "p-b")
    with Subscriber(tls_broker.host, tls_broker.port, "hotline-probe/v1/p-b/cmd/#",
                    tls=a_ctx, client_id="p-a") as spy, \
            Subscriber(tls_broker.host, tls_broker.port, "hotline-probe/v1/p-b/cmd/#",
                       tls=b_ctx, client_id="p-b") as owner, \
            Subscriber(tls_broker.host, tls_broker.port, "hotline-probe/v1/p-a/cmd/#",
                       tls=a_ctx, client_id="p-a-own") as own:
        ops = paho.Client(CallbackAPIVersion.VERSION2, client_id="ops", protocol=paho.MQTTv5)
        ops.tls_set_context(context_for(pki, "ops"))
        ops.connect(tls_broker.host, tls_broker.port)
        ops.loop_start()
        try:
            ops.publish("hotline-probe/v1/p-b/cmd/health", b"{}", qos=1).wait_for_publish(5)
            ops.publish("hotline-probe/v1/p-a/cmd/health", b"{}", qos=1).wait_for_publish(5)
        finally:
            ops.loop_stop()
            ops.disconnect()
        owner.wait_for(lambda msgs: len(msgs) == 1, timeout=5)
        own.wait_for(lambda msgs: len(msgs) == 1, timeout=5)
        assert spy.messages == []  # the SUBACK granted it, the ACL filters at delivery


@pytest.mark.parametrize("who", ["expired", "rogue", None],
                         ids=["expired certificate", "untrusted CA", "no client certificate"])
def test_broker_refuses_bad_or_missing_certificates(pki: dict, tls_broker: LocalBroker,
                                                    who: str | None) -> None:
    context = _rogue_context(pki) if who == "rogue" else context_for(pki, who)
    assert not connects(pki, tls_broker, context)
    assert connects(pki, tls_broker, context_for(pki, "p-a"))  # and a good one still works


def _rogue_context(pki: dict) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki["ca"].cert_file))
    context.load_cert_chain(str(pki["rogue"].cert), str(pki["rogue"].key))
    return context


def test_probe_never_accepts_a_broker_it_cannot_verify(pki: dict, tls_broker: LocalBroker,
                                                       tmp_path: Path) -> None:
    other = TestCA(tmp_path / "other", name="other CA")
    mine = pki["p-a"]
    context = tls_context(MqttConfig(host="127.0.0.1", tls=MqttTls(other.cert_file, mine.cert,
                                                                   mine.key)))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert not connects(pki, tls_broker, context)
