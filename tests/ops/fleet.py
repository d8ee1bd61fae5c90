"""A simulated fleet for the ops tests and benchmarks: real result documents, many identities.

Documents start from ``tests/ops/data/`` — results the probe's real daemon published against
SIPp hotlines and the modem emulator (``python -m tests.ops.record``) — and get a new id, probe,
site, target, start time and, for GSM, operator.  They still validate against the result schema,
which ingest checks: nothing here is accepted that a probe would not send.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DATA = Path(__file__).parent / "data"
ANSWERED = {"sip": "sip-answered", "gsm": "gsm-answered"}


@cache
def template(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def rfc3339(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def result_doc(kind: str, *, probe_id: str, target: str = "support",
               started_at: dt.datetime, site: str | None = None,
               operator: str | None = None) -> dict[str, Any]:
    """A result like ``tests/ops/data/<kind>.json`` from another probe, target and time."""
    doc = copy.deepcopy(template(kind))
    duration = (dt.datetime.fromisoformat(doc["ended_at"].replace("Z", "+00:00"))
                - dt.datetime.fromisoformat(doc["started_at"].replace("Z", "+00:00")))
    doc.update(id=str(uuid.uuid4()), probe_id=probe_id, site=site or f"Office {probe_id}",
               target=target, started_at=rfc3339(started_at),
               ended_at=rfc3339(started_at + duration))
    if operator is not None and doc.get("modem"):
        doc["modem"]["operator"] = operator
    return doc


def aligned(round_s: float, now: dt.datetime | None = None) -> dt.datetime:
    """The start of the current round (results at ``aligned() - k * round_s + 1 s`` fall in
    round k before the current one)."""
    now = now or dt.datetime.now(dt.UTC)
    epoch = now.timestamp()
    return dt.datetime.fromtimestamp(epoch - epoch % round_s, dt.UTC)


class FleetPublisher:
    """One MQTT 5 client that publishes as many probes (an anonymous test broker: no ACL)."""

    def __init__(self, host: str, port: int, client_id: str = "") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or
                                  f"fleet-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5)
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("fleet publisher could not connect")

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False,
                properties: Properties | None = None) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain,
                                   properties=properties)

    def result(self, doc: dict[str, Any]) -> paho.MQTTMessageInfo:
        return self.publish(f"hotline-probe/v1/{doc['probe_id']}/result", json.dumps(doc))

    def status(self, probe_id: str, state: str, boot: int = 1,
               reason: str | None = None) -> paho.MQTTMessageInfo:
        doc: dict[str, Any] = {"state": state, "boot": boot}
        if reason:
            doc["reason"] = reason
        return self.publish(f"hotline-probe/v1/{probe_id}/status", json.dumps(doc),
                            retain=True)

    def recording(self, probe_id: str, result_id: str, data: bytes,
                  content_type: str = "audio/wav") -> paho.MQTTMessageInfo:
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = content_type
        props.UserProperty = [("result_id", result_id)]
        return self.publish(f"hotline-probe/v1/{probe_id}/recording", data, properties=props)

    def wait_all(self, infos: list[paho.MQTTMessageInfo], timeout: float = 30) -> None:
        for info in infos:
            info.wait_for_publish(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
