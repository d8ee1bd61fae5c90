"""The durable outbox: order, bounds, never silent drops, and survival of kill -9."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from probe.uplink.forwarder import RETRY_STORE_S, Forwarder
from probe.uplink.mqtt import Delivery
from probe.uplink.outbox import Depth, Outbox, Row
from tests.waiting import wait_until


def test_rows_come_out_oldest_first_and_leave_only_on_ack(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    ids = [box.put("result", f"r{i}".encode()) for i in range(5)]
    first = box.take(2)
    assert [r.payload for r in first] == [b"r0", b"r1"]
    assert [r.payload for r in box.take(10)] == [b"r2", b"r3", b"r4"]  # not handed out twice
    assert box.take(10) == []
    box.ack(ids[0])
    box.release(ids[1])  # refused: goes again, still before anything newer
    assert [r.payload for r in box.take(10)] == [b"r1"]
    assert box.depth().count == 4
    box.release_all()
    assert [r.attempts for r in box.take(10)] == [3, 2, 2, 2]


def test_full_outbox_drops_oldest_and_counts_them_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, max_count=3)
    for i in range(5):
        box.put("result", f"r{i}".encode())
    assert box.depth().count == 3
    assert box.depth().dropped == 2
    assert [r.payload for r in box.take(10)] == [b"r2", b"r3", b"r4"]
    box.close()
    again = Outbox(path, max_count=3)
    assert again.depth().dropped == 2  # persisted, reported in health, never silent
    assert again.depth().count == 3


def test_byte_bound_drops_oldest_but_keeps_the_newest(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=250)
    for i in range(4):
        box.put("result", bytes([65 + i]) * 100)
    depth = box.depth()
    assert depth.bytes <= 250
    assert depth.dropped == 2
    assert box.take(5)[-1].payload == b"D" * 100
    box.put("result", b"E" * 400)  # larger than the bound alone: kept, everything else dropped
    assert [r.payload[:1] for r in box.take(5)] == [b"E"]


def test_put_is_durable_when_the_process_is_killed(tmp_path: Path) -> None:
    """A child writes rows as fast as it can and is SIGKILLed mid-stream: every row it reported
    as committed is there after reopening."""
    db = tmp_path / "o.db"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from probe.uplink.outbox import Depth, Outbox
        box = Outbox(Path({str(db)!r}))
        i = 0
        while True:
            box.put("result", b"x%d" % i)
            print(i, flush=True)  # only after put() returned
            i += 1
    """)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    committed = -1
    deadline = time.monotonic() + 20
    while committed < 200 and time.monotonic() < deadline:
        committed = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait(5)
    committed = max([committed, *(int(line) for line in child.stdout.read().split())])
    box = Outbox(db)
    payloads = [r.payload for r in box.take(100_000)]
    assert payloads[: committed + 1] == [b"x%d" % i for i in range(committed + 1)]


