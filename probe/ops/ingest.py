"""MQTT into the database: nothing lost, nothing twice.

One paho client per instance (MQTT 5, its own network thread and reconnect backoff), with a
persistent session (clean start off, a session expiry: mosquitto keeps an MQTT 5 session across
its own restart only for clients that connected with clean start = 0) and **manual
acknowledgement**: a result's PUBACK is sent only after the transaction that stored it has
committed.  An instance killed between receive and commit has acknowledged nothing, so the
broker delivers the message again (to it after a restart, or to another member of the share
group).  A message delivered twice is stored once (:mod:`probe.ops.store`).

Subscriptions::

    $share/<group>/hotline-probe/v1/+/result     results, shared by the instances of the group
    $share/<group>/hotline-probe/v1/+/recording  what the caller heard, on failed calls
    $share/<group>/hotline-probe/v1/+/cmd-reply  replies to commands (the command row is shared)
    hotline-probe/v1/+/status                    plain: retained messages are not delivered to
    hotline-probe/v1/+/health                    shared subscriptions; every instance reads them

Messages are taken in batches (up to ``batch_max``, waiting at most ``batch_wait_ms`` for more),
parsed outside the transaction, written in one transaction, then acknowledged in arrival order
(MQTT requires PUBACKs in the order the PUBLISHes came).  When the database is away (a
PostgreSQL restart) the same batch is retried with backoff and nothing is acknowledged meanwhile;
the broker's Receive Maximum stops it sending more than ``RECEIVE_MAXIMUM`` unacknowledged.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from probe.ops.config import OpsConfig, OpsMqttConfig
from probe.ops.db import transaction, utcnow
from probe.ops.messages import Limits, Parsed, Rejected, ResultIn, parse_message
from probe.ops.store import Stored, finish, quarantine, store, store_results
from probe.uplink.mqtt import TOPIC_ROOT

log = logging.getLogger("probe.ops.ingest")
RECEIVE_MAXIMUM = 2000  # unacknowledged QoS 1 messages the broker may have in flight to us
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 15.0


@dataclass(frozen=True)
class Incoming:
    generation: int  # which connection delivered it: a mid is only valid on that connection
    mid: int
    qos: int
    topic: str
    payload: bytes
    properties: dict[str, Any]


def subscriptions(group: str) -> list[tuple[str, SubscribeOptions]]:
    qos1 = SubscribeOptions(qos=1)
    shared = [f"$share/{group}/{TOPIC_ROOT}/+/{leaf}"
              for leaf in ("result", "recording", "cmd-reply")]
    plain = [f"{TOPIC_ROOT}/+/{leaf}" for leaf in ("status", "health")]
    return [(t, qos1) for t in shared + plain]


def tls_context(mqtt: OpsMqttConfig) -> ssl.SSLContext | None:
    """TLS 1.2+, CA-verified, hostname-checked, with the service's client certificate."""
    if mqtt.tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(mqtt.tls.ca_file))
    context.load_cert_chain(certfile=str(mqtt.tls.cert_file), keyfile=str(mqtt.tls.key_file))
    return context


def message_properties(message: paho.MQTTMessage) -> dict[str, Any]:
    props = getattr(message, "properties", None)
    out: dict[str, Any] = {}
    if props is None:
        return out
    for name, key in (("CorrelationData", "correlation_data"), ("ContentType", "content_type"),
                      ("UserProperty", "user_properties"), ("ResponseTopic", "response_topic")):
        value = getattr(props, name, None)
        if value is not None:
            out[key] = value
    return out


