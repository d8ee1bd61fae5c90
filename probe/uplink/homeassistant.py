"""Home Assistant MQTT discovery: a probe and its targets as entities, for small offices.

Off by default (``[homeassistant] enabled = true`` turns it on).  The daemon then publishes,
after every connect, one retained discovery config per entity on
``<discovery_prefix>/<component>/<probe id>/<object id>/config``::

    binary_sensor  probe_fault               the probe's own health (problem = faults)
    binary_sensor  <target>_problem          the target's verdict (problem = degraded or down)
    sensor         <target>_post_dial_delay  the last call's post-dial delay, ms
    sensor         <target>_mos              the last call's MOS (prompt score, else E-model)
    sensor         <target>_outcome          the last call's outcome (answered, busy, ...)

Every entity reads the probe's retained status (``hotline-probe/v1/<id>/status``: its
``targets.<name>`` entry holds the verdict and the last call, ``probe`` the probe's health), so
there is no second state feed to keep in step, and every entity's availability is that same
topic's ``state``: when the probe dies the broker publishes its last will (``offline``) there and
Home Assistant shows the entities unavailable.  A template renders ``None`` (Home Assistant's
"unknown") when the status says nothing about its entity, e.g. before a target's first call.

A target dropped by a reload gets empty retained configs, which is how Home Assistant is told
to delete its entities.  Republishing on every connect keeps the configs on a broker that lost
its retained messages (no persistence) without waiting for the probe to restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from probe import __version__
from probe.config.model import TARGET_NAME_RE, Config
from probe.results.document import result_schema
from probe.uplink.mqtt import STATUS, Publisher, topic

log = logging.getLogger("probe.uplink.homeassistant")

PROBE_OBJECT = "probe_fault"
#: Object id suffix of each entity per target, and its component.
TARGET_ENTITIES: dict[str, str] = {
    "problem": "binary_sensor",
    "post_dial_delay": "sensor",
    "mos": "sensor",
    "outcome": "sensor",
}
#: What the templates render when the status does not know: Home Assistant's "unknown".
UNKNOWN = "None"
#: How the configs are published (the AsyncAPI operation publishHomeAssistantDiscovery says the
#: same): retained, so that Home Assistant finds them whenever it (re)subscribes.
QOS, RETAIN = 1, True


def _target_entry(name: str) -> str:
    if not TARGET_NAME_RE.fullmatch(name):  # it goes into a template as a string literal
        raise ValueError(f"not a target name: {name!r}")
    return f"{{% set t = (value_json.get('targets') or {{}}).get('{name}') or {{}} %}}"


def _last_call(name: str, key: str) -> str:
    return (_target_entry(name) + "{% set c = t.get('last_call') or {} %}"
            f"{{{{ '{UNKNOWN}' if c.get('{key}') is none else c.get('{key}') }}}}")


def templates(name: str) -> dict[str, str]:
    """The value templates (Jinja, as Home Assistant renders them on the status payload) of
    target ``name``'s entities, by object id suffix."""
    verdict = (_target_entry(name) + "{% set v = t.get('verdict') %}"
               "{{ 'ON' if v in ('degraded', 'down') else 'OFF' if v == 'ok' "
               f"else '{UNKNOWN}' }}}}")
    return {"problem": verdict,
            "post_dial_delay": _last_call(name, "post_dial_delay_ms"),
            "mos": _last_call(name, "mos"),
            "outcome": _last_call(name, "outcome")}


PROBE_TEMPLATE = ("{% set p = value_json.get('probe') %}"
                  f"{{{{ '{UNKNOWN}' if p is none else 'OFF' if p.get('ok') else 'ON' }}}}")
AVAILABILITY_TEMPLATE = "{{ value_json.state }}"


def config_topic(prefix: str, component: str, probe_id: str, object_id: str) -> str:
    return f"{prefix}/{component}/{probe_id}/{object_id}/config"


def discovery_configs(probe_id: str, targets: Iterable[str],
                      prefix: str = "homeassistant") -> dict[str, dict[str, Any]]:
    """Discovery topic -> its config, for the probe and each of ``targets`` (names)."""
    status = topic(probe_id, STATUS)
    common = {
        "device": {"identifiers": [f"hotline-probe_{probe_id}"],
                   "name": f"Hotline probe {probe_id}", "manufacturer": "hotline-probe",
                   "model": "hotline probe", "sw_version": __version__},
        "origin": {"name": "hotline-probe", "sw_version": __version__},
        "availability": [{"topic": status, "value_template": AVAILABILITY_TEMPLATE,
                          "payload_available": "online", "payload_not_available": "offline"}],
        "state_topic": status,
        "qos": 1,
    }

    def entity(component: str, object_id: str, name: str, value_template: str,
               **extra: Any) -> tuple[str, dict[str, Any]]:
        config = {"name": name, "unique_id": f"hotline-probe_{probe_id}_{object_id}",
                  **common, "value_template": value_template, **extra}
        return config_topic(prefix, component, probe_id, object_id), config

    on_off = {"payload_on": "ON", "payload_off": "OFF"}
    outcomes = result_schema()["properties"]["outcome"]["enum"]
    configs = dict([entity("binary_sensor", PROBE_OBJECT, "Probe fault", PROBE_TEMPLATE,
                           device_class="problem", entity_category="diagnostic", **on_off)])
    for name in targets:
        tpl = templates(name)
        configs.update([
            entity("binary_sensor", f"{name}_problem", f"{name} problem", tpl["problem"],
                   device_class="problem", **on_off),
            entity("sensor", f"{name}_post_dial_delay", f"{name} post-dial delay",
                   tpl["post_dial_delay"], device_class="duration", unit_of_measurement="ms",
                   state_class="measurement"),
            entity("sensor", f"{name}_mos", f"{name} MOS", tpl["mos"],
                   state_class="measurement", suggested_display_precision=2),
            entity("sensor", f"{name}_outcome", f"{name} last outcome", tpl["outcome"],
                   device_class="enum", options=list(outcomes)),
        ])
    return configs


class Discovery:
    """What the daemon publishes: the configs of its current targets after every connect
    (:meth:`publish`, the publisher's ``on_connect``), and at once when a reload changed them
    (:meth:`update`), with empty retained configs for the entities of a dropped target."""

    def __init__(self, config: Config) -> None:
        self.probe_id = config.probe.id
        self.prefix = config.homeassistant.discovery_prefix
        self._lock = threading.Lock()  # publish() on the network thread, update() on main
        self._targets = tuple(t.name for t in config.targets)

    def configs(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            targets = self._targets
        return discovery_configs(self.probe_id, targets, self.prefix)

    def publish(self, publisher: Publisher) -> None:
        configs = self.configs()
        for config_topic_, config in configs.items():
            publisher.publish_to(config_topic_, config, qos=QOS, retain=RETAIN)
        log.info("Home Assistant discovery: %d entities under %s/", len(configs), self.prefix)

    def update(self, config: Config, publisher: Publisher | None) -> None:
        """The targets of a reloaded configuration: their configs now, and the dropped ones'
        entities deleted."""
        before = self.configs()
        with self._lock:
            self._targets = tuple(t.name for t in config.targets)
        if publisher is None:
            return
        after = self.configs()
        for gone in before.keys() - after.keys():
            publisher.publish_to(gone, b"", qos=QOS, retain=RETAIN)  # Home Assistant deletes it
        for config_topic_, payload in after.items():
            if before.get(config_topic_) != payload:
                publisher.publish_to(config_topic_, payload, qos=QOS, retain=RETAIN)
