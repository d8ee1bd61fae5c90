"""The probe's only door to MQTT: status, results and health to the central broker (MQTT 5).

Everything else in the probe talks to :class:`Publisher`, never to paho.  The contract
(documented in ``probe/schema/asyncapi.yaml``), one tree per probe::

    hotline-probe/v1/<probe-id>/status  retained, QoS 1
        birth, each (re)connect  {"state":"online","boot":12,"since":"2025-01-31T08:00:00.123Z"}
        last will (broker)       {"state":"offline","boot":12,"reason":"connection lost"}
        planned stop (close())   {"state":"offline","boot":12,"reason":"stopped"}
    hotline-probe/v1/<probe-id>/result  QoS 1, not retained, one per call (carries the result UUID)
    hotline-probe/v1/<probe-id>/health  retained
    hotline-probe/v1/<probe-id>/recording  QoS 1, not retained: a failed call's audio (FLAC),
        Content Type and User Properties result_id, duration_s (probe/results/recording.py)
    hotline-probe/v1/<probe-id>/cmd-reply  QoS 1, not retained (probe/uplink/commands.py)

QoS and retain of each leaf are in :data:`DELIVERY`, the one table the AsyncAPI bindings are
checked against.

Delivery is QoS 1 with MQTT 5 reason codes, so a PUBACK tells success (0x00, or 0x10 "no
matching subscribers") from refusal (0x87 "not authorized" when the broker's ACL denies the topic)::

    with Publisher(probe_id="p1", host="broker.example", port=1883, boot_count=12) as pub:
        delivery = pub.publish("result", result_dict)
        if not delivery.wait(10):
            log.warning("result not taken: %s", delivery.reason or "no answer")

Messages published while the broker is unreachable wait in memory (lost on restart: a durable
outbox in front of this module keeps them across restarts, deleting a row from ``on_delivery``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from probe.clock import clock_synced, rfc3339
from probe.daemon.logs import Recurring
from probe.errors import ProbeError

log = logging.getLogger("probe.uplink.mqtt")

TOPIC_ROOT = "hotline-probe/v1"
STATUS = "status"
RESULT = "result"
HEALTH = "health"
RECORDING = "recording"
CMD_REPLY = "cmd-reply"
#: QoS and retain flag of each leaf the probe publishes.  This table is the contract's one copy
#: in the code: publish() takes its defaults from it, and so do the birth, the offline status and
#: the last will; probe/schema/asyncapi.yaml says the same in its MQTT operation bindings, and
#: tests/test_asyncapi.py holds the two together.
DELIVERY: dict[str, tuple[int, bool]] = {
    STATUS: (1, True),
    RESULT: (1, False),
    HEALTH: (1, True),
    RECORDING: (1, False),
    CMD_REPLY: (1, False),
}
#: What a leaf outside the table gets (at least once, not retained).
DEFAULT_DELIVERY = (1, False)
#: QoS of the probe's subscription to its commands.
SUBSCRIBE_QOS = 1
#: The retained status the broker publishes for us when the connection dies without a
#: DISCONNECT (the last will): its state and reason.
WILL_REASON = "connection lost"
#: The Content Type of every JSON message the probe publishes (status, will, result, health,
#: cmd-reply); recordings carry audio/flac or audio/wav (probe/results/recording.py).
JSON_CONTENT_TYPE = "application/json"

#: PUBACK reason codes below this are successes (MQTT 5, 2.4 "Reason Code").
_FIRST_FAILURE_CODE = 0x80
#: Largest packet the probe accepts from the broker (commands are at most 4 KiB of JSON).
MAX_INCOMING_PACKET = 64 * 1024
#: Longest the network thread sleeps: paho's keepalive bookkeeping (loop_misc) needs a tick.
_TICK_S = 1.0
#: close() waits this much beyond its timeout for the thread: a TCP/TLS connect in progress may
#: block it up to paho's connect_timeout (5 s).
_JOIN_MARGIN_S = 6.0


class PublisherClosed(ProbeError, RuntimeError):
    """publish() on a Publisher that was closed (or whose network thread died)."""


def topic(probe_id: str, leaf: str) -> str:
    """``hotline-probe/v1/<probe_id>/<leaf>``; ``ValueError`` for ids or leaves that would break
    the tree (empty levels, ``/`` in the id, wildcards ``+ #``).

    >>> topic("p1", "status")
    'hotline-probe/v1/p1/status'
    """
    if not probe_id or "/" in probe_id or _has_wildcard(probe_id):
        raise ValueError(f"invalid probe id {probe_id!r}: must be one topic level without + #")
    if not leaf or any(not level for level in leaf.split("/")) or _has_wildcard(leaf):
        raise ValueError(f"invalid topic leaf {leaf!r}")
    return f"{TOPIC_ROOT}/{probe_id}/{leaf}"


def _has_wildcard(text: str) -> bool:
    return any(ch in text for ch in "+#\0")


def encode_payload(payload: bytes | str | dict) -> bytes:
    """bytes as they are, str as UTF-8, dict as compact JSON in UTF-8."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, dict):
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raise TypeError(f"payload must be bytes, str or dict, not {type(payload).__name__}")


def message_properties(content_type: str | None = None,
                       user_properties: tuple[tuple[str, str], ...] = ()) -> Properties | None:
    """MQTT 5 PUBLISH properties carrying a Content Type and User Properties (None if neither).

    >>> message_properties("audio/flac", (("result_id", "r1"),)).ContentType
    'audio/flac'
    """
    if content_type is None and not user_properties:
        return None
    props = Properties(PacketTypes.PUBLISH)
    if content_type is not None:
        props.ContentType = content_type
    if user_properties:
        props.UserProperty = list(user_properties)
    return props


def with_content_type(properties: Properties | None, content_type: str) -> Properties:
    """``properties`` (or new PUBLISH properties) with a Content Type, unless one is set.

    >>> with_content_type(None, JSON_CONTENT_TYPE).ContentType
    'application/json'
    """
    props = properties if properties is not None else Properties(PacketTypes.PUBLISH)
    if not getattr(props, "ContentType", None):
        props.ContentType = content_type
    return props


class Delivery:
    """One message handed to :meth:`Publisher.publish`, and what the broker said about it.

    ``acked`` is True once the broker acknowledged it with a success reason (PUBACK at QoS 1; at
    QoS 0, once written to the socket).  A refusal leaves ``acked`` False with the reason in
    ``reason_code`` (e.g. 0x87 Not authorized) and ``reason``.  ``done`` is True once nothing more
    will happen: a PUBACK arrived, or the publisher closed before one did (``reason_code`` None).
    ``ref`` is the caller's own tag (the forwarder's outbox row), carried untouched.
    """

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, ref: Any = None,
                 properties: Properties | None = None) -> None:
        self.topic = topic
        self.properties = properties
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.ref = ref
        self.mid: int | None = None
        self.reason_code: int | None = None
        self.reason: str | None = None
        self._done = threading.Event()
        self._internal = False  # our own status message: no on_delivery for it

    @property
    def acked(self) -> bool:
        code = self.reason_code
        return code is not None and code < _FIRST_FAILURE_CODE

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the broker answered (or ``timeout``); True only if it accepted."""
        self._done.wait(timeout)
        return self.acked

    def _settle(self, reason_code: int | None, reason: str | None) -> None:
        self.reason_code = reason_code
        self.reason = reason
        self._done.set()

    def __repr__(self) -> str:
        if not self.done:
            state = "pending"
        elif self.reason_code is None:
            state = "abandoned"
        else:
            state = f"{'acked' if self.acked else 'refused'} 0x{self.reason_code:02x}"
        return f"<Delivery mid={self.mid} {self.topic} {state}>"


class Publisher:
    """A connection to the broker that publishes the probe's messages and keeps its status true.

    The constructor returns at once and never raises for an unreachable broker: a network thread
    connects in the background and reconnects with exponential backoff (``reconnect_delay_s``,
    1 s doubling to 30 s, reset after a successful CONNACK).  The client id is the probe id; the
    session survives disconnects, restarts of the probe and of the broker for ``session_expiry_s``
    (clean start is off on every connect, the first one of this process included).  The last
    will (retained ``offline``, reason "connection lost") is set before connecting; every
    successful connect publishes the retained ``online`` birth.

    ``client_factory`` is called as ``client_factory(CallbackAPIVersion.VERSION2,
    client_id=probe_id, protocol=MQTTv5)`` and must return a paho ``Client`` (default:
    ``paho.mqtt.client.Client``).  ``tls`` is an ``ssl.SSLContext`` for a TLS listener.
    ``on_delivery(delivery)`` is called exactly once for each message given to :meth:`publish`:
    when the broker answers (success or refusal), or when the message is abandoned (closed before
    an answer, or refused by paho itself: ``reason_code`` None).  It runs on the network thread:
    keep it short, never block there.  ``on_connect(publisher)`` runs there too, after every
    successful connect (birth sent, subscriptions made); it may call :meth:`publish` and
    :meth:`publish_to`, whose messages go out on that connection.

    Threading: one thread owns the paho client, and it is ours (``probe.uplink.mqtt[<id>]``),
    running paho's external-loop API (``loop_read``/``loop_write``/``loop_misc`` around our own
    ``select``) rather than ``loop_start()``.  paho's loop thread offers no way to run our work on
    it, so with ``loop_start()`` every ``publish()`` would call into paho from a caller's thread.
    Here callers only put commands on a queue and poke a socketpair that wakes the select; paho
    callbacks only record events, which the same thread then turns into our state (deliveries,
    ``connected``, the birth message) outside paho's callback locks.
    """

    def __init__(
        self,
        *,
        probe_id: str,
        host: str,
        port: int,
        keepalive_s: int = 30,
        username: str | None = None,
        password: str | None = None,
        session_expiry_s: int = 86400,
        boot_count: int = 0,
        client_factory: Callable[..., paho.Client] | None = None,
        tls: ssl.SSLContext | None = None,
        on_delivery: Callable[[Delivery], None] | None = None,
        reconnect_delay_s: tuple[float, float] = (1.0, 30.0),
        subscriptions: tuple[str, ...] = (),
        on_message: Callable[[str, bytes, Properties | None], None] | None = None,
        max_packet_size: int = MAX_INCOMING_PACKET,
        on_connect: Callable[[Publisher], None] | None = None,
    ) -> None:
        self.probe_id = probe_id
        self.boot_count = boot_count
        self.host = host
        self.port = port
        self._status_topic = topic(probe_id, STATUS)
        self._on_delivery = on_delivery
        # Leaves under our own tree (e.g. "cmd/+"), subscribed again on every connect.
        self._subscriptions = [f"{TOPIC_ROOT}/{probe_id}/{leaf}" for leaf in subscriptions]
        self._on_message = on_message
        self._on_connect = on_connect
        self._min_delay, self._max_delay = reconnect_delay_s

        factory = client_factory or paho.Client
        client = factory(CallbackAPIVersion.VERSION2, client_id=probe_id, protocol=paho.MQTTv5)
        client.enable_logger(logging.getLogger("probe.uplink.mqtt.paho"))
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        will_props = Properties(PacketTypes.WILLMESSAGE)
        will_props.ContentType = JSON_CONTENT_TYPE
        will_qos, will_retain = DELIVERY[STATUS]
        client.will_set(
            self._status_topic,
            self._status_payload("offline", reason=WILL_REASON),
            qos=will_qos,
            retain=will_retain,
            properties=will_props,
        )
        connect_props = Properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = session_expiry_s
        # The broker must not send us anything larger (MQTT 5, 3.1.2.11.4): it drops a 1 MB
        # "command" instead of handing it to the probe.
        connect_props.MaximumPacketSize = max_packet_size
        client.connect_async(
            host,
            port,
            keepalive=keepalive_s,
            # Never clean start, not even on the first connect: mosquitto keeps a session
            # across its own restart only if the CONNECT that made it had clean start off, and
            # a restarted probe resumes its session (commands queued while it was away).
            clean_start=False,
            properties=connect_props,
        )
        client.on_connect = self._paho_on_connect
        client.on_disconnect = self._paho_on_disconnect
        client.on_publish = self._paho_on_publish
        client.on_message = self._paho_on_message
        self._client = client

        # Shared with callers (thread-safe on their own, or under _lock).
        self._lock = threading.Lock()
        self._closed = False
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._connected = threading.Event()

        # Owned by the network thread alone.
        self._events: deque[tuple[Any, ...]] = deque()
        self._backlog: deque[Delivery] = deque()
        self._inflight: dict[int, Delivery] = {}
        self._next_attempt: float | None = 0.0  # monotonic time of the next connect attempt
        self._delay: float | None = None
        # Every failed connection attempt in a row: one warning, then a count (probe.daemon.logs).
        self._failures = Recurring(log)
        self._close_deadline: float | None = None
        self._close_reason = ""
        self._offline_sent = False
        self.last_beat = time.monotonic()  # the network thread is alive (for the watchdog)
        self._status_extra: dict[str, Any] = {}  # merged into the retained "online" status
        self._since = ""

        log.info(
            "publishing as %s to %s:%s%s (boot %d)",
            probe_id,
            host,
            port,
            " over TLS" if tls else "",
            boot_count,
        )
        self._thread = threading.Thread(
            target=self._run, name=f"probe.uplink.mqtt[{probe_id}]", daemon=True
        )
        self._thread.start()

    # -- caller side ----------------------------------------------------------------------------

    def publish(
        self,
        leaf: str,
        payload: bytes | str | dict,
        *,
        qos: int | None = None,
        retain: bool | None = None,
        ref: Any = None,
        properties: Properties | None = None,
    ) -> Delivery:
        """Queue a message for ``hotline-probe/v1/<probe-id>/<leaf>`` and return its Delivery.

        ``qos`` and ``retain`` default to the leaf's entry in :data:`DELIVERY`.  Never blocks on
        the network: while offline the message waits (in memory) for the next connection.
        ``PublisherClosed`` after :meth:`close`.
        """
        default_qos, default_retain = DELIVERY.get(leaf, DEFAULT_DELIVERY)
        return self._queue(topic(self.probe_id, leaf), payload,
                           default_qos if qos is None else qos,
                           default_retain if retain is None else retain, ref, properties)

    def publish_to(self, full_topic: str, payload: bytes | str | dict, *, qos: int = 1,
                   retain: bool = False, properties: Properties | None = None) -> Delivery:
        """Like :meth:`publish`, to a topic outside the probe's own tree (Home Assistant's
        discovery configs, probe/uplink/homeassistant.py); ``ValueError`` for a topic with empty
        levels or wildcards."""
        if (not full_topic or any(not level for level in full_topic.split("/"))
                or _has_wildcard(full_topic)):
            raise ValueError(f"invalid topic {full_topic!r}")
        return self._queue(full_topic, payload, qos, retain, None, properties)

    def _queue(self, full_topic: str, payload: bytes | str | dict, qos: int, retain: bool,
               ref: Any, properties: Properties | None) -> Delivery:
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {qos!r}")
        if isinstance(payload, dict):
            properties = with_content_type(properties, JSON_CONTENT_TYPE)
        delivery = Delivery(full_topic, encode_payload(payload), qos, retain, ref, properties)
        self._submit("publish", delivery)
        return delivery

    def set_status(self, **extra: Any) -> None:
        """Merge ``extra`` (e.g. the verdict per target and the probe's own health) into the
        retained ``online`` status, and republish it now if connected."""
        self._submit("status", dict(extra))

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the loss of that connection."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def close(self, timeout: float = 5.0, reason: str = "stopped") -> None:
        """Planned stop: publish the retained ``offline`` status (the broker discards the will on
        a clean disconnect, so we say it ourselves), wait up to ``timeout`` seconds for it and
        for every pending delivery, disconnect, stop the thread.  Idempotent."""
        with self._lock:
            first = not self._closed
            self._closed = True
            if first:
                self._commands.put(("close", (time.monotonic() + timeout, reason)))
                self._wake()
        if threading.current_thread() is self._thread:
            return  # from on_delivery: the thread finishes the close by itself
        self._thread.join(timeout + _JOIN_MARGIN_S)
        if self._thread.is_alive():
            log.error("MQTT network thread did not stop within %.1f s", timeout + _JOIN_MARGIN_S)
        elif first:
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed" if self._closed else "offline"
        return f"<Publisher {self.probe_id} {self.host}:{self.port} {state}>"

    def _submit(self, kind: str, arg: Any) -> None:
        with self._lock:
            if self._closed or not self._thread.is_alive():
                raise PublisherClosed(f"publisher {self.probe_id!r} is closed")
            self._commands.put((kind, arg))
            self._wake()

    def _wake(self) -> None:
        # A full pipe means wake-ups are pending already: the thread will look at the queue.
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"\0")

    def _status_payload(self, state: str, **extra: Any) -> bytes:
        return encode_payload({"state": state, "boot": self.boot_count, **extra})

    # -- paho callbacks (network thread, inside paho): record, nothing else ---------------------

    def _paho_on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._events.append(("connect", reason_code.value, str(reason_code), flags.session_present))

    def _paho_on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._events.append(("disconnect", reason_code.value, str(reason_code)))

    def _paho_on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._events.append(("puback", mid, reason_code.value, str(reason_code)))

    def _paho_on_message(self, client, userdata, message) -> None:
        self._events.append(("message", message.topic, bytes(message.payload),
                             getattr(message, "properties", None)))

    # -- network thread -------------------------------------------------------------------------
    #
    #   callers ──put──▶ _commands ──┐        ┌──▶ paho.publish / disconnect
    #   callers ──byte─▶ _wake_w ····│········│··▶ select([sock, _wake_r], [sock if want_write])
    #                                ▼        │        │
    #                       _run: take commands, handle events, pump the socket
    #                                ▲                 │ loop_read/loop_write/loop_misc
    #                     _events ◀──┴── paho callbacks ┘

    def _run(self) -> None:
        try:
            while True:
                self.last_beat = time.monotonic()
                self._take_commands()
                self._handle_events()
                if self._close_deadline is not None and self._close_finished():
                    return
                sock = self._client.socket()
                if sock is not None:
                    self._pump(sock)
                else:
                    self._connected.clear()
                    if self._next_attempt is None:
                        self._schedule_reconnect()
                    assert self._next_attempt is not None
                    wait = self._next_attempt - time.monotonic()
                    if wait <= 0:
                        self._attempt_connect()
                    else:
                        self._idle(wait)
                self._handle_events()
        except Exception:
            log.exception("MQTT network thread failed: nothing more will be published")
        finally:
            self._connected.clear()
            self._abandon_pending()

    def _take_commands(self) -> None:
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                break
            if kind == "publish":
                self._backlog.append(arg)
            elif kind == "status":
                self._status_extra = arg
                if self._connected.is_set() and self._close_deadline is None:
                    self._send_online()
            elif kind == "close":
                self._close_deadline, self._close_reason = arg
                log.info("stopping (%s)", self._close_reason)
                if self._connected.is_set():
                    self._flush_backlog()
                    self._send_offline()
        if self._connected.is_set():
            self._flush_backlog()

    def _handle_events(self) -> None:
        while self._events:
            event = self._events.popleft()
            if event[0] == "connect":
                self._handle_connack(*event[1:])
            elif event[0] == "disconnect":
                name = event[2]
                was_connected = self._connected.is_set()
                self._connected.clear()
                if self._close_deadline is not None:
                    log.info("disconnected from %s:%s", self.host, self.port)
                elif was_connected:
                    log.warning("connection to %s:%s lost: %s", self.host, self.port, name)
            elif event[0] == "puback":
                self._handle_puback(*event[1:])
            elif event[0] == "message" and self._on_message is not None:
                try:
                    self._on_message(*event[1:])
                except Exception:
                    log.exception("message handler failed for %s", event[1])

    def _handle_connack(self, code: int, name: str, session_present: bool) -> None:
        if code >= _FIRST_FAILURE_CODE:
            self._failures.failed("broker %s:%s refused the connection: %s (0x%02x)", self.host,
                                  self.port, name, code, level=logging.ERROR)
            return  # paho closes the socket; _run schedules the next attempt
        self._delay = None
        failures, since = self._failures.ended()
        self._connected.set()
        log.info("connected to %s:%s (session present: %s)%s", self.host, self.port,
                 session_present, f" after {failures} failed attempts in {since:.0f} s"
                 if failures else "")
        if self._close_deadline is None:
            self._since = rfc3339()
            self._send_online()
            for subscription in self._subscriptions:
                self._client.subscribe(subscription,
                                       options=SubscribeOptions(qos=SUBSCRIBE_QOS))
            if self._on_connect is not None:
                # After the birth, so that what it publishes (retained discovery configs) never
                # reaches a subscriber before the status saying the probe is online.
                try:
                    self._on_connect(self)
                except Exception:
                    log.exception("on_connect callback failed")
            self._flush_backlog()
        else:
            self._flush_backlog()
            self._send_offline()

    def _handle_puback(self, mid: int, code: int, name: str) -> None:
        delivery = self._inflight.pop(mid, None)
        if delivery is None:
            log.debug("acknowledgement for unknown mid %d", mid)
            return
        if code >= _FIRST_FAILURE_CODE:
            log.error("broker refused %s (mid %d): %s (0x%02x)", delivery.topic, mid, name, code)
        self._finish(delivery, code, name)

    def _finish(self, delivery: Delivery, code: int | None, reason: str | None) -> None:
        """Settle a delivery and tell ``on_delivery``, whatever the outcome: a caller that
        counts what it handed out (the forwarder's window) must hear about every message."""
        delivery._settle(code, reason)
        if not delivery._internal and self._on_delivery is not None:
            try:
                self._on_delivery(delivery)
            except Exception:
                log.exception("on_delivery callback failed for %r", delivery)

    def _flush_backlog(self) -> None:
        while self._backlog and self._connected.is_set():
            self._send(self._backlog.popleft())

    def _send_online(self) -> None:
        self._send_internal(self._status_payload("online", since=self._since,
                                                 **self._status_extra))

    def _send_offline(self) -> None:
        if not self._offline_sent:
            self._offline_sent = True
            self._send_internal(self._status_payload("offline", reason=self._close_reason))

    def _send_internal(self, payload: bytes) -> None:
        qos, retain = DELIVERY[STATUS]
        delivery = Delivery(self._status_topic, payload, qos=qos, retain=retain,
                            properties=with_content_type(None, JSON_CONTENT_TYPE))
        delivery._internal = True
        self._send(delivery)

    def _send(self, delivery: Delivery) -> None:
        try:
            info = self._client.publish(
                delivery.topic, delivery.payload, qos=delivery.qos, retain=delivery.retain,
                properties=delivery.properties,
            )
        except ValueError as exc:  # e.g. a payload over MQTT's 256 MB: never sendable
            log.error("paho would not take %s: %s", delivery.topic, exc)
            self._finish(delivery, None, str(exc))
            return
        delivery.mid = info.mid
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:  # the only refusal where paho keeps nothing
            log.error("paho would not queue %s: %s", delivery.topic, paho.error_string(info.rc))
            self._finish(delivery, None, paho.error_string(info.rc))
            return
        # Any other code, NO_CONN and CONN_LOST (the write failed as the broker went away)
        # included: paho stored the message before trying to write it, re-sends it after the
        # next CONNACK, and its PUBACK comes back under this mid.  Untracked, it would hold one
        # of the forwarder's window slots for the life of the process (issue 18).
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.info("%s (mid %d) waits for the next connection: %s", delivery.topic, info.mid,
                     paho.error_string(info.rc))
        self._inflight[info.mid] = delivery

    def _schedule_reconnect(self) -> None:
        if self._delay is None:
            self._delay = self._min_delay
        else:
            self._delay = min(self._delay * 2, self._max_delay)
        self._next_attempt = time.monotonic() + self._delay
        log.debug("next connection attempt in %.1f s", self._delay)

    def _attempt_connect(self) -> None:
        self._next_attempt = None  # scheduled again once this connection is gone
        log.debug("connecting to %s:%s", self.host, self.port)
        try:
            self._client.reconnect()  # TCP (+TLS) connect and CONNECT; CONNACK comes later
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake
            if isinstance(exc, ssl.SSLCertVerificationError) and not clock_synced():
                # A Pi without RTC boots in the past: every certificate looks "not yet valid".
                self._failures.failed("TLS certificate check of MQTT broker %s:%s failed while "
                                      "the clock is not synchronised (%s): retrying until NTP "
                                      "has set the time", self.host, self.port,
                                      exc.verify_message)
            else:
                self._failures.failed("cannot reach MQTT broker %s:%s: %s", self.host,
                                      self.port, exc)

    def _timeout(self, wanted: float) -> float:
        if self._close_deadline is not None:
            wanted = min(wanted, self._close_deadline - time.monotonic())
        return max(0.0, min(wanted, _TICK_S))

    def _idle(self, wanted: float) -> None:
        readable, _, _ = select.select([self._wake_r], [], [], self._timeout(wanted))
        if readable:
            self._drain_wake()

    def _pump(self, sock: Any) -> None:
        client = self._client
        # TLS: bytes already decrypted inside the SSL object are invisible to select().
        buffered = getattr(sock, "pending", lambda: 0)() > 0
        timeout = 0.0 if buffered else self._timeout(_TICK_S)
        wlist = [sock] if client.want_write() else []
        readable, writable, _ = select.select([sock, self._wake_r], wlist, [], timeout)
        if self._wake_r in readable:
            self._drain_wake()
        if buffered or sock in readable:
            client.loop_read()
        if sock in writable and client.socket() is sock:
            client.loop_write()
        if client.socket() is sock:
            client.loop_misc()  # keepalive: PINGREQ, and drop a connection that went silent

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _close_finished(self) -> bool:
        assert self._close_deadline is not None
        pending = len(self._backlog) + len(self._inflight)
        # Connected: done once the offline status and everything before it were acknowledged.
        # Offline: done at once if nothing waits, else keep reconnecting until the deadline.
        done = pending == 0 and (self._offline_sent or not self._connected.is_set())
        if not done and time.monotonic() < self._close_deadline:
            return False
        if pending:
            log.warning("stopping with %d message(s) not acknowledged by the broker", pending)
        self._disconnect()
        return True

    def _disconnect(self) -> None:
        client = self._client
        if client.socket() is None:
            return
        client.disconnect()  # DISCONNECT 0x00: a clean stop, the broker discards the will
        deadline = time.monotonic() + 1.0
        while (sock := client.socket()) is not None and time.monotonic() < deadline:
            select.select([], [sock], [], max(0.0, deadline - time.monotonic()))
            client.loop_write()  # paho closes the socket once DISCONNECT is written
        self._handle_events()

    def _abandon_pending(self) -> None:
        for delivery in [*self._backlog, *self._inflight.values()]:
            if not delivery.done:
                self._finish(delivery, None, None)  # on_delivery: the forwarder releases it
        self._backlog.clear()
        self._inflight.clear()
