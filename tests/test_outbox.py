"""The durable outbox: order, bounds, never silent drops, and survival of kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from probe.outbox import Outbox


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
        from probe.outbox import Outbox
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
