"""Central ops ingest figures: a simulated fleet into a real mosquitto, consumed by 1, 2 and 3
``probe ops serve`` instances on PostgreSQL and by one on SQLite.  Figures, never asserted.

    .venv/bin/python -m tests.benchmarks.bench_ops             # 1,000 probes (~8 min, 2 cores)
    .venv/bin/python -m tests.benchmarks.bench_ops --quick     # 100 probes (~2 min)
    .venv/bin/python -m tests.benchmarks.bench_ops --profile   # + cProfile of one instance

The fleet: ``--probes`` probes x 3 targets x 2 channels (SIP, GSM) = 6 results per probe per
round, real result documents (``tests/ops/data``), each with a new id and ``started_at`` set
to the moment it is published (the schema forbids extra keys, so publish -> stored latency is
``received_at - started_at``; ``received_at`` is taken when ingest starts the batch's
transaction, so the commit itself is not in it).  Per configuration:

* burst — ``--rounds`` rounds published as fast as ``--publishers`` processes can (each with
  up to 1,000 messages in flight): the publish rate, then the drain rate of the instances
  (results / s from the first publish to the last ``received_at``), per instance and in all;
* paced — ``--paced`` results at ``--paced-rate`` / s (below capacity): p50 / p99 latency
  of results that do not queue;
* incident — a hotline-down (4 sites busy for 2 rounds) on a target of its own: from the
  publish of the deciding result to the incident's ``opened_at``;
* lost (published, PUBACKed, not stored) and extra (stored, never published) results; database
  bytes per million results (PostgreSQL ``pg_total_relation_size('results')``, SQLite the file
  and its WAL); CPU seconds and peak RSS of each instance (``/proc/<pid>/stat`` and ``status``).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import multiprocessing as mp
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, func, select

from probe.ops.db import Incident, Result, session_factory
from probe.sim.broker import LocalBroker
from probe.sim.postgres import LocalPostgres
from tests.ops.fleet import aligned, result_doc
from tests.ops.process import OpsProcess

from ._stats import percentile, table

TARGETS = ("support", "sales", "billing")
KINDS = (("sip-answered", None), ("gsm-answered", "Orange"))
ROUND_S = 300.0  # production's default round
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = Path(__file__).resolve().parents[2]
BROKER_CONFIG = "max_queued_messages 1000000"


# --------------------------------------------------------------------------- publishers


def _client(host: str, port: int, inflight: int) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}",
                         protocol=paho.MQTTv5)
    client.max_inflight_messages_set(inflight)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect(host, port)
    client.loop_start()
    if not connected.wait(10):
        raise TimeoutError("publisher could not connect")
    return client


def _publish_slice(host: str, port: int, probes: Sequence[int], rounds: int, start_at: float,
                   out: Any) -> None:
    """A publisher process: every result of ``probes`` for ``rounds``, as fast as it can."""
    client = _client(host, port, 1000)
    ids: list[str] = []
    infos = []
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    for _round in range(rounds):
        for p in probes:
            for target in TARGETS:
                for kind, operator in KINDS:
                    doc = result_doc(kind, probe_id=f"probe-{p:04d}", target=target,
                                     started_at=dt.datetime.now(dt.UTC), operator=operator,
                                     site=f"Office {p:04d}")
                    infos.append(client.publish(f"hotline-probe/v1/{doc['probe_id']}/result",
                                                json.dumps(doc), qos=1))
                    ids.append(doc["id"])
    for info in infos:
        info.wait_for_publish(120)
    elapsed = time.perf_counter() - t0
    acked = [i for i, info in zip(ids, infos, strict=True) if info.is_published()]
    client.disconnect()
    client.loop_stop()
    out.put((acked, elapsed))


def burst(broker: LocalBroker, probes: int, rounds: int, publishers: int) -> tuple[set[str],
                                                                                    float]:
    """Publish the burst from ``publishers`` processes: (acked ids, publish rate / s)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 1.5  # every process connected and ready
    slices = [range(i, probes, publishers) for i in range(publishers)]
    procs = [ctx.Process(target=_publish_slice, args=(broker.host, broker.port, list(s),
                                                       rounds, start_at, out))
             for s in slices]
    for proc in procs:
        proc.start()
    try:
        results = [out.get(timeout=600) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    ids = {i for acked, _ in results for i in acked}
    slowest = max(elapsed for _, elapsed in results)
    return ids, len(ids) / slowest


def paced(broker: LocalBroker, n: int, rate: float) -> set[str]:
    """``n`` results at ``rate`` per second from one client: the latency without a queue."""
    client = _client(broker.host, broker.port, 100)
    infos, ids = [], []
    t0 = time.perf_counter()
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing: the rate is the point
        p = i % 1000
        kind, operator = KINDS[i % 2]
        doc = result_doc(kind, probe_id=f"probe-{p:04d}", target=TARGETS[i % 3],
                         started_at=dt.datetime.now(dt.UTC), operator=operator)
        infos.append(client.publish(f"hotline-probe/v1/{doc['probe_id']}/result",
                                    json.dumps(doc), qos=1))
        ids.append(doc["id"])
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    return {i for i, info in zip(ids, infos, strict=True) if info.is_published()}


# --------------------------------------------------------------------------- instances


class Instance(OpsProcess):
    """``probe ops serve`` as a subprocess, with a fixed client id in a share group."""

    def __init__(self, work: Path, name: str, group: str, broker: LocalBroker,
                 url: str) -> None:
        super().__init__(work, name, broker, url, client_id=f"bench-{name}", round_s=ROUND_S,
                         share_group=group, session_expiry_s=60)

    def usage(self) -> tuple[float, float]:
        """(CPU seconds user+sys, peak RSS MiB) so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        hwm = 0.0
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
        return cpu, hwm

    def forget_session(self) -> None:
        """Remove the broker's session of this client id (else it queues every result)."""
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5)
        connected = threading.Event()
        client.on_connect = lambda *a: connected.set()
        client.connect(self.broker.host, self.broker.port, clean_start=True)
        client.loop_start()
        connected.wait(10)
        client.disconnect()
        client.loop_stop()


