"""probe.uplink.mqtt against a real mosquitto (probe.sim.broker): the MQTT contract of
probe/schema/asyncapi.yaml."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from probe.sim.broker import LocalBroker, Message, Subscriber
from probe.uplink.mqtt import (
    Delivery,
    Publisher,
    PublisherClosed,
    encode_payload,
    message_properties,
    topic,
)

REPO = Path(__file__).resolve().parents[1]
STATUS = "hotline-probe/v1/p1/status"
RESULT = "hotline-probe/v1/p1/result"


def _status(messages: list[Message]) -> list[dict]:
    return [m.json() for m in messages if m.topic == STATUS]


def _has_status(state: str, **fields: object):
    def predicate(messages: list[Message]) -> bool:
        return any(
            s["state"] == state and all(s.get(k) == v for k, v in fields.items())
            for s in _status(messages)
        )

    return predicate


# -- pure functions -------------------------------------------------------------------------------


def test_topic_builds_the_probe_tree_and_rejects_what_would_break_it():
    assert topic("p1", "status") == STATUS
    assert topic("p1", "cmd/reboot") == "hotline-probe/v1/p1/cmd/reboot"
    for probe_id, leaf in [
        ("", "status"),
        ("a/b", "status"),
        ("p+", "status"),
        ("p1", ""),
        ("p1", "#"),
        ("p1", "cmd//x"),
        ("p1", "/status"),
    ]:
        with pytest.raises(ValueError):
            topic(probe_id, leaf)


def test_payloads_dicts_become_compact_utf8_json():
    assert encode_payload({"a": 1, "site": "Zürich"}) == '{"a":1,"site":"Zürich"}'.encode()
    assert encode_payload("é") == "é".encode()
    assert encode_payload(b"\x00raw") == b"\x00raw"
    with pytest.raises(TypeError):
        encode_payload(42)  # type: ignore[arg-type]


# -- against mosquitto ----------------------------------------------------------------------------


def test_result_is_delivered_once_at_qos1_not_retained_and_acknowledged(broker):
    result = {"id": "0b6c9a52-1b47-4bd5-a7b6-1b3f0c2d9e11", "outcome": "answered", "ms": 812}
    with (
        Subscriber(broker.host, broker.port, RESULT) as sub,
        Publisher(probe_id="p1", host=broker.host, port=broker.port) as pub,
    ):
        delivery = pub.publish("result", result)
        assert delivery.wait(5)
        assert (delivery.acked, delivery.reason_code) == (True, 0)
        assert delivery.mid is not None
        (message,) = sub.wait_for(lambda msgs: len(msgs) >= 1, timeout=5)
        time.sleep(0.1)  # room for a duplicate to show up
    assert sub.messages == [message]
    assert message.payload == json.dumps(result, separators=(",", ":")).encode()
    assert message.retain is False  # subscribed with retain-as-published: the publisher's flag


def test_content_type_and_user_properties_reach_the_subscriber(broker):
    assert message_properties() is None  # nothing to say: the PUBLISH carries no properties
    props = message_properties("audio/flac", (("result_id", "r1"), ("duration_s", "2.500")))
    with (
        Subscriber(broker.host, broker.port, "hotline-probe/v1/p1/recording") as sub,
        Publisher(probe_id="p1", host=broker.host, port=broker.port) as pub,
    ):
        assert pub.publish("recording", b"fLaC...", properties=props).wait(5)
        (message,) = sub.wait_for(lambda msgs: len(msgs) == 1, timeout=5)
    assert message.properties.ContentType == "audio/flac"
    assert message.properties.UserProperty == [("result_id", "r1"), ("duration_s", "2.500")]
    assert not hasattr(message.properties, "MessageExpiryInterval")


def test_status_online_is_retained_with_the_boot_counter(broker):
    with Publisher(probe_id="p1", host=broker.host, port=broker.port, boot_count=7) as pub:
        assert pub.wait_connected(5)
        # A subscriber arriving later gets the retained birth.
        with Subscriber(broker.host, broker.port, STATUS) as late:
            (message,) = late.wait_for(_has_status("online"), timeout=5)
        status = message.json()
        assert message.retain is True
        assert status["boot"] == 7
        assert status["since"].endswith("Z") and len(status["since"]) == len(
            "2025-01-31T08:00:00.123Z"
        )


def test_close_leaves_retained_offline_stopped_and_is_idempotent(broker):
    pub = Publisher(probe_id="p1", host=broker.host, port=broker.port, boot_count=2)
    assert pub.wait_connected(5)
    pub.close()
    pub.close()
    assert not pub.connected
    with pytest.raises(PublisherClosed):
        pub.publish("result", {})
    with Subscriber(broker.host, broker.port, STATUS) as late:
        (message,) = late.wait_for(_has_status("offline"), timeout=5)
    assert message.retain is True
    assert message.json() == {"state": "offline", "boot": 2, "reason": "stopped"}
    assert "Received DISCONNECT from p1" in broker.log_text()  # clean stop: no will


_CHILD = """
import sys, time
from probe.uplink.mqtt import Publisher
pub = Publisher(probe_id="p1", host=sys.argv[1], port=int(sys.argv[2]), boot_count=5)
if not pub.wait_connected(5):
    sys.exit(3)
