"""Faults while results flow: nothing lost, nothing twice.

Real mosquitto with persistence (sessions and queued QoS 1 messages survive its restart), real
PostgreSQL (a private cluster: these tests restart and kill it), and ``probe ops serve`` as a
real subprocess with a fixed MQTT client id, so that an instance started again resumes its
persistent session.  Each test publishes ``N`` results with distinct ids at QoS 1 and ends by
comparing the set of stored ids with the set published: 0 lost, 0 extra (the primary key makes
a duplicate row impossible, so the tests also check that ingest never died and that nothing
went to quarantine instead of the results table).

The broker runs with ``max_queued_messages 100000`` as deployed
(``deploy/mosquitto/hotline-probe.conf``); mosquitto's default (1000) would drop results queued
for an instance that is away — silently, for the publisher got its PUBACK.  The deployed
``autosave_on_changes`` is left out: it rewrites the whole persistence file on every message
(tens of messages per second with a queue), and a clean ``stop()`` saves it anyway.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from sqlalchemy import Engine, func, select

from probe.ops.db import (
    Incident,
    IncidentEvent,
    Notification,
    Quarantine,
    Result,
    make_engine,
    session_factory,
)
from probe.ops.service import OpsService
from probe.sim.broker import LocalBroker
from probe.sim.postgres import LocalPostgres
from tests.ops.conftest import fresh_database, make_config
from tests.ops.fleet import FleetPublisher, result_doc
from tests.ops.process import OpsProcess
from tests.ops.test_scenarios import SITES, publish_rounds
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

N = 2000
ROOT = Path(__file__).resolve().parents[2]
BROKER_CONFIG = "max_queued_messages 100000"
NO_MATCHING_SUBSCRIBERS = 0x10


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fault_pg() -> Iterator[LocalPostgres]:
    """A PostgreSQL cluster of this module's own: the tests restart and kill it."""
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture
def pg_url(fault_pg: LocalPostgres) -> str:
    return fresh_database(fault_pg)


@pytest.fixture
def pbroker() -> Iterator[LocalBroker]:
    """mosquitto with persistence: sessions and queued messages survive stop() / start()."""
    with LocalBroker(persistent=True, extra_config=BROKER_CONFIG) as broker:
        yield broker


@pytest.fixture
def fleet(pbroker: LocalBroker) -> Iterator[FleetPublisher]:
    publisher = FleetPublisher(pbroker.host, pbroker.port)
    try:
        yield publisher
    finally:
        publisher.close()


@pytest.fixture
def ops_procs(tmp_path: Path) -> Iterator[Callable[[str, LocalBroker, str], OpsProcess]]:
    """``ops_procs(name, broker, url)`` makes an :class:`OpsProcess`; all are stopped after."""
    made: list[OpsProcess] = []

    def make(name: str, broker: LocalBroker, url: str) -> OpsProcess:
        proc = OpsProcess(tmp_path, name, broker, url)
        made.append(proc)
        return proc

    try:
        yield make
    finally:
        for proc in made:
            proc.stop()