# --------------------------------------------------------------------------- one configuration


@dataclass
class Row:
    backend: str
    instances: int
    results: int = 0
    publish_rate: float = 0.0
    drain_s: float = 0.0
    lost: int = 0
    extra: int = 0
    burst_p50_s: float = 0.0
    burst_p99_s: float = 0.0
    paced_p50_ms: float = 0.0
    paced_p99_ms: float = 0.0
    incident_ms: float | None = None
    bytes_per_million: float = 0.0
    usage: list[tuple[float, float]] = field(default_factory=list)  # (cpu s, peak RSS MiB)
    acked_share: list[int] = field(default_factory=list)  # PUBACKs each instance sent

    @property
    def rate(self) -> float:
        return self.results / self.drain_s if self.drain_s else 0.0


def _count(sessions: Any) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Result)) or 0


def _wait_count(sessions: Any, n: int, stall_s: float = 60) -> int:
    last, since = -1, time.monotonic()
    while True:
        now = _count(sessions)
        if now >= n:
            return now
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stall_s:
            return now  # stuck: report what arrived
        time.sleep(0.2)


def _latencies(sessions: Any, ids: set[str]) -> list[float]:
    out = []
    with sessions() as s:
        rows = s.execute(select(Result.id, Result.started_at, Result.received_at)).all()
    for r in rows:
        if r.id in ids:
            out.append((r.received_at - r.started_at).total_seconds())
    return sorted(out)


