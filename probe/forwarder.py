"""Store-and-forward: moves results from the durable outbox to the broker, in order, at a rate.

Workers only ever :meth:`Forwarder.submit` (which commits to SQLite before returning); this
thread hands the oldest rows to the :class:`~probe.mqtt.Publisher`, at most ``window``
unacknowledged at a time and at most ``rate_per_s`` per second, so that a backlog of thousands
after a long outage drains steadily instead of flooding the broker.  A row is deleted on a
success PUBACK; a refused one (e.g. 0x87 Not authorized) is kept, counted, and retried after
``refused_backoff_s`` (a refused recording holds back only the recordings).

Recordings are *bulk* rows (:meth:`Forwarder.submit_bulk`): the outbox hands them out only once
every result has gone, so a backlog of recordings never holds a result back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from probe.mqtt import Delivery, Publisher, encode_payload, message_properties
from probe.outbox import Outbox, Row

log = logging.getLogger("probe.forwarder")


class Forwarder:
    def __init__(self, outbox: Outbox, *, rate_per_s: float = 20.0, window: int = 10,
                 refused_backoff_s: float = 30.0) -> None:
        self.outbox = outbox
        self.rate_per_s = rate_per_s
        self.window = window
        self.refused_backoff_s = refused_backoff_s
        self.publisher: Publisher | None = None
        self.sent = 0
        self.acked = 0
        self.refused = 0
        self.last_beat = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._paused_until = 0.0
        self._bulk_paused_until = 0.0  # bulk rows only: results keep going meanwhile
        self._thread = threading.Thread(target=self._run, name="probe.forwarder", daemon=True)

    # The publisher is built by the caller with ``on_delivery=forwarder.delivered``.
    def start(self, publisher: Publisher) -> Forwarder:
        self.publisher = publisher
        self._thread.start()
        return self

    def submit(self, leaf: str, doc: dict[str, Any]) -> int:
        """Commit a message durably, then wake the forwarding thread; returns the row id."""
        row_id = self.outbox.put(leaf, encode_payload(doc))
        self._wake.set()
        return row_id

    def submit_bulk(self, leaf: str, payload: bytes, *, content_type: str,
                    user_properties: tuple[tuple[str, str], ...] = ()) -> int:
        """Commit a bulk message (a recording) durably: it goes after every waiting result and
        is the first dropped when the outbox is full.  Returns the row id."""
        row_id = self.outbox.put(leaf, payload, bulk=True, content_type=content_type,
                                 user_properties=user_properties)
        self._wake.set()
        return row_id

    def delivered(self, delivery: Delivery) -> None:
        """Publisher callback (its network thread): the broker answered for one row."""
        row = delivery.ref
        if not isinstance(row, Row):
            return
        if delivery.acked:
            self.outbox.ack(row.id)
            self.acked += 1
        else:
            self.outbox.release(row.id)
            self.refused += 1
            until = time.monotonic() + self.refused_backoff_s
            # A refused recording (say, a broker whose ACL predates them) must not hold back
            # the results: only the bulk rows wait.
            if row.bulk:
                self._bulk_paused_until = until
            else:
                self._paused_until = until
            log.error("broker refused outbox row %d (%s): %s; retrying in %.0f s", row.id,
                      row.leaf, delivery.reason, self.refused_backoff_s)
        self._wake.set()

    def drain(self, timeout: float) -> bool:
        """Keep forwarding until every row is acknowledged, the broker is gone, or ``timeout``;
        True when the outbox is empty (the rest waits on disk for the next start)."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth().count and time.monotonic() < deadline:
            if self.publisher is None or not self.publisher.connected:
                break
            # At shutdown, no back-off: one last try for everything.
            self._paused_until = self._bulk_paused_until = 0.0
            self._wake.set()
            time.sleep(0.05)
        return self.outbox.depth().count == 0

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        assert self.publisher is not None
        publisher = self.publisher
        tokens = float(self.window)
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            self.last_beat = now
            tokens = min(float(self.window), tokens + (now - last) * self.rate_per_s)
            last = now
            room = min(self.window - self.outbox.in_flight, int(tokens))
            if publisher.connected and room > 0 and now >= self._paused_until:
                for row in self.outbox.take(room, bulk=now >= self._bulk_paused_until):
                    props = message_properties(row.content_type, row.user_properties)
                    publisher.publish(row.leaf, row.payload, ref=row, properties=props)
                    self.sent += 1
                    tokens -= 1
            self._wake.wait(0.2 if tokens < 1 else 1.0)
            self._wake.clear()
