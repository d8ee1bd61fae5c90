"""A real, throw-away mosquitto for tests and ``make demo``, and a small subscriber to watch it.

No fake broker: the MQTT contract (retained status, last will, PUBACK reason codes, ACL denials)
is only worth testing against the broker we deploy.  ``LocalBroker`` runs the system's
``mosquitto`` (2.0) on 127.0.0.1 on a free port with a generated config in a temp dir::

    with LocalBroker() as broker, Subscriber(broker.host, broker.port, "hotline-probe/#") as sub:
        ...  # point a probe.uplink.mqtt.Publisher at broker.host, broker.port
        sub.wait_for(lambda msgs: any(m.topic.endswith("/status") for m in msgs), timeout=5)

``broker.stop()`` / ``broker.start()`` simulate an outage; the broker comes back on the same port
(with ``persistence false`` it comes back empty: no retained messages, no sessions).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from probe.errors import ProbeError
from probe.sim.ports import free_port

log = logging.getLogger("probe.sim.broker")

_FALLBACK_BINARY = "/usr/sbin/mosquitto"
_BIND_ATTEMPTS = 3
_RUNNING = re.compile(r"mosquitto version \S+ running")


class BrokerError(ProbeError, RuntimeError):
    """The local mosquitto could not be found or would not start."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary; ``BrokerError`` naming the package if it is missing."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access(_FALLBACK_BINARY, os.X_OK):
        return _FALLBACK_BINARY
    raise BrokerError(
        "mosquitto not found on PATH nor at /usr/sbin/mosquitto (apt-get install mosquitto)"
    )