class Db:
    """What the tests read back: the stored ids, the quarantine."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url)
        self.sessions = session_factory(self.engine)

    def count(self) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(Result)) or 0

    def ids(self) -> set[str]:
        with self.sessions() as s:
            return set(s.scalars(select(Result.id)))

    def quarantined(self) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(Quarantine)) or 0

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def db(pg_url: str) -> Iterator[Db]:
    reader = Db(pg_url)
    try:
        yield reader
    finally:
        reader.close()


def make_docs(n: int) -> list[dict[str, Any]]:
    """``n`` answered calls (no incident to open) from 50 probes, started just now."""
    base = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3)
    return [result_doc("sip-answered" if i % 2 else "gsm-answered", probe_id=f"fault-{i % 50:02d}",
                       started_at=base + dt.timedelta(milliseconds=i),
                       operator="Orange") for i in range(n)]


def publish(fleet: FleetPublisher, docs: list[dict[str, Any]]) -> None:
    fleet.wait_all([fleet.result(d) for d in docs], timeout=60)


def settled(db: Db, quiet_s: float = 2.0, timeout: float = 60) -> int:
    """The stored count once it has not changed for ``quiet_s`` (nothing is left to come)."""
    last, since = db.count(), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = db.count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"the stored count kept changing for {timeout} s (at {last})")


def assert_exactly(db: Db, docs: list[dict[str, Any]]) -> None:
    wanted = {d["id"] for d in docs}
    assert len(wanted) == len(docs)
    wait_until(lambda: db.count() >= len(wanted), 90, f"{len(wanted)} results stored")
    stored = db.ids()
    assert len(wanted - stored) == 0, f"lost {len(wanted - stored)}"
    assert len(stored - wanted) == 0, f"unexpected {len(stored - wanted)}"
    assert db.quarantined() == 0


# --------------------------------------------------------------------------- instance killed


def test_kill9_mid_ingest_then_restart_delivers_every_result(
        pbroker: LocalBroker, db: Db, pg_url: str, fleet: FleetPublisher,
        ops_procs: Callable[[str, LocalBroker, str], OpsProcess]) -> None:
    """Killed between receive and commit, the instance had acknowledged nothing it had not
    stored: started again with the same client id it resumes its session and the broker
    delivers the rest (and, again, what it had stored but not yet acknowledged: stored once)."""
    ops = ops_procs("a", pbroker, pg_url).start()
    docs = make_docs(N)
    publish(fleet, docs)
    wait_until(lambda: db.count() >= N // 10, 60, "some results stored")
    ops.kill()
    at_kill = db.count()
    assert 0 < at_kill < N, f"{at_kill} stored when killed: not mid-ingest"
    ops.start()
    assert_exactly(db, docs)
    assert ops.alive
    ops.assert_ingest_never_died()
    assert any("session present: True" in r.get("msg", "") for r in ops.records())


def test_kill9_one_of_two_instances_holds_its_share_until_it_returns(
        pbroker: LocalBroker, db: Db, pg_url: str, fleet: FleetPublisher,
        ops_procs: Callable[[str, LocalBroker, str], OpsProcess]) -> None:
    """Two instances share the group; one is killed mid-ingest and not restarted.

    The survivor does **not** get the rest.  mosquitto (2.0) keeps the killed member's
    unacknowledged in-flight messages in that member's persistent session — they are not
    re-routed to another member of the share group — and goes on assigning new shared
    messages round-robin to the dead member's session as well (it does not look whether the
    member is connected).  They are delivered when that instance comes back with the same
    client id, or lost when its session expires (``mqtt.session_expiry_s``, default 24 h).
    So an instance that dies must be restarted (systemd ``Restart=always``), not just
    outnumbered; this test restarts it later and checks that then every result arrives."""
    a = ops_procs("a", pbroker, pg_url).start()
    b = ops_procs("b", pbroker, pg_url).start()
    before, after = make_docs(N // 2), make_docs(N // 2)
    publish(fleet, before)
    wait_until(lambda: db.count() >= N // 10, 60, "some results stored")
    b.kill()
    publish(fleet, after)  # the broker knows b is gone (its socket closed with it)
    survivor = settled(db)
    stored = db.ids()
    held_before = {d["id"] for d in before} - stored
    held_after = {d["id"] for d in after} - stored
    assert survivor < N and held_before, "the killed instance held nothing back"
    # Published after the kill, and still assigned to the dead member's session:
    assert 0 < len(held_after) <= len(after) // 2 + 1, len(held_after)
    assert a.alive
    b.start()
    assert_exactly(db, before + after)
    for proc in (a, b):
        assert proc.alive
        proc.assert_ingest_never_died()


# --------------------------------------------------------------------------- database away


@pytest.mark.parametrize("fault", ["restart", "kill"])
def test_postgresql_restart_while_results_flow(
        fault: str, pbroker: LocalBroker, fault_pg: LocalPostgres, db: Db, pg_url: str,
        fleet: FleetPublisher,
        ops_procs: Callable[[str, LocalBroker, str], OpsProcess]) -> None:
    """PostgreSQL restarted (fast shutdown) or killed (-9, recovery from the WAL) mid-ingest:
    ingest retries the same batch and acknowledges nothing meanwhile; what was published
    while the database was away waits on the broker.  All arrive, none is quarantined."""
    ops = ops_procs("a", pbroker, pg_url).start()
    docs = make_docs(N)
    publish(fleet, docs[: N // 2])
    wait_until(lambda: db.count() >= N // 10, 60, "some results stored")
    if fault == "restart":
        fault_pg.restart()
        publish(fleet, docs[N // 2:])
    else:
        fault_pg.kill()
        publish(fleet, docs[N // 2:])  # while the database is down
        fault_pg.start()
    db.engine.dispose()  # our own pooled connections died with the server
    assert_exactly(db, docs)
    assert ops.alive
    ops.assert_ingest_never_died()
    retries = [r for r in ops.records() if r.get("logger") == "probe.ops.ingest"
               and "database unavailable" in r.get("msg", "")]
    assert retries, "ingest logged no retry: the fault did not hit it"


# --------------------------------------------------------------------------- broker away


class Tracked:
    """Results whose publish completed — a PUBACK with a success reason code that is not 0x10
    "No matching subscribers" (the broker took the message and dropped it) — only those count
    as sent; :meth:`complete` republishes the others."""

    def __init__(self, fleet: FleetPublisher) -> None:
        self.fleet = fleet
        self.docs: dict[str, dict[str, Any]] = {}
        self.mids: dict[str, list[int]] = {}
        self.acked_mids: set[int] = set()
        self.dropped = 0  # PUBACKs 0x10: taken and dropped by the broker
        self.cond = threading.Condition()
        fleet.client.on_publish = self._on_publish

    def _on_publish(self, _client: paho.Client, _userdata: Any, mid: int, reason: Any,
                    _props: Any) -> None:
        with self.cond:
            if reason.value == NO_MATCHING_SUBSCRIBERS:
                self.dropped += 1
            elif reason.value < 0x80:
                self.acked_mids.add(mid)
            self.cond.notify_all()

    def publish(self, doc: dict[str, Any]) -> None:
        # Not under our lock: paho calls on_publish holding its own (a lock-order deadlock).
        mid = self.fleet.result(doc).mid
        with self.cond:
            self.docs[doc["id"]] = doc
            self.mids.setdefault(doc["id"], []).append(mid)

    def unacked(self) -> list[str]:
        with self.cond:
            return self._unacked_locked()

    def _unacked_locked(self) -> list[str]:
        return [i for i, mids in self.mids.items() if not any(m in self.acked_mids
                                                                for m in mids)]

    def complete(self, timeout: float = 60) -> None:
        """Republish, once connected, what has no PUBACK, until every result has one."""
        deadline = time.monotonic() + timeout
        while self.unacked():
            assert time.monotonic() < deadline, f"{len(self.unacked())} never acknowledged"
            wait_until(self.fleet.client.is_connected, 30, "publisher reconnected")
            with self.cond:  # paho resends what it had in flight: give it a moment
                self.cond.wait_for(lambda: not self._unacked_locked(), 3)
            for i in self.unacked():
                self.publish(self.docs[i])


def test_broker_restart_while_results_flow(
        pbroker: LocalBroker, db: Db, pg_url: str, fleet: FleetPublisher,
        ops_procs: Callable[[str, LocalBroker, str], OpsProcess]) -> None:
    """mosquitto stopped and started (persistence on) mid-ingest, publishing going on before,
    during and after: the ops session, with its queue and in-flight messages, survives; the
    instance reconnects and resumes it; the publisher republishes what it had no PUBACK for —
    and what was PUBACKed 0x10 "No matching subscribers": between the broker's start and the
    instance's re-subscription the shared subscription does not exist (see the next test),
    so those results were dropped by the broker."""
    ops = ops_procs("a", pbroker, pg_url).start()
    docs = make_docs(N)
    tracked = Tracked(fleet)
    third = N // 3
    for doc in docs[:third]:
        tracked.publish(doc)
    wait_until(lambda: db.count() >= N // 20, 60, "some results stored")
    pbroker.stop()
    for doc in docs[third: 2 * third]:  # the broker is away: paho keeps them
        tracked.publish(doc)
    pbroker.start()
    wait_until(fleet.client.is_connected, 30, "publisher reconnected")
    for doc in docs[2 * third:]:
        tracked.publish(doc)
    tracked.complete()
    assert len(tracked.docs) == N and not tracked.unacked()
    assert_exactly(db, docs)
    assert ops.alive
    ops.assert_ingest_never_died()
    assert any("session present: True" in r.get("msg", "") for r in ops.records())


def test_broker_restart_drops_shared_results_until_ops_resubscribes(
        pbroker: LocalBroker, pg_url: str, fleet: FleetPublisher,
        ops_procs: Callable[[str, LocalBroker, str], OpsProcess]) -> None:
    """A hazard of the deployed broker (mosquitto 2.0), pinned down: a persistent session's
    **shared** subscription is not restored from the persistence file.  After a broker
    restart, until each ops instance has reconnected (paho's backoff: 1 to 30 s) and
    subscribed again, a result finds no subscriber: the broker answers PUBACK 0x10 "No
    matching subscribers" and drops it.  A plain subscription of the same offline session
    would have queued it.  A publisher that takes 0x10 for delivered loses those results.
    (If this test fails, the broker restores shared subscriptions: delete it.)"""
    ops = ops_procs("a", pbroker, pg_url).start()
    ops.stop()  # an offline persistent session holding the shared subscription
    pbroker.stop()
    pbroker.start()
    tracked = Tracked(fleet)
    wait_until(fleet.client.is_connected, 30, "publisher reconnected")
    doc = make_docs(1)[0]
    tracked.publish(doc)
    with tracked.cond:
        assert tracked.cond.wait_for(lambda: tracked.dropped == 1, 10), "PUBACK not 0x10"


# --------------------------------------------------------------------------- three instances


class Webhook:
    """A real HTTP listener on loopback recording every POST body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with webhook.lock:
                    webhook.bodies.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_three_instances_open_one_incident_and_notify_once(
        backend: str, tmp_path: Path, broker: LocalBroker, fault_pg: LocalPostgres,
        webhook: Webhook, start_ops: Callable[..., OpsService]) -> None:
    """The hotline-down scenario (4 sites busy for 2 rounds) split across three instances
    that race to judge it: one incident, one "opened" event, one notification row per event
    and receiver, one POST to the webhook."""
    url = (fresh_database(fault_pg) if backend == "postgresql"
           else f"sqlite:///{tmp_path}/shared.sqlite3")
    receivers = [{"name": "hook", "kind": "webhook", "url": webhook.url}]
    services = [start_ops(make_config(tmp_path, broker, url, instance=f"ops-{i}",
                                      mqtt={"client_id": f"ops-race-{i}"},
                                      receivers=receivers))
                for i in range(3)]
    fleet = FleetPublisher(broker.host, broker.port)
    try:
        plan = [[(p, "sip-answered", None) for p in SITES]] + [
            [(p, "sip-busy", None) for p in SITES]] * 2
        docs = publish_rounds(fleet, plan)
    finally:
        fleet.close()
    first = services[0]

    def stored() -> int:
        with first.sessions() as s:
            return s.scalar(select(func.count()).select_from(Result)) or 0

    wait_until(lambda: stored() == len(docs), 30, f"{len(docs)} results stored")
    assert all(s.ingest.stats["results"] > 0 for s in services) or len(docs) < 3
    for service in services:
        wait_until(lambda svc=service: svc.dirty.idle,
                   what="evaluator idle")
        service.evaluate({"support"}, set())

    def notifications() -> list[Notification]:
        with first.sessions() as s:
            return list(s.scalars(select(Notification)))

    wait_until(lambda: (rows := notifications()) and all(r.state != "pending" for r in rows),
               30, "notifications sent")
    wait_until(lambda: webhook.received(), 10, "the webhook's POST")
    with first.sessions() as s:
        incidents = list(s.scalars(select(Incident)))
        events = list(s.scalars(select(IncidentEvent)))
        rows = list(s.scalars(select(Notification)))
    assert [(i.key, i.state) for i in incidents] == [("hotline:support", "open")]
    assert [e.kind for e in events].count("opened") == 1
    assert len({(r.event_id, r.receiver) for r in rows}) == len(rows)
    assert [(r.event, r.state) for r in rows] == [("open", "sent")]
    bodies = webhook.received()
    assert [(b["event"], b["incident"]["key"]) for b in bodies] == [("open", "hotline:support")]
    for service in services:
        assert service.ingest._worker.is_alive()
