"""The durable outbox: every result is on disk before anyone tries to publish it.

SQLite in WAL mode with ``synchronous=FULL``: :meth:`Outbox.put` returns only once the row is
durably committed, so a ``kill -9`` or a power cut right after it loses nothing.  A row is deleted
only when the broker acknowledged it (PUBACK with a success reason code): delivery is *at least
once*, and consumers de-duplicate on the result's UUID.

The outbox is bounded by row count and payload bytes.  When full, the oldest rows are dropped —
never silently: the number dropped is kept in the database (it survives restarts), logged, and
reported in the health record.

A row the broker acknowledged is delivered even when its DELETE cannot be written (disk full,
database locked): :meth:`Outbox.ack` then remembers it, in memory, as delivered — never handed
out again, no longer counted as waiting — and deletes it with the next delete that works (a
later :meth:`Outbox.ack`, or :meth:`Outbox.delete_acked`).  Only a restart before that sends it
again (at least once, as always).

Rows are handed out oldest first, so the broker receives results in the order they were made.
*Bulk* rows (call recordings: large, and only worth having next to their result) come last:
they are handed out only once no other row waits, and they are the first dropped when full, so
a recording never delays nor displaces a result.  A row may carry an MQTT 5 content type and
user properties, published with it.

A full disk is handled like a full outbox: :meth:`Outbox.put` drops the oldest bulk rows (the
recordings) one by one until the new row fits, counting them; if none is left to drop, it raises
:class:`StorageFull` and the caller keeps the message (the forwarder holds results in memory
until the disk has room again, and reports it).

An outbox file from before bulk rows existed is migrated in place when opened (its rows are
kept, as ordinary rows without properties).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from probe.errors import ProbeError

log = logging.getLogger("probe.uplink.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    leaf TEXT NOT NULL,          -- topic leaf under hotline-probe/v1/<probe-id>/
    payload BLOB NOT NULL,
    created REAL NOT NULL,       -- wall clock, for operators reading the database
    attempts INTEGER NOT NULL DEFAULT 0,
    bulk INTEGER NOT NULL DEFAULT 0,  -- 1: sent after, and dropped before, every other row
    content_type TEXT,           -- MQTT 5 Content Type, or NULL
    user_properties TEXT         -- MQTT 5 User Properties: JSON list of [name, value], or NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('dropped', 0);
INSERT OR IGNORE INTO meta VALUES ('bulk_dropped', 0);
"""

#: Columns of SCHEMA added after the first release.  Opening an older file adds them
#: (``ALTER TABLE ... ADD COLUMN``, same definitions): its rows keep their ids and order.
ADDED_COLUMNS = {
    "bulk": "INTEGER NOT NULL DEFAULT 0",
    "content_type": "TEXT",
    "user_properties": "TEXT",
}


#: Space kept aside next to the database (a file of zeros).  On a full disk even a DELETE needs
#: room (WAL frames): releasing this file is what lets the outbox drop recordings to keep results.
RESERVE_BYTES = 1024 * 1024


class StorageFull(ProbeError, OSError):
    """The state directory's disk is full and no recording was left to make room."""


