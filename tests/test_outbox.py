"""The durable outbox: order, bounds, never silent drops, and survival of kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from probe.outbox import Depth, Outbox


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
        from probe.outbox import Depth, Outbox
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