class Ingest:
    """The consumer: ``start()``, then results flow until ``stop()``.

    ``on_stored`` is called (on the ingest thread, after commit and acknowledgement) with what
    each batch changed, so the service can re-evaluate those targets."""

    def __init__(self, config: OpsConfig, sessions: sessionmaker[Session], *,
                 on_stored: Callable[[Stored], None] | None = None) -> None:
        self.config = config
        self.sessions = sessions
        self.on_stored = on_stored
        self.limits = Limits(config.mqtt.max_payload_bytes, config.mqtt.max_recording_bytes)
        self._queue: queue.Queue[Incoming] = queue.Queue()
        self._generation = 0
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="ops-ingest", daemon=True)
        self.connected = threading.Event()
        self.last_beat = time.monotonic()
        self.stats = {"results": 0, "duplicates": 0, "quarantined": 0, "batches": 0,
                      "db_retries": 0}
        self.client = self._client()

    # -- paho -----------------------------------------------------------------------------------
    def _client(self) -> paho.Client:
        m = self.config.mqtt
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.config.mqtt_client_id,
                             protocol=paho.MQTTv5, manual_ack=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if m.username:
            client.username_pw_set(m.username, m.password.reveal() if m.password else None)
        context = tls_context(m)
        if context is not None:
            client.tls_set_context(context)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def start(self) -> None:
        m = self.config.mqtt
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = m.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive_s, clean_start=False,
                                  properties=props)
        self.client.loop_start()
        self._worker.start()

    def stop(self, timeout: float = 10) -> None:
        """Stop taking messages; what is stored is acknowledged, the rest the broker keeps."""
        self._stop.set()
        self._worker.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self._generation += 1
        client.subscribe(subscriptions(self.config.mqtt.share_group))
        log.info("connected to %s:%d (session present: %s)", self.config.mqtt.host,
                 self.config.mqtt.port, getattr(_flags, "session_present", None))

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, _mid: int,
                      reasons: list[Any], _props: Any) -> None:
        # ``connected`` means "results reach us": only once the broker has granted the
        # subscriptions.  Set on CONNACK it raced the SUBSCRIBE: a result published in between
        # went to no subscriber of a shared group that had no session yet, and was gone.
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("broker refused subscriptions: %s", ", ".join(failed))
            return
        self.connected.set()

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("broker connection lost (%s); paho reconnects", reason)

    def _on_message(self, _client: paho.Client, _userdata: Any,
                    message: paho.MQTTMessage) -> None:
        self._queue.put(Incoming(self._generation, message.mid, message.qos, message.topic,
                                 bytes(message.payload), message_properties(message)))

    # -- commands to probes ---------------------------------------------------------------------
    def send(self, probe_id: str, name: str, payload: dict[str, Any],
             correlation_id: str) -> None:
        """Publish a command (the API's Commander): the reply comes back on ``cmd-reply`` with
        the same correlation data, to whichever instance the share group picks."""
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = correlation_id.encode()
        props.ResponseTopic = f"{TOPIC_ROOT}/{probe_id}/cmd-reply"
        props.ContentType = "application/json"
        props.MessageExpiryInterval = 300  # a command is stale after five minutes
        info = self.client.publish(f"{TOPIC_ROOT}/{probe_id}/cmd/{name}",
                                   json.dumps(payload).encode(), qos=1, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"command not queued: {paho.error_string(info.rc)}")

    # -- the worker -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_beat = time.monotonic()
            batch = self._take()
            if not batch:
                continue
            try:
                self._process(batch)
            except Exception:  # a bug in our own code: say so, keep consuming
                # The batch stays unacknowledged; the broker delivers it again after a
                # reconnect.  A dead consumer would be worse: ops would believe the fleet quiet.
                log.exception("ingest failed on a batch of %d; going on", len(batch))
                self.stats["errors"] = self.stats.get("errors", 0) + 1

    def _take(self) -> list[Incoming]:
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.mqtt.batch_wait_ms / 1000
        while len(batch) < self.config.mqtt.batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=left) if left > 0
                             else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _process(self, batch: list[Incoming]) -> None:
        parsed = [(item, self._parse(item)) for item in batch]
        delay = RETRY_FIRST_S
        while True:
            try:
                stored = self._store(parsed)
                break
            except SQLAlchemyError as err:  # the database is away: the same batch again later
                self.stats["db_retries"] += 1
                log.warning("database unavailable (%s); retrying the batch of %d in %.1f s",
                            str(err).splitlines()[0][:160], len(batch), delay)
                if self._stop.wait(delay):
                    return  # not acknowledged: the broker keeps them for the next start
                delay = min(delay * 2, RETRY_MAX_S)
        self._ack(batch)
        self.stats["results"] += stored.results
        self.stats["duplicates"] += stored.duplicates
        self.stats["quarantined"] += stored.quarantined
        self.stats["batches"] += 1
        if self.on_stored is not None:
            self.on_stored(stored)

    def _parse(self, item: Incoming) -> Parsed | None:
        try:
            return parse_message(item.topic, item.payload, item.properties, self.limits)
        except Exception as err:  # a parser bug must cost one message, never the consumer
            log.exception("cannot parse a message on %s", item.topic[:120])
            return Rejected(item.topic, None, f"internal error: {type(err).__name__}",
                            item.payload[:4096])

    def _store(self, parsed: list[tuple[Incoming, Parsed | None]]) -> Stored:
        """The batch in one transaction; if it fails for any reason but the database being
        away, message by message, so one that cannot be stored is quarantined alone.  Raises
        only when the database is away (the caller retries the whole batch: what was stored
        already is not stored twice)."""
        try:
            return self._commit(parsed)
        except Exception as err:
            if isinstance(err, SQLAlchemyError) and _is_transient(err):
                raise
            log.error("batch of %d failed (%s): storing one by one", len(parsed), err)
            return self._commit_one_by_one(parsed)

    def _commit(self, parsed: list[tuple[Incoming, Parsed | None]]) -> Stored:
        out = Stored()
        now = utcnow()
        with transaction(self.sessions) as session:
            results = [p for _item, p in parsed if isinstance(p, ResultIn)]
            store_results(session, results, now, out)
            for _item, p in parsed:
                if p is not None and not isinstance(p, ResultIn):
                    store(session, p, now, out)
            finish(session, out)
        return out

    def _commit_one_by_one(self, parsed: list[tuple[Incoming, Parsed | None]]) -> Stored:
        """A batch that failed for a reason other than the database being away: store each
        message alone, and quarantine the one that cannot be stored — it never blocks the
        rest, and it is never silently dropped."""
        out = Stored()
        for item, p in parsed:
            if p is None:
                continue
            now = utcnow()
            try:
                with transaction(self.sessions) as session:
                    single = Stored()
                    store(session, p, now, single)
                    finish(session, single)
                out.merge(single)
            except Exception as err:
                if isinstance(err, SQLAlchemyError) and _is_transient(err):
                    raise
                log.error("cannot store a message on %s: %s", item.topic[:120], err)
                with transaction(self.sessions) as session:
                    quarantine(session, Rejected(item.topic, None, f"cannot store: "
                                                 f"{str(err).splitlines()[0][:300]}",
                                                 item.payload[:4096]), now)
                out.quarantined += 1
        return out

    def _ack(self, batch: list[Incoming]) -> None:
        for item in batch:
            if item.qos > 0 and item.generation == self._generation:
                self.client.ack(item.mid, item.qos)
            # An older connection's mid means nothing now: the broker redelivers that message
            # on the new connection (session present) and it is acknowledged then, stored once.


def _is_transient(err: BaseException) -> bool:
    """The database is away or busy (restart, failover, lock timeout), not the data wrong."""
    if isinstance(err, DBAPIError) and err.connection_invalidated:
        return True
    if isinstance(err, OperationalError):
        return True
    text = str(err).lower()
    return any(s in text for s in ("server closed", "connection", "terminating",
                                   "database is locked", "could not connect"))
