"""Store-and-forward: moves results from the durable outbox to the broker, in order, at a rate.

Workers only ever :meth:`Forwarder.submit` (which commits to SQLite before returning); this
thread hands the oldest rows to the :class:`~probe.uplink.mqtt.Publisher`, at most ``window``
unacknowledged at a time and at most ``rate_per_s`` per second, so that a backlog of thousands
after a long outage drains steadily instead of flooding the broker.  A row is deleted on a
success PUBACK; a refused one (e.g. 0x87 Not authorized) is kept, counted, and retried after
``refused_backoff_s`` (a refused recording holds back only the recordings).

Recordings are *bulk* rows (:meth:`Forwarder.submit_bulk`): the outbox hands them out only once
every result has gone, so a backlog of recordings never holds a result back.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from typing import Any

from probe.uplink.mqtt import (
    JSON_CONTENT_TYPE,
    Delivery,
    Publisher,
    encode_payload,
    message_properties,
)
from probe.uplink.outbox import Outbox, Row

log = logging.getLogger("probe.uplink.forwarder")

#: Results held in memory while the outbox cannot store them (disk full, database locked by
#: another process); beyond this the oldest held one is dropped, counted and logged.
MAX_UNSAVED = 1000
#: How often the forwarder retries storing held results (and how long it rests after an error).
RETRY_STORE_S = 2.0
#: MQTT 5 PUBACK 0x10 "No matching subscribers": the broker took the message and dropped it.
NO_SUBSCRIBERS = 0x10


class Forwarder:
    def __init__(self, outbox: Outbox, *, rate_per_s: float = 20.0, window: int = 10,
                 refused_backoff_s: float = 30.0, unheard_backoff_s: float = 5.0) -> None:
        self.outbox = outbox
        self.rate_per_s = rate_per_s
        self.window = window
        self.refused_backoff_s = refused_backoff_s
        self.unheard_backoff_s = unheard_backoff_s
        self.unheard = 0  # PUBACKs that said nobody subscribed: kept and sent again
        self.publisher: Publisher | None = None
        self.sent = 0
        self.acked = 0
        self.refused = 0
        self.last_beat = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._paused_until = 0.0
        self._bulk_paused_until = 0.0  # bulk rows only: results keep going meanwhile
        # Storage faults: results not yet on disk, oldest first (they go before any newer one).
        self._unsaved: deque[tuple[str, bytes]] = deque()
        self._unsaved_lock = threading.Lock()
        self._retry_store_at = 0.0
        self.unsaved_dropped = 0
        self.recordings_unsaved = 0
        self.storage_error: str | None = None  # the outbox's last write error, until one works
        self._thread = threading.Thread(
            target=self._run, name="probe.uplink.forwarder", daemon=True
        )

    # The publisher is built by the caller with ``on_delivery=forwarder.delivered``.
    def start(self, publisher: Publisher) -> Forwarder:
        self.publisher = publisher
        self._thread.start()
        return self

    def submit(self, leaf: str, doc: dict[str, Any]) -> int | None:
        """Commit a message durably, then wake the forwarding thread; returns the row id.

        Never raises for the disk: when the outbox cannot store it (disk full, database locked)
        the message is held in memory, in order, retried every ``RETRY_STORE_S`` and reported
        (``storage_error``, health); returns None then."""
        payload = encode_payload(doc)
        with self._unsaved_lock:
            if self._unsaved:  # older ones wait for the disk: keep the order
                self._hold(leaf, payload)
                return None
            try:
                row_id = self.outbox.put(leaf, payload)
            except (sqlite3.Error, OSError) as exc:
                self._storage_failed(exc)
                self._hold(leaf, payload)
                return None
        self.storage_error = None
        self._wake.set()
        return row_id

    def submit_bulk(self, leaf: str, payload: bytes, *, content_type: str,
                    user_properties: tuple[tuple[str, str], ...] = ()) -> int | None:
        """Commit a bulk message (a recording) durably: it goes after every waiting result and
        is the first dropped when the outbox is full.  Returns the row id; None when the disk
        cannot take it (the recording is dropped, counted and logged: results come first)."""
        try:
            row_id = self.outbox.put(leaf, payload, bulk=True, content_type=content_type,
                                     user_properties=user_properties)
        except (sqlite3.Error, OSError) as exc:
            self._storage_failed(exc)
            self.recordings_unsaved += 1
            log.error("recording not stored (%d bytes), dropped: %s", len(payload), exc)
            return None
        self._wake.set()
        return row_id

    @property
    def unsaved(self) -> int:
        """Results held in memory because the outbox could not store them."""
        return len(self._unsaved)

    def _storage_failed(self, exc: BaseException) -> None:
        self.storage_error = f"{type(exc).__name__}: {exc}"
        log.error("outbox cannot store: %s", exc,
                  extra={"event": "storage_error", "path": str(self.outbox.path),
                         "error": self.storage_error})

    def _hold(self, leaf: str, payload: bytes) -> None:
        if len(self._unsaved) >= MAX_UNSAVED:
            self._unsaved.popleft()
            self.unsaved_dropped += 1
            log.error("%d results held in memory while the outbox cannot store them: dropped the "
                      "oldest (%d so far)", MAX_UNSAVED, self.unsaved_dropped)
        self._unsaved.append((leaf, payload))
        log.warning("result held in memory until the outbox can store it (%d waiting)",
                    len(self._unsaved))

    @property
    def _writes_pending(self) -> bool:
        """Results held in memory, or delivered rows whose delete the outbox could not write."""
        return bool(self._unsaved) or self.outbox.undeleted > 0

    def _write_pending(self) -> None:
        """Forwarder thread: move held results to the outbox, oldest first, while it works;
        then delete the delivered rows whose delete failed."""
        with self._unsaved_lock:
            while self._unsaved:
                leaf, payload = self._unsaved[0]
                try:
                    self.outbox.put(leaf, payload)
                except (sqlite3.Error, OSError) as exc:
                    self._storage_failed(exc)
                    return
                self._unsaved.popleft()
            try:
                self.outbox.delete_acked()
            except sqlite3.Error as exc:
                self._storage_failed(exc)
                return
            if self.storage_error is not None:
                log.info("outbox stores results again")
            self.storage_error = None

    def delivered(self, delivery: Delivery) -> None:
        """Publisher callback (its network thread): the broker answered for one row."""
        row = delivery.ref
        if not isinstance(row, Row):
            return
        if delivery.reason_code == NO_SUBSCRIBERS:
            # Nobody subscribed: the broker dropped it.  That is the window right after a
            # mosquitto restart (it does not restore a persistent session's *shared*
            # subscription, so ops' $share/... is gone until ops reconnects) or ops not yet
            # running: keep the row and send it again soon — a monitoring result nobody heard
            # is not delivered.
            self.outbox.release(row.id)
            self.unheard += 1
            if row.bulk:
                self._bulk_paused_until = time.monotonic() + self.unheard_backoff_s
            else:
                self._paused_until = time.monotonic() + self.unheard_backoff_s
            log.warning("no subscriber for outbox row %d (%s): kept, sending again in %.0f s",
                        row.id, row.leaf, self.unheard_backoff_s)
        elif delivery.acked:
            try:
                self.outbox.ack(row.id)
            except sqlite3.Error as exc:
                # Locked or full: the broker has it all the same.  The outbox keeps it as
                # delivered (not sent again) and deletes it later; nothing else waits for that
                # (a pause here held every newer result back on a full disk).
                self._storage_failed(exc)
            self.acked += 1
        elif delivery.reason_code is None:
            # Abandoned (publisher closing, or paho would not take it): no refusal, no back-off;
            # the row goes again, to this publisher or from disk after the restart.
            self.outbox.release(row.id)
            log.warning("outbox row %d (%s) not delivered: %s", row.id, row.leaf,
                        delivery.reason or "publisher stopped")
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
        if self._writes_pending:  # one last try: held in memory, they would end with the
            self._write_pending()  # process (or, delivered, go again after it)
        if self._unsaved:
            log.error("stopping with %d results the outbox could not store: they are lost",
                      len(self._unsaved), extra={"event": "results_lost",
                                                 "count": len(self._unsaved)})

    def _run(self) -> None:
        assert self.publisher is not None
        tokens = float(self.window)
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            self.last_beat = now
            tokens = min(float(self.window), tokens + (now - last) * self.rate_per_s)
            last = now
            try:
                tokens = self._step(now, tokens)
            except Exception:  # a locked database, a bug: this thread must go on forwarding
                log.exception("forwarder step failed; retrying in %.0f s", RETRY_STORE_S)
                self._stop.wait(RETRY_STORE_S)
            self._wake.wait(0.2 if tokens < 1 else 1.0)
            self._wake.clear()

    def _step(self, now: float, tokens: float) -> float:
        """Store held results, then hand the broker what the window and rate allow; returns
        the tokens left."""
        assert self.publisher is not None
        if self._writes_pending and now >= self._retry_store_at:
            self._retry_store_at = now + RETRY_STORE_S
            self._write_pending()
        room = min(self.window - self.outbox.in_flight, int(tokens))
        if self.publisher.connected and room > 0 and now >= self._paused_until:
            for row in self.outbox.take(room, bulk=now >= self._bulk_paused_until):
                # Rows without a Content Type are JSON documents (results).
                props = message_properties(row.content_type or JSON_CONTENT_TYPE,
                                           row.user_properties)
                self.publisher.publish(row.leaf, row.payload, ref=row, properties=props)
                self.sent += 1
                tokens -= 1
        return tokens
