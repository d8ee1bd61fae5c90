"""The durable outbox: every result is on disk before anyone tries to publish it.

SQLite in WAL mode with ``synchronous=FULL``: :meth:`Outbox.put` returns only once the row is
durably committed, so a ``kill -9`` or a power cut right after it loses nothing.  A row is deleted
only when the broker acknowledged it (PUBACK with a success reason code): delivery is *at least
once*, and consumers de-duplicate on the result's UUID.

The outbox is bounded by row count and payload bytes.  When full, the oldest rows are dropped —
never silently: the number dropped is kept in the database (it survives restarts), logged, and
reported in the health record.

Rows are handed out oldest first, so the broker receives results in the order they were made.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("probe.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    leaf TEXT NOT NULL,          -- topic leaf under hotline-probe/v1/<probe-id>/
    payload BLOB NOT NULL,
    created REAL NOT NULL,       -- wall clock, for operators reading the database
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('dropped', 0);
"""


@dataclass(frozen=True)
class Row:
    id: int
    leaf: str
    payload: bytes
    attempts: int


@dataclass(frozen=True)
class Depth:
    count: int
    bytes: int
    dropped: int  # rows ever dropped because the outbox was full (persistent)


class Outbox:
    """A bounded, durable FIFO of messages waiting for the broker's acknowledgement.

    Thread-safe: worker threads :meth:`put`, the publishing side :meth:`take` and :meth:`ack`.
    """

    def __init__(self, path: Path, *, max_count: int = 10_000,
                 max_bytes: int = 50 * 1024 * 1024) -> None:
        self.path = path
        self.max_count = max_count
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._in_flight: set[int] = set()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, leaf: str, payload: bytes) -> int:
        """Store a message durably (committed and fsynced on return); returns its row id."""
        with self._transaction() as db:
            row_id = db.execute("INSERT INTO outbox (leaf, payload, created) VALUES (?, ?, ?)",
                                (leaf, payload, time.time())).lastrowid
            dropped = self._enforce_bounds(db)
        if dropped:
            log.error("outbox full (%d rows / %d bytes max): dropped the %d oldest",
                      self.max_count, self.max_bytes, dropped)
        assert row_id is not None
        return row_id

    def _enforce_bounds(self, db: sqlite3.Connection) -> int:
        count, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        if count <= self.max_count and size <= self.max_bytes:
            return 0
        # Oldest first, read lazily; never the newest row (the one just added).
        doomed: list[int] = []
        oldest = db.execute("SELECT id, LENGTH(payload) FROM outbox WHERE id < "
                            "(SELECT MAX(id) FROM outbox) ORDER BY id")
        for row_id, length in oldest:
            if count <= self.max_count and size <= self.max_bytes:
                break
            doomed.append(row_id)
            count, size = count - 1, size - length
        oldest.close()
        db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in doomed])
        self._in_flight.difference_update(doomed)
        db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (len(doomed),))
        return len(doomed)

    def take(self, limit: int) -> list[Row]:
        """Up to ``limit`` of the oldest rows not already handed out; marks them in flight."""
        with self._lock:
            # Rows in flight are among the oldest: reading that many more covers them.
            rows = self._db.execute(
                "SELECT id, leaf, payload, attempts FROM outbox ORDER BY id LIMIT ?",
                (limit + len(self._in_flight),)).fetchall()
            fresh = [Row(i, leaf, payload, attempts + 1) for i, leaf, payload, attempts in rows
                     if i not in self._in_flight][:limit]
            for row in fresh:
                self._in_flight.add(row.id)
            if fresh:
                self._db.execute(
                    f"UPDATE outbox SET attempts = attempts + 1 WHERE id IN "
                    f"({','.join('?' * len(fresh))})", [r.id for r in fresh])
            return fresh

    def ack(self, row_id: int) -> None:
        """The broker has it: delete the row (durably)."""
        with self._transaction() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            self._in_flight.discard(row_id)

    def release(self, row_id: int) -> None:
        """Not delivered (refused, or given up at shutdown): hand it out again later."""
        with self._lock:
            self._in_flight.discard(row_id)

    def release_all(self) -> None:
        """After a reconnect, everything unacknowledged goes again, oldest first."""
        with self._lock:
            self._in_flight.clear()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def depth(self) -> Depth:
        with self._lock:
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
            (dropped,) = self._db.execute(
                "SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return Depth(count, size, dropped)