def _terminate(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL.  Also the safety net ``weakref.finalize`` runs at exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class LocalBroker:
    """A mosquitto on ``host``:``port`` (a free port unless given), anonymous, no persistence.

    ``acl`` is the text of an ``acl_file`` (mosquitto 2.0: ``topic`` lines before any ``user`` line
    apply to anonymous clients).  ``extra_config`` is appended to the generated config verbatim
    (e.g. a TLS listener).  Usable as a context manager; ``stop()`` then ``start()`` restarts it on
    the same port.  A process left running by a forgotten ``stop()`` is terminated at interpreter
    exit.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        acl: str | None = None,
        extra_config: str = "",
        binary: str | None = None,
        startup_timeout: float = 5.0,
        persistent: bool = False,
        allow_anonymous: bool = True,
    ) -> None:
        self.host = host
        self._persistent = persistent  # sessions and queued messages survive a stop()/start()
        self._allow_anonymous = allow_anonymous
        self.port: int | None = port
        self.process: subprocess.Popen | None = None
        self._fixed_port = port is not None
        self._acl = acl
        self._extra_config = extra_config
        self._binary = binary or find_mosquitto()
        self._startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="probe-broker-")
        self.dir = Path(self._tmp.name)
        self.log_path = self.dir / "mosquitto.log"
        self._finalizer: weakref.finalize | None = None
        self._attempt_offset = 0  # where the log of the latest start attempt begins

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LocalBroker:
        """Start mosquitto (on the same port as before, if it ran already) and wait until it
        accepts TCP connections.  Raises ``BrokerError`` with the log tail if it does not."""
        if self.running:
            return self
        last_error: BrokerError | None = None
        for _attempt in range(_BIND_ATTEMPTS):
            if self.port is None:
                self.port = free_port(socket.SOCK_STREAM, self.host)
            try:
                self._spawn_and_wait()
                return self
            except BrokerError as exc:
                last_error = exc
                if "Address already in use" not in self._log_since(self._attempt_offset):
                    raise
                if self._fixed_port:
                    time.sleep(0.2)  # a restart racing the old socket: try the same port again
                else:
                    self.port = None  # someone took the free port meanwhile: pick another
        assert last_error is not None
        raise last_error

    def stop(self, timeout: float = 5.0) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL after ``timeout``).  Safe to call twice."""
        process, self.process = self.process, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if process is not None:
            _terminate(process, timeout)

    def kill(self) -> None:
        """``kill -9`` mosquitto: no goodbye to its clients, nothing saved (a crash, a power cut
        of the broker host).  ``start()`` brings it back on the same port."""
        process, self.process = self.process, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)

    def close(self) -> None:
        """Stop and remove the temp dir (config, ACL, log)."""
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> LocalBroker:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log_file:
            log_file.seek(offset)
            return log_file.read().decode(errors="replace")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log_text(self) -> str:
        """Everything mosquitto logged so far, across restarts."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LocalBroker {self.host}:{self.port} {state}>"

    # -- internals ------------------------------------------------------------------------------

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self._allow_anonymous else 'false'}",
            *(["persistence true", f"persistence_location {self.dir}/"] if self._persistent
              else ["persistence false"]),
            # mosquitto logs to its stderr, which start() sends to the log file: this also catches
            # errors printed before the config is parsed.
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to user "mosquitto", which cannot read our 0700
            # temp dir (the ACL file).  Keep it as the user that started it.
            lines.append("user root")
        if self._acl is not None:
            acl_path = self.dir / "acl"
            acl_path.write_text(self._acl)
            lines.append(f"acl_file {acl_path}")
        if self._extra_config:
            lines.append(self._extra_config)
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _spawn_and_wait(self) -> None:
        conf = self._write_config()
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"--- starting on {self.host}:{self.port}\n".encode())
            log_file.flush()
            self._attempt_offset = log_file.tell()
            process = subprocess.Popen(
                [self._binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.process = process
        self._finalizer = weakref.finalize(self, _terminate, process)
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if process.poll() is not None:
                problem = f"mosquitto exited with status {process.returncode}"
                break
            # Ready once mosquitto says its listeners are open (a bare TCP connect could reach
            # whoever else holds the port) and the port answers.
            if _RUNNING.search(self._log_since(self._attempt_offset)) and self._accepts():
                log.debug("mosquitto running on %s:%s (pid %s)", self.host, self.port, process.pid)
                return
            if time.monotonic() >= deadline:
                problem = f"mosquitto did not accept connections within {self._startup_timeout} s"
                break
            time.sleep(0.05)
        self.stop()
        tail = "\n".join(self._log_since(self._attempt_offset).splitlines()[-15:])
        raise BrokerError(f"{problem} on {self.host}:{self.port}; log tail:\n{tail}")


class Message(NamedTuple):
    """One message as a subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool
    properties: Properties | None
    qos: int = 0  # as delivered: the lower of the publisher's and the subscription's QoS

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client (MQTT 5) that collects every message matching ``topic_filter``.

    Entering the context connects and waits for the SUBACK, so anything published afterwards is
    seen.  With ``retain_as_published`` (the default) the broker keeps the publisher's retain flag
    on live messages, so ``Message.retain`` tells whether the publisher asked for retention;
    retained messages replayed at subscribe time always carry ``retain=True``.

    This helper may use paho's own loop thread: its callbacks only append to a locked list.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str,
        *,
        qos: int = 1,
        retain_as_published: bool = True,
        client_id: str | None = None,
        timeout: float = 5.0,
        on_message: Callable[[Message], None] | None = None,
        session_expiry_s: int | None = None,
        tls: ssl.SSLContext | None = None,
        reconnect_delay_s: tuple[float, float] | None = None,
    ) -> None:
        self.host = host
        self._on_each = on_message  # e.g. the demo prints each message as it arrives
        self._session_expiry_s = session_expiry_s
        self._tls = tls
        self.port = port
        self.topic_filter = topic_filter
        self._options = SubscribeOptions(qos=qos, retainAsPublished=retain_as_published)
        self._timeout = timeout
        self._messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"subscriber-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        if reconnect_delay_s is not None:  # a test restarting the broker often: back at once
            self._client.reconnect_delay_set(*reconnect_delay_s)  # type: ignore[arg-type]  # floats work
        self.subscriptions = 0  # SUBACKs so far: one per (re)connect
        self._started = False

    def start(self) -> Subscriber:
        props = None
        if self._session_expiry_s is not None:  # a persistent session: queued while away
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._session_expiry_s
        if self._tls is not None:
            self._client.tls_set_context(self._tls)
        self._client.connect(self.host, self.port, keepalive=30,
                             clean_start=self._session_expiry_s is None, properties=props)
        self._client.loop_start()
        self._started = True
        if not self._subscribed.wait(self._timeout):
            self.stop()
            raise TimeoutError(
                f"no SUBACK for {self.topic_filter!r} from {self.host}:{self.port} "
                f"within {self._timeout} s"
            )
        return self

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._client.disconnect()
            self._client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[Message]:
        with self._cond:
            return list(self._messages)

    def wait_for(
        self, predicate: Callable[[list[Message]], bool], timeout: float = 5.0
    ) -> list[Message]:
        """Return the messages received so far as soon as ``predicate(messages)`` is true;
        ``TimeoutError`` listing what arrived if it is still false after ``timeout`` seconds."""
        with self._cond:
            if self._cond.wait_for(lambda: predicate(list(self._messages)), timeout):
                return list(self._messages)
            got = list(self._messages)
        listing = "\n".join(f"  {m.topic} retain={m.retain} {m.payload[:200]!r}" for m in got)
        raise TimeoutError(
            f"after {timeout} s on {self.topic_filter!r}, got {len(got)} message(s):\n"
            f"{listing or '  (none)'}"
        )

    # paho callbacks (network thread): record only.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic_filter, options=self._options)

    def quiet(self) -> None:
        """Stop calling ``on_message`` (messages are still collected)."""
        self._on_each = None

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subscriptions += 1
        self._subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        props = getattr(msg, "properties", None)
        message = Message(msg.topic, bytes(msg.payload), bool(msg.retain), props, msg.qos)
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
        if self._on_each is not None:
            self._on_each(message)