def disk_full(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL: "database or disk is full" (the file system, not our own bounds)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


@dataclass(frozen=True)
class Row:
    id: int
    leaf: str
    payload: bytes
    attempts: int
    bulk: bool = False
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Depth:
    count: int
    bytes: int
    dropped: int  # ordinary rows ever dropped because the outbox was full (persistent)
    bulk_dropped: int = 0  # bulk rows (recordings) ever dropped because it was full (persistent)


class Outbox:
    """A bounded, durable FIFO of messages waiting for the broker's acknowledgement.

    Thread-safe: worker threads :meth:`put`, the publishing side :meth:`take` and :meth:`ack`.
    """

    def __init__(self, path: Path, *, max_count: int = 10_000,
                 max_bytes: int = 50 * 1024 * 1024, reserve_bytes: int = RESERVE_BYTES) -> None:
        self.path = path
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.reserve = path.with_name(path.name + ".reserve")
        self.reserve_bytes = reserve_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._keep_reserve()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Keep the WAL small (checkpoint each ~1 MiB, truncate it back to 1 MiB): on a small or
        # full disk, WAL growth is what would fill it.
        self._db.execute("PRAGMA wal_autocheckpoint=256")
        self._db.execute("PRAGMA journal_size_limit=1048576")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._in_flight: set[int] = set()
        # Acknowledged by the broker, but the DELETE could not be written: row id -> payload
        # bytes.  Delivered: not handed out again, not counted as waiting.
        self._acked: dict[int, int] = {}

    def _migrate(self) -> None:
        with self._transaction() as db:
            present = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
            missing = [name for name in ADDED_COLUMNS if name not in present]
            for name in missing:
                db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {ADDED_COLUMNS[name]}")
        if missing:
            log.info("outbox %s migrated: added %s", self.path, ", ".join(missing))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")  # may fail too (disk full): then rolled back below
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back by itself
                    self._db.execute("ROLLBACK")
                raise

    def put(self, leaf: str, payload: bytes, *, bulk: bool = False,
            content_type: str | None = None,
            user_properties: tuple[tuple[str, str], ...] = ()) -> int:
        """Store a message durably (committed and fsynced on return); returns its row id.

        ``bulk`` rows wait behind every other row and are dropped first when full; a bulk row
        that does not fit even then is dropped itself (ordinary rows are never dropped for it).
        """
        props = json.dumps([list(p) for p in user_properties]) if user_properties else None
        while True:
            try:
                row_id = self._insert(leaf, payload, bulk, content_type, props)
                if bulk:  # a recording goes into the database file now, not the WAL: once it
                    self._checkpoint()  # is dropped, its pages are room a result can reuse
                if not self.reserve.exists():  # after a full disk: once there is room again
                    self._keep_reserve()
                return row_id
            except sqlite3.OperationalError as exc:
                if not disk_full(exc):
                    raise
                if not self._make_room(exc):
                    raise StorageFull(f"{self.path}: disk full, no recording left to drop "
                                      f"({exc})") from exc

    def _keep_reserve(self) -> None:
        """(Re)create the reserve file if it is missing and the disk has room for it."""
        if self.reserve_bytes <= 0 or self.reserve.exists():
            return
        try:
            with open(self.reserve, "wb") as f:
                f.write(bytes(self.reserve_bytes))  # real blocks: a sparse file reserves nothing
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            self.reserve.unlink(missing_ok=True)
            log.warning("outbox reserve %s not (re)created: %s", self.reserve, exc)

    def _make_room(self, cause: sqlite3.Error) -> bool:
        """Disk full: drop the oldest recording (the reserve, released first, is the room its
        delete needs); False when no recording is left and the reserve is gone too."""
        released = self.reserve.exists()
        if released:
            self.reserve.unlink()
            log.error("disk full (%s): released the outbox's reserve (%d bytes) to keep results",
                      cause, self.reserve_bytes)
        return self._drop_oldest_bulk(cause) or released

    def _drop_oldest_bulk(self, cause: sqlite3.Error) -> bool:
        """Delete the oldest bulk row to make room; False when there is none (or even the
        delete cannot be written)."""
        try:
            with self._transaction() as db:
                found = db.execute("SELECT id FROM outbox WHERE bulk = 1 ORDER BY id LIMIT 1"
                                   ).fetchone()
                if found is None:
                    return False
                db.execute("DELETE FROM outbox WHERE id = ?", found)
                db.execute("UPDATE meta SET value = value + 1 WHERE key = 'bulk_dropped'")
                self._in_flight.discard(found[0])
                self._acked.pop(found[0], None)
        except sqlite3.OperationalError as exc:
            log.error("disk full: cannot even drop a recording from the outbox: %s", exc)
            return False
        log.error("disk full (%s): dropped the oldest recording (outbox row %d) to keep a result",
                  cause, found[0])
        self._checkpoint()
        return True

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file, so that the next writes restart the WAL and
        reuse its space (a checkpoint that cannot be written now is retried by SQLite later)."""
        try:
            with self._lock:
                busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.OperationalError as exc:  # disk full, or locked by another process
            log.warning("outbox checkpoint not written: %s", exc)
            return
        if busy:
            log.debug("outbox checkpoint incomplete: a reader holds the WAL")

    def _insert(self, leaf: str, payload: bytes, bulk: bool, content_type: str | None,
                props: str | None) -> int:
        with self._transaction() as db:
            row_id = db.execute(
                "INSERT INTO outbox (leaf, payload, created, bulk, content_type, user_properties)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (leaf, payload, time.time(), int(bulk), content_type, props)).lastrowid
            dropped, bulk_dropped = self._enforce_bounds(db)
        if dropped or bulk_dropped:
            log.error("outbox full (%d rows / %d bytes max): dropped the %d oldest rows and "
                      "%d bulk rows (recordings)", self.max_count, self.max_bytes, dropped,
                      bulk_dropped)
        assert row_id is not None
        return row_id

    def _enforce_bounds(self, db: sqlite3.Connection) -> tuple[int, int]:
        """Drop rows until within bounds: bulk rows first (the new one included), then the
        oldest ordinary rows, never the newest ordinary row.  Returns (ordinary, bulk) dropped."""
        count, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        if count <= self.max_count and size <= self.max_bytes:
            return 0, 0
        doomed: list[tuple[int, bool]] = []
        victims = db.execute("SELECT id, LENGTH(payload), bulk FROM outbox WHERE bulk = 1 OR id <"
                             " (SELECT MAX(id) FROM outbox) ORDER BY bulk DESC, id")
        for row_id, length, bulk in victims:  # read lazily: usually only a few are needed
            if count <= self.max_count and size <= self.max_bytes:
                break
            doomed.append((row_id, bool(bulk)))
            count, size = count - 1, size - length
        victims.close()
        db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i, _ in doomed])
        self._in_flight.difference_update(i for i, _ in doomed)
        for i, _ in doomed:
            self._acked.pop(i, None)
        bulk_dropped = sum(bulk for _, bulk in doomed)
        dropped = len(doomed) - bulk_dropped
        db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (dropped,))
        db.execute("UPDATE meta SET value = value + ? WHERE key = 'bulk_dropped'",
                   (bulk_dropped,))
        return dropped, bulk_dropped

    def take(self, limit: int, *, bulk: bool = True) -> list[Row]:
        """Up to ``limit`` rows not already handed out, ordinary rows oldest first, then (unless
        ``bulk`` is False) bulk rows oldest first; marks them in flight."""
        with self._lock:
            # At most len(in_flight) + len(acked) of the first rows are in flight or delivered:
            # reading that many more yields ``limit`` fresh ones whenever there are.
            rows = self._db.execute(
                "SELECT id, leaf, payload, attempts, bulk, content_type, user_properties"
                " FROM outbox WHERE bulk <= ? ORDER BY bulk, id LIMIT ?",
                (int(bulk), limit + len(self._in_flight) + len(self._acked))).fetchall()
            fresh = [_row(*row) for row in rows
                     if row[0] not in self._in_flight and row[0] not in self._acked][:limit]
            for row in fresh:
                self._in_flight.add(row.id)
            if fresh:
                self._count_attempts([r.id for r in fresh])
            return fresh

    def _count_attempts(self, ids: list[int]) -> None:
        """Count one more attempt (for operators); a disk too full (or a database locked) for
        this bookkeeping must not stop the rows from going."""
        try:
            self._db.execute(f"UPDATE outbox SET attempts = attempts + 1 WHERE id IN "
                             f"({','.join('?' * len(ids))})", ids)
        except sqlite3.OperationalError as exc:
            log.warning("outbox attempts of %d rows not counted: %s", len(ids), exc)

    def ack(self, row_id: int) -> None:
        """The broker has it: delete the row (durably), and any delivered row whose delete
        failed before.  When the delete cannot be written (disk full, database locked) the row
        is remembered as delivered all the same, for a later delete, and the error raised for
        the caller to report."""
        try:
            self._delete_delivered(row_id)
        except sqlite3.Error:
            with self._lock:  # in flight until now: not handed out again meanwhile
                self._in_flight.discard(row_id)
                try:
                    found = self._db.execute("SELECT LENGTH(payload) FROM outbox WHERE id = ?",
                                             (row_id,)).fetchone()
                except sqlite3.Error:
                    found = (0,)  # still delivered: only its size is not known
                if found is not None:  # (None: dropped meanwhile, nothing left to delete)
                    self._acked[row_id] = found[0]
            raise

    def delete_acked(self) -> None:
        """Delete the delivered rows still in the database (nothing to do when there is none);
        raises when the delete cannot be written (they stay remembered)."""
        if self._acked:
            self._delete_delivered()

    def _delete_delivered(self, *more: int) -> None:
        with self._transaction() as db:
            ids = [*more, *self._acked]
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        with self._lock:  # committed: gone from the table, so not handed out again meanwhile
            self._in_flight.difference_update(more)
            for i in ids:
                self._acked.pop(i, None)

    @property
    def undeleted(self) -> int:
        """Delivered rows whose delete is still to be written."""
        with self._lock:
            return len(self._acked)

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
            meta = dict(self._db.execute(
                "SELECT key, value FROM meta WHERE key IN ('dropped', 'bulk_dropped')"))
            # Delivered rows not yet deleted are not waiting.
            count, size = count - len(self._acked), size - sum(self._acked.values())
        return Depth(count, size, meta["dropped"], meta["bulk_dropped"])


def _row(row_id: int, leaf: str, payload: bytes, attempts: int, bulk: int,
         content_type: str | None, user_properties: str | None) -> Row:
    """A row as handed out: its attempt counted, its user properties decoded."""
    props = tuple((str(k), str(v)) for k, v in json.loads(user_properties or "[]"))
    return Row(row_id, leaf, payload, attempts + 1, bool(bulk), content_type, props)