def _incident_latency(broker: LocalBroker, sessions: Any) -> float | None:
    """Hotline down: round k-1 four sites busy, round k two; the second of round k decides."""
    client = _client(broker.host, broker.port, 100)
    target = "bench-incident"
    sites = [f"bench-site-{i}" for i in range(4)]
    previous = aligned(ROUND_S) - dt.timedelta(seconds=ROUND_S - 1)
    infos = [client.publish(f"hotline-probe/v1/{p}/result", json.dumps(result_doc(
        "sip-busy", probe_id=p, target=target, started_at=previous)), qos=1) for p in sites]
    for info in infos:
        info.wait_for_publish(30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sessions() as s:
            if (s.scalar(select(func.count()).select_from(Result).where(
                    Result.target == target)) or 0) >= 4:
                break
        time.sleep(0.05)
    decided_at = dt.datetime.now(dt.UTC)
    for p in sites[:2]:
        decided_at = dt.datetime.now(dt.UTC)
        client.publish(f"hotline-probe/v1/{p}/result", json.dumps(result_doc(
            "sip-busy", probe_id=p, target=target, started_at=decided_at)),
            qos=1).wait_for_publish(30)
    client.disconnect()
    client.loop_stop()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sessions() as s:
            opened = s.scalar(select(Incident.opened_at).where(
                Incident.key == f"hotline:{target}"))
        if opened is not None:
            return (opened - decided_at).total_seconds() * 1000
        time.sleep(0.02)
    return None


def run_config(work: Path, broker: LocalBroker, pg: LocalPostgres | None, k: int, *,
               probes: int, rounds: int, publishers: int, paced_n: int,
               paced_rate: float) -> Row:
    backend = "postgresql" if pg is not None else "sqlite"
    label = f"{backend}-{k}"
    cdir = work / label
    cdir.mkdir()
    if pg is not None:
        name = f"bench_{k}_{uuid.uuid4().hex[:6]}"
        pg.psql(f"CREATE DATABASE {name}")
        url = pg.url.rsplit("/", 1)[0] + f"/{name}"
    else:
        url = f"sqlite:///{cdir}/ops.sqlite3"
    row = Row(backend, k)
    group = f"bench{label.replace('-', '')}"
    instances = [Instance(cdir, f"{label}-{i}", group, broker, url) for i in range(k)]
    engine = None
    try:
        for inst in instances:
            inst.start()
        # A plain reader (no BEGIN IMMEDIATE on SQLite: a WAL reader never waits for writers).
        engine = create_engine(url, connect_args={"timeout": 60} if pg is None else {})
        sessions = session_factory(engine)
        ids, row.publish_rate = burst(broker, probes, rounds, publishers)
        stored = _wait_count(sessions, len(ids))
        with sessions() as s:
            first = s.scalar(select(func.min(Result.started_at)))
            last = s.scalar(select(func.max(Result.received_at)))
        row.results = stored
        row.drain_s = (last - first).total_seconds() if first and last else 0.0
        burst_lat = _latencies(sessions, ids)
        if burst_lat:
            row.burst_p50_s, row.burst_p99_s = (percentile(burst_lat, 50),
                                                percentile(burst_lat, 99))
        paced_ids = paced(broker, paced_n, paced_rate)
        _wait_count(sessions, len(ids) + len(paced_ids))
        lat = _latencies(sessions, paced_ids)
        if lat:
            row.paced_p50_ms, row.paced_p99_ms = (percentile(lat, 50) * 1000,
                                                  percentile(lat, 99) * 1000)
        row.incident_ms = _incident_latency(broker, sessions)
        with sessions() as s:
            all_ids = set(s.scalars(select(Result.id).where(Result.target != "bench-incident")))
            total = _count(sessions)
        wanted = ids | paced_ids
        row.lost, row.extra = len(wanted - all_ids), len(all_ids - wanted)
        if pg is not None:
            size = _pg_size(pg, name)
        else:
            db = cdir / "ops.sqlite3"
            size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
        row.bytes_per_million = size / max(total, 1) * 1e6
        row.usage = [inst.usage() for inst in instances]
        log = broker.log_text()
        row.acked_share = [log.count(f"Received PUBACK from {inst.client_id}")
                           for inst in instances]
    finally:
        if engine is not None:
            engine.dispose()
        for inst in instances:
            inst.stop()
        for inst in instances:
            inst.forget_session()
    return row


def _pg_size(pg: LocalPostgres, database: str) -> int:
    done = subprocess.run([*pg._runas, str(pg.bindir / "psql"), "-h", "127.0.0.1", "-p",
                           str(pg.port), "-U", pg.user, "-d", database, "-At", "-c",
                           "SELECT pg_total_relation_size('results')"],
                          capture_output=True, text=True, check=True, timeout=60)
    return int(done.stdout.strip())


# --------------------------------------------------------------------------- profile


def profile_one(work: Path, broker: LocalBroker, pg: LocalPostgres, n_probes: int) -> str:
    """One in-process OpsService on PostgreSQL, a round of the fleet; cProfile of its ingest
    worker and its evaluator (each profiled on its own thread)."""
    from probe.ops.config import parse_ops_config
    from probe.ops.ingest import Ingest
    from probe.ops.service import OpsService

    name = f"bench_prof_{uuid.uuid4().hex[:6]}"
    pg.psql(f"CREATE DATABASE {name}")
    url = pg.url.rsplit("/", 1)[0] + f"/{name}"
    config = parse_ops_config({
        "ops": {"instance": "prof", "state_dir": str(work / "prof")},
        "database": {"url": url},
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": "bench-prof",
                 "share_group": "benchprof", "session_expiry_s": 60},
        "correlation": {"round_s": ROUND_S}})
    ingest_prof, eval_prof = cProfile.Profile(), cProfile.Profile()
    spent = {"process": 0.0, "evaluate": 0.0}
    original_process, original_evaluate = Ingest._process, OpsService.evaluate

    def process(self: Ingest, batch: list[Any]) -> None:
        t = time.perf_counter()
        ingest_prof.enable()
        try:
            original_process(self, batch)
        finally:
            ingest_prof.disable()
            spent["process"] += time.perf_counter() - t

    def evaluate(self: OpsService, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        eval_prof.enable()
        try:
            return original_evaluate(self, *args, **kwargs)
        finally:
            eval_prof.disable()
            spent["evaluate"] += time.perf_counter() - t

    Ingest._process = process  # type: ignore[method-assign]
    OpsService.evaluate = evaluate  # type: ignore[method-assign]
    service = OpsService(config)
    try:
        service.start(http=False)
        deadline = time.monotonic() + 30
        while ("Sending SUBACK to bench-prof" not in broker.log_text()
               and time.monotonic() < deadline):
            time.sleep(0.05)
        t0 = time.perf_counter()
        ids, _ = burst(broker, n_probes, 1, 2)
        _wait_count(service.sessions, len(ids))
        wall = time.perf_counter() - t0
    finally:
        service.stop()
        Ingest._process = original_process  # type: ignore[method-assign]
        OpsService.evaluate = original_evaluate  # type: ignore[method-assign]
    out = io.StringIO()
    out.write(f"Profile: {len(ids)} results into one in-process instance in {wall:.1f} s "
              f"({len(ids) / wall:.0f}/s); ingest worker busy {spent['process']:.1f} s, "
              f"evaluator busy {spent['evaluate']:.1f} s (one GIL)\n")
    for title, prof in (("ingest worker", ingest_prof), ("evaluator", eval_prof)):
        out.write(f"\n-- {title}: top by cumulative time\n")
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(18)
    return out.getvalue()


# --------------------------------------------------------------------------- report


def report(rows: list[Row], probes: int, rounds: int, paced_rate: float) -> str:
    base = next((r.rate for r in rows if r.backend == "postgresql" and r.instances == 1), 0)
    out = [f"Ops ingest: {probes} probes x {len(TARGETS)} targets x {len(KINDS)} channels = "
           f"{probes * 6} results per round, {rounds} round(s) per burst; paced at "
           f"{paced_rate:.0f}/s", ""]
    body = []
    for r in rows:
        cpu = " / ".join(f"{c:.0f}" for c, _ in r.usage)
        rss = " / ".join(f"{m:.0f}" for _, m in r.usage)
        share = " / ".join(str(a) for a in r.acked_share)
        speedup = (f"x{r.rate / base:.2f}" if r.backend == "postgresql" and base else "")
        body.append([
            r.backend, str(r.instances), str(r.results), f"{r.publish_rate:.0f}",
            f"{r.rate:.0f}", f"{r.rate / r.instances:.0f}", speedup,
            f"{r.burst_p50_s:.1f} / {r.burst_p99_s:.1f}",
            f"{r.paced_p50_ms:.0f} / {r.paced_p99_ms:.0f}",
            "n/a" if r.incident_ms is None else f"{r.incident_ms:.0f}",
            f"{r.lost} / {r.extra}", f"{r.bytes_per_million / 1e9:.2f}", cpu, rss, share])
    out.append(table(["database", "inst", "stored", "publish/s", "ingest/s", "per inst",
                      "speed-up", "burst p50/p99 s", "paced p50/p99 ms", "incident ms",
                      "lost/extra", "GB per 1M", "CPU s each", "peak RSS MiB each",
                      "PUBACKs each"], body, left=1))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_ops",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100 probes, a smaller paced phase")
    p.add_argument("--probes", type=int, default=None, help="default 1000 (--quick: 100)")
    p.add_argument("--rounds", type=int, default=2, help="rounds per burst (default 2)")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes (default 2)")
    p.add_argument("--paced", type=int, default=None, help="paced results (default 1500; "
                   "--quick: 300)")
    p.add_argument("--paced-rate", type=float, default=150.0, help="paced results per second")
    p.add_argument("--profile", action="store_true", help="also cProfile one instance")
    p.add_argument("--configs", default="pg1,pg2,pg3,sqlite1",
                   help="comma-separated: pg1, pg2, pg3, sqlite1")
    args = p.parse_args(argv)
    probes = args.probes or (100 if args.quick else 1000)
    rounds = 1 if args.quick and args.rounds == 2 else args.rounds
    paced_n = args.paced or (300 if args.quick else 1500)
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-ops-") as tmp, LocalPostgres() as pg, \
            LocalBroker(persistent=True, extra_config=BROKER_CONFIG) as broker:
        work = Path(tmp)
        for cfg in args.configs.split(","):
            backend, k = ("sqlite", int(cfg[6:])) if cfg.startswith("sqlite") else (
                "postgresql", int(cfg[2:]))
            row = run_config(work, broker, pg if backend == "postgresql" else None, k,
                             probes=probes, rounds=rounds, publishers=args.publishers,
                             paced_n=paced_n, paced_rate=args.paced_rate)
            rows.append(row)
            print(f"  {cfg}: {row.results} results, {row.rate:.0f}/s "
                  f"({time.monotonic() - started:.0f} s so far)", flush=True)
        print(report(rows, probes, rounds, args.paced_rate), flush=True)
        if args.profile:
            print("\n" + profile_one(work, broker, pg, probes), flush=True)
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
