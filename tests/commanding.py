"""Central ops as the probe's tests meet it: a real MQTT 5 client that sends commands with
Correlation Data (and any other property), and the replies a subscriber saw."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from probe.sim.broker import LocalBroker, Message, Subscriber


class CommandSender:
    """``send("run", b'{"target": "support"}', correlation=b"c1", MessageExpiryInterval=60)``
    publishes ``hotline-probe/v1/<probe_id>/cmd/run`` at QoS 1 and waits for its PUBACK."""

    def __init__(self, broker: LocalBroker, probe_id: str, client_id: str = "ops") -> None:
        self.probe_id = probe_id
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, name: str, payload: bytes | str = b"", *, correlation: bytes,
             **properties: Any) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = correlation
        for key, value in properties.items():
            setattr(props, key, value)
        self.client.publish(f"hotline-probe/v1/{self.probe_id}/cmd/{name}", payload, qos=1,
                            properties=props).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def reply_messages(sub: Subscriber, correlation: bytes) -> list[Message]:
    """What came back for ``correlation`` (anything but the commands themselves)."""
    return [m for m in sub.messages if "/cmd/" not in m.topic
            and getattr(m.properties, "CorrelationData", None) == correlation]


def replies(sub: Subscriber, correlation: bytes) -> list[dict]:
    return [m.json() for m in reply_messages(sub, correlation)]


def first_reply(sub: Subscriber, correlation: bytes, timeout: float = 5) -> dict:
    sub.wait_for(lambda _msgs: bool(reply_messages(sub, correlation)), timeout)
    return replies(sub, correlation)[0]