def test_bulk_rows_go_after_every_other_row_with_their_properties(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put("result", b"r0")
    box.put("recording", b"audio0", bulk=True, content_type="audio/flac",
            user_properties=(("result_id", "a"), ("duration_s", "1.000")))
    box.put("result", b"r1")  # newer than the recording, sent before it
    first, second = box.take(2)
    assert [first.payload, second.payload] == [b"r0", b"r1"]
    assert (first.bulk, first.content_type, first.user_properties) == (False, None, ())
    box.put("result", b"r2")  # arrives while the others are in flight: still before the bulk
    assert [r.payload for r in box.take(10)] == [b"r2", b"audio0"]
    box.release_all()
    recording = box.take(10)[-1]
    assert (recording.bulk, recording.content_type) == (True, "audio/flac")
    assert recording.user_properties == (("result_id", "a"), ("duration_s", "1.000"))


def test_when_full_bulk_rows_are_dropped_first_and_never_displace_a_result(
        tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, max_count=3)
    box.put("recording", b"old", bulk=True)
    box.put("result", b"r0")
    box.put("result", b"r1")
    box.put("result", b"r2")  # full: the recording goes, not r0
    assert [r.payload for r in box.take(10)] == [b"r0", b"r1", b"r2"]
    box.put("recording", b"new", bulk=True)  # no room without dropping a result: not kept
    assert box.depth() == Depth(count=3, bytes=6, dropped=0, bulk_dropped=2)
    box.close()
    assert Outbox(path, max_count=3).depth().bulk_dropped == 2  # persisted, like dropped


def test_byte_bound_drops_recordings_before_results(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=300)
    box.put("result", b"R" * 100)
    box.put("recording", b"A" * 150, bulk=True)
    box.put("recording", b"B" * 150, bulk=True)  # over: the older recording goes
    assert [r.payload[:1] for r in box.take(10)] == [b"R", b"B"]
    box.put("result", b"S" * 100)  # over again: the recording goes, both results stay
    assert box.depth() == Depth(count=2, bytes=200, dropped=0, bulk_dropped=2)


OLD_SCHEMA = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    leaf TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('dropped', 7);
"""


def test_an_outbox_from_before_recordings_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(path) as db:  # the schema as the previous release made it
        db.executescript(OLD_SCHEMA)
        db.executemany("INSERT INTO outbox (leaf, payload, created, attempts) VALUES (?,?,?,?)",
                       [("result", b"old0", 1.0, 2), ("result", b"old1", 2.0, 0)])
    db.close()
    box = Outbox(path)
    assert box.depth() == Depth(count=2, bytes=8, dropped=7, bulk_dropped=0)
    box.put("recording", b"audio", bulk=True, content_type="audio/flac")
    box.put("result", b"new")
    rows = box.take(10)
    assert [(r.id, r.payload, r.attempts, r.bulk) for r in rows] == [
        (1, b"old0", 3, False), (2, b"old1", 1, False), (4, b"new", 1, False),
        (3, b"audio", 1, True)]
    box.close()
    again = Outbox(path)  # opening a migrated file changes nothing
    assert again.depth() == Depth(count=4, bytes=16, dropped=7, bulk_dropped=0)
    again.close()
    Outbox(tmp_path / "fresh.db").close()
    with sqlite3.connect(tmp_path / "fresh.db") as db:
        fresh = [row[1:] for row in db.execute("PRAGMA table_info(outbox)")]
    db.close()
    with sqlite3.connect(path) as db:
        migrated = [row[1:] for row in db.execute("PRAGMA table_info(outbox)")]
    db.close()
    assert migrated == fresh  # name, type, not null, default: as a new file has them
    assert [c[0] for c in migrated] == ["id", "leaf", "payload", "created", "attempts", "bulk",
                                        "content_type", "user_properties"]


class _DeletesFail:
    """An outbox's SQLite connection whose DELETEs fail, as on a full disk, while ``failing``
    (whether a real full disk refuses one depends on the WAL's free frames at that instant)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.failing = True

    def __getattr__(self, name: str):
        return getattr(self.db, name)

    def _check(self, sql: str) -> None:
        if self.failing and sql.lstrip().upper().startswith("DELETE"):
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *params):
        self._check(sql)
        return self.db.execute(sql, *params)

    def executemany(self, sql: str, params):
        self._check(sql)
        return self.db.executemany(sql, params)


def test_a_delivered_row_whose_delete_fails_is_never_handed_out_again(tmp_path: Path) -> None:
    """The broker acknowledged it but the disk would not take the DELETE: it is delivered all
    the same (not waiting, not sent again, even after a reconnect) and deleted by the next
    delete that works."""
    box = Outbox(tmp_path / "o.db")
    ids = [box.put("result", f"r{i}".encode()) for i in range(3)]
    assert [r.payload for r in box.take(1)] == [b"r0"]
    db = _DeletesFail(box._db)
    box._db = db  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError):
        box.ack(ids[0])
    assert box.undeleted == 1 and box.in_flight == 0
    assert box.depth() == Depth(2, 4, 0)  # delivered: no longer waiting
    box.release_all()  # a reconnect: everything unacknowledged goes again, not r0
    assert [r.payload for r in box.take(10)] == [b"r1", b"r2"]
    with pytest.raises(sqlite3.OperationalError):
        box.delete_acked()
    assert box.undeleted == 1
    db.failing = False
    box.ack(ids[1])  # deletes r0 too
    assert box.undeleted == 0 and box.in_flight == 1 and box.depth() == Depth(1, 2, 0)
    box.close()
    assert [r.payload for r in Outbox(tmp_path / "o.db").take(10)] == [b"r2"]  # on disk too


class _Publisher:
    """Stands in for probe.uplink.mqtt.Publisher: connected, it records what it is handed."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[Row] = []

    def publish(self, leaf: str, payload: bytes, *, ref: Row, properties: object) -> None:
        self.sent.append(ref)


def test_a_delete_the_disk_refuses_after_a_puback_holds_back_no_result(tmp_path: Path) -> None:
    """The disk fills between a result's PUBACK and its DELETE: the next result still goes at
    once, the delivered one is not sent again, and it is deleted once the disk lets it.  (The
    forwarder used to release the row and pause every result for refused_backoff_s: the daemon
    on a full disk published nothing for 30 s, then that result a second time.)"""
    box = Outbox(tmp_path / "o.db")
    forwarder = Forwarder(box, rate_per_s=1000, refused_backoff_s=30)
    publisher = _Publisher()
    forwarder.start(publisher)  # type: ignore[arg-type]
    try:
        forwarder.submit("result", {"id": "r0"})
        wait_until(lambda: len(publisher.sent) == 1, 5, "r0 sent")
        db = _DeletesFail(box._db)
        box._db = db  # type: ignore[assignment]
        puback = Delivery("t", b"", 1, False, ref=publisher.sent[0])
        puback._settle(0, None)
        forwarder.delivered(puback)
        assert forwarder.acked == 1 and "full" in (forwarder.storage_error or "")
        forwarder.submit("result", {"id": "r1"})
        wait_until(lambda: len(publisher.sent) == 2, 3, "r1 sent while r0's delete waits")
        time.sleep(0.3)
        assert [json.loads(r.payload)["id"] for r in publisher.sent] == ["r0", "r1"]
        db.failing = False
        wait_until(lambda: box.undeleted == 0, 3 * RETRY_STORE_S,
                   "r0 deleted once the disk works")
        assert forwarder.storage_error is None and box.depth().count == 1  # r1, in flight
    finally:
        forwarder.stop()
        box.close()