time.sleep(60)  # until SIGKILL
"""


def test_last_will_fires_when_the_publishing_process_is_killed(broker):
    with Subscriber(broker.host, broker.port, STATUS) as sub:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, broker.host, str(broker.port)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            sub.wait_for(_has_status("online", boot=5), timeout=8)
            child.send_signal(signal.SIGKILL)
            child.wait(5)
            messages = sub.wait_for(_has_status("offline"), timeout=5)
        finally:
            child.kill()
            child.wait(5)
    will = [m for m in messages if m.topic == STATUS and m.json()["state"] == "offline"][-1]
    assert will.json() == {"state": "offline", "boot": 5, "reason": "connection lost"}
    assert will.retain is True


def test_broker_down_at_start_then_queued_message_goes_out(broker):
    broker.stop()
    with Publisher(probe_id="p1", host=broker.host, port=broker.port) as pub:
        delivery = pub.publish("result", {"n": 1})
        assert not pub.wait_connected(0.3)
        assert not delivery.done
        broker.start()
        with Subscriber(broker.host, broker.port, "hotline-probe/v1/p1/#") as sub:
            assert delivery.wait(8), delivery
            messages = sub.wait_for(lambda msgs: any(m.topic == RESULT for m in msgs), 5)
        assert pub.connected
    assert [m.json() for m in messages if m.topic == RESULT] == [{"n": 1}]


def test_after_a_broker_restart_the_probe_is_online_again(broker):
    with Publisher(probe_id="p1", host=broker.host, port=broker.port, boot_count=4) as pub:
        assert pub.wait_connected(5)
        broker.stop()  # persistence false: the retained status goes with it
        broker.start()
        with Subscriber(broker.host, broker.port, STATUS) as sub:
            sub.wait_for(_has_status("online", boot=4), timeout=8)
        assert pub.connected


def test_on_delivery_runs_on_the_network_thread_with_the_callers_ref(broker):
    seen: list[tuple[Delivery, str]] = []
    done = threading.Event()

    def on_delivery(delivery: Delivery) -> None:
        seen.append((delivery, threading.current_thread().name))
        done.set()

    with Publisher(
        probe_id="p1", host=broker.host, port=broker.port, on_delivery=on_delivery
    ) as pub:
        delivery = pub.publish("health", {"ok": True}, retain=True, ref=42)
        assert done.wait(5)
    # Only our message: the publisher's own status messages are not reported.
    assert seen == [(delivery, "probe.uplink.mqtt[p1]")]
    assert delivery.ref == 42 and delivery.acked
    assert delivery.reason_code == 0x10  # no matching subscribers: still a success


def test_publish_denied_by_acl_is_a_failed_delivery():
    acl = "topic write hotline-probe/v1/p1/status\n"
    with (
        LocalBroker(acl=acl) as broker,
        Publisher(probe_id="p1", host=broker.host, port=broker.port) as pub,
    ):
        delivery = pub.publish("result", {"n": 1})
        assert delivery.wait(5) is False
        assert delivery.done
        assert delivery.acked is False
        assert delivery.reason_code == 0x87  # Not authorized
        assert "Denied PUBLISH from p1" in broker.log_text()
