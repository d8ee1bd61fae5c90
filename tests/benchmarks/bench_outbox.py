"""Store-and-forward figures: outbox inserts, publish throughput, backlog drain, idle daemon.

    .venv/bin/python -m tests.benchmarks.bench_outbox            # idle daemon watched 10 min
    .venv/bin/python -m tests.benchmarks.bench_outbox --idle-s 60

* insert — ``Outbox.put`` of a 1.9 kB result (a real one's size), each committed with
  ``synchronous=FULL`` (one fsync per result: what "survives a power cut" costs);
* publish — the same results through Forwarder → Publisher → a local mosquitto, unthrottled,
  until every PUBACK has deleted its row;
* drain — a 10 000-result backlog left by an outage, drained unthrottled, and what the
  configured ``drain_rate_per_s`` makes of it by design;
* idle — ``probe run`` with nothing due: CPU seconds and RSS over ``--idle-s`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from probe.sim.broker import LocalBroker
from probe.sim.hotline import HotlineBehaviour, SippHotline
from probe.sim.probe_config import broker_section, sip_target, write_config
from probe.uplink.forwarder import Forwarder
from probe.uplink.mqtt import Publisher
from probe.uplink.outbox import Outbox

RESULT = json.dumps({"id": "x" * 36, "padding": "r" * 1850}).encode()  # ~1.9 kB
CLK_TCK = os.sysconf("SC_CLK_TCK")


def bench_insert(directory: Path, n: int) -> float:
    box = Outbox(directory / "insert.db", max_count=n + 1)
    start = time.perf_counter()
    for _ in range(n):
        box.put("result", RESULT)
    elapsed = time.perf_counter() - start
    box.close()
    return n / elapsed


def drain(directory: Path, broker: LocalBroker, n: int, name: str) -> tuple[float, float]:
    """(seconds to drain n queued results unthrottled, results per second)."""
    box = Outbox(directory / f"{name}.db", max_count=n + 1)
    for _ in range(n):
        box.put("result", RESULT)
    forwarder = Forwarder(box, rate_per_s=1e9, window=100)
    publisher = Publisher(probe_id=f"bench-{name}", host=broker.host, port=broker.port,
                          on_delivery=forwarder.delivered)
    publisher.wait_connected(10)
    start = time.perf_counter()
    forwarder.start(publisher)
    while box.depth().count:
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    forwarder.stop()
    publisher.close()
    box.close()
    return elapsed, n / elapsed


def idle_daemon(directory: Path, broker: LocalBroker, seconds: float) -> dict[str, float]:
    with SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50)) as hotline:
        config = write_config(
            directory, name="idle.toml", probe_id="bench-idle", site="bench",
            probe={"max_jitter_s": 0}, mqtt=broker_section(broker),
            targets=[sip_target("support", hotline.uri, interval_s=86400, hold_s=0.5)])
        proc = subprocess.Popen([sys.executable, "-m", "probe", "run", "-c", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)  # start-up and the one call of the day are done
            cpu0, _ = _proc_stats(proc.pid)
            start = time.monotonic()
            peak = 0.0
            while time.monotonic() - start < seconds:
                time.sleep(1)
                peak = max(peak, _proc_stats(proc.pid)[1])
            cpu1, rss = _proc_stats(proc.pid)
            wall = time.monotonic() - start
        finally:
            proc.terminate()
            proc.wait(30)
    return {"seconds": wall, "cpu_s": cpu1 - cpu0, "cpu_pct": 100 * (cpu1 - cpu0) / wall,
            "rss_mib": rss, "peak_rss_mib": peak}


def _proc_stats(pid: int) -> tuple[float, float]:
    """(user+sys CPU seconds of the process and its threads, RSS in MiB)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss_pages = int(fields[21])
    return cpu, rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_outbox")
    p.add_argument("--inserts", type=int, default=2000)
    p.add_argument("--backlog", type=int, default=10_000)
    p.add_argument("--idle-s", type=float, default=600.0)
    p.add_argument("--drain-rate", type=float, default=20.0,
                   help="the configured drain_rate_per_s to project the backlog with")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp, LocalBroker() as broker:
        directory = Path(tmp)
        inserts = bench_insert(directory, args.inserts)
        print(f"outbox insert (synchronous=FULL, {len(RESULT)} B): {inserts:,.0f} results/s "
              f"({1000 / inserts:.2f} ms each)", flush=True)
        seconds, rate = drain(directory, broker, args.inserts, "publish")
        print(f"publish through forwarder + broker, unthrottled: {rate:,.0f} results/s "
              f"({args.inserts} in {seconds:.2f} s)", flush=True)
        seconds, rate = drain(directory, broker, args.backlog, "backlog")
        print(f"drain of a {args.backlog:,}-result backlog, unthrottled: {seconds:.1f} s "
              f"({rate:,.0f}/s); at drain_rate_per_s = {args.drain_rate:g} it takes "
              f"{args.backlog / args.drain_rate:.0f} s by design", flush=True)
        idle = idle_daemon(directory, broker, args.idle_s)
        print(f"idle daemon over {idle['seconds']:.0f} s: {idle['cpu_s']:.2f} CPU s "
              f"({idle['cpu_pct']:.2f} % of one core), RSS {idle['rss_mib']:.1f} MiB "
              f"(peak {idle['peak_rss_mib']:.1f} MiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
