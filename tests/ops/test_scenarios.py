"""The fleet's questions, answered by the ops service end to end: real mosquitto, real
PostgreSQL and SQLite, several probe identities publishing results the probe really makes.

Each scenario publishes rounds of results (call start times placed in consecutive rounds of
``round_s`` = 10 s), lets the running service ingest and correlate them, and checks the
incidents it opened — and that it opened no others.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select

from probe.ops.db import Incident, IncidentEvent, Maintenance, Probe, Quarantine, Result
from probe.ops.service import OpsService
from probe.sim.broker import LocalBroker
from tests.ops.conftest import make_config
from tests.ops.fleet import FleetPublisher, aligned, result_doc
from tests.waiting import wait_until

ROUND = 10.0
Plan = Sequence[Sequence[tuple[str, str, str | None]]]  # rounds of (probe, kind, operator)


def publish_rounds(fleet: FleetPublisher, plan: Plan, *, target: str = "support",
                   base: dt.datetime | None = None) -> list[dict]:
    """Round i of ``plan`` (oldest first) ends in the current round."""
    base = base or aligned(ROUND)
    docs = []
    for i, round_ in enumerate(plan):
        started = base - dt.timedelta(seconds=ROUND * (len(plan) - 1 - i)) + dt.timedelta(
            seconds=1)
        for probe, kind, operator in round_:
            docs.append(result_doc(kind, probe_id=probe, target=target, started_at=started,
                                   operator=operator))
    fleet.wait_all([fleet.result(d) for d in docs])
    return docs


def settle(service: OpsService, count: int) -> None:
    """Wait until ``count`` results are stored and the evaluator has looked at them."""
    wait_until(lambda: _results(service) >= count, what=f"{count} results stored")
    wait_until(lambda: service.dirty.idle,
               what="evaluator idle")
    service.evaluate({"support"}, set())  # once more: nothing may change any further


def _results(service: OpsService) -> int:
    with service.sessions() as s:
        return s.scalar(select(func.count()).select_from(Result)) or 0


def open_incidents(service: OpsService) -> dict[str, Incident]:
    with service.sessions() as s:
        return {i.key: i for i in s.scalars(select(Incident).where(
            Incident.resolved_at.is_(None)))}


@pytest.fixture
def ops(tmp_path: Path, broker: LocalBroker, database_url: str,
        start_ops: Callable[..., OpsService]) -> OpsService:
    return start_ops(make_config(tmp_path, broker, database_url))


@pytest.fixture
def fleet(broker: LocalBroker) -> FleetPublisher:
    publisher = FleetPublisher(broker.host, broker.port)
    yield publisher  # type: ignore[misc]
    publisher.close()


SITES = ("branch-1", "branch-2", "branch-3", "branch-4")


def test_hotline_down_everywhere_is_one_hotline_incident(ops: OpsService,
                                                         fleet: FleetPublisher) -> None:
    plan = [[(p, "sip-answered", None) for p in SITES]] + [
        [(p, "sip-busy", None) for p in SITES]] * 2
    docs = publish_rounds(fleet, plan)
    settle(ops, len(docs))
    incidents = open_incidents(ops)
    assert list(incidents) == ["hotline:support"]
    hotline = incidents["hotline:support"]
    assert hotline.cause == "hotline.busy"
    assert hotline.sites == list(SITES)
    assert hotline.detail["failing_sites"] == 4 and hotline.detail["reporting_sites"] == 4
    busy_ids = {d["id"] for d in docs if d["outcome"] == "busy"}
    assert set(hotline.evidence) == busy_ids  # exactly the failing results, both rounds


def test_one_site_failing_while_others_answer_is_that_site(ops: OpsService,
                                                           fleet: FleetPublisher) -> None:
    rounds = [[("branch-1", "sip-no-answer", None)] + [(p, "sip-answered", None)
                                                        for p in SITES[1:]]] * 2
    docs = publish_rounds(fleet, rounds)
    settle(ops, len(docs))
    incidents = open_incidents(ops)
    assert list(incidents) == ["site:support:branch-1"]
    site = incidents["site:support:branch-1"]
    assert (site.cause, site.severity, site.scope) == ("site.local_failure", "down", "site")
    assert site.detail["seen_cause"] == "hotline.no_answer"
    assert site.detail["others_ok"] == 3


def test_probe_with_its_own_fault_is_kept_out_of_the_vote(ops: OpsService,
                                                          fleet: FleetPublisher) -> None:
    """branch-1's modem lost the network (a local fault: no hotline verdict) while branch-2 and
    branch-3 are busy: two failing voters of three known is the hotline, and branch-1 gets
    its own incident instead of a vote."""
    plan = [[("branch-1", "gsm-not-registered", None), ("branch-2", "sip-busy", None),
             ("branch-3", "sip-busy", None)]] * 2
    docs = publish_rounds(fleet, plan)
    settle(ops, len(docs))
    ops.evaluate(set(), {"branch-1"})
    incidents = open_incidents(ops)
    assert set(incidents) == {"hotline:support", "probe:branch-1:gsm"}
    assert incidents["hotline:support"].sites == ["branch-2", "branch-3"]
    assert incidents["probe:branch-1:gsm"].cause == "modem.not_registered"


def test_one_gsm_operator_down_is_that_carrier(ops: OpsService, fleet: FleetPublisher) -> None:
    """Orange fails at the two sites that use it; Beeline and SIP get through."""
    one = [("branch-1", "gsm-busy", "Orange"), ("branch-2", "gsm-busy", "Orange"),
           ("branch-3", "gsm-answered", "Beeline"), ("branch-4", "gsm-answered", "Beeline")]
    sip = [(p, "sip-answered", None) for p in SITES]
    docs = publish_rounds(fleet, [one + sip] * 2)
    settle(ops, len(docs))
    incidents = open_incidents(ops)
    assert list(incidents) == ["path:support:gsm:Orange"]
    path = incidents["path:support:gsm:Orange"]
    assert path.cause == "carrier.path_failure"
    assert path.sites == ["branch-1", "branch-2"]
    assert path.detail["channel"] == "Orange"


def test_sip_trunk_down_while_pstn_works(ops: OpsService, fleet: FleetPublisher) -> None:
    round_ = [(p, "sip-503", None) for p in SITES] + [(p, "gsm-answered", "Orange")
                                                      for p in SITES]
    docs = publish_rounds(fleet, [round_] * 2)
    settle(ops, len(docs))
    incidents = open_incidents(ops)
    assert list(incidents) == ["path:support:sip"]
    trunk = incidents["path:support:sip"]
    assert trunk.cause == "carrier.sip_trunk"
    assert trunk.detail["code"].startswith("503")


def test_recovery_resolves_after_good_rounds(ops: OpsService, fleet: FleetPublisher) -> None:
    base = aligned(ROUND) - dt.timedelta(seconds=3 * ROUND)
    down = [[(p, "sip-busy", None) for p in SITES]] * 2
    docs = publish_rounds(fleet, down, base=base)
    settle(ops, len(docs))
    assert "hotline:support" in open_incidents(ops)
    one_good = [[(p, "sip-answered", None) for p in SITES]]
    docs += publish_rounds(fleet, one_good, base=base + dt.timedelta(seconds=ROUND))
    settle(ops, len(docs))
    assert "hotline:support" in open_incidents(ops), "one good round is not recovery"
    docs += publish_rounds(fleet, one_good, base=base + dt.timedelta(seconds=2 * ROUND))
    settle(ops, len(docs))
    assert open_incidents(ops) == {}
    with ops.sessions() as s:
        incident = s.scalars(select(Incident)).one()
        kinds = [e.kind for e in s.scalars(select(IncidentEvent).where(
            IncidentEvent.incident_id == incident.id).order_by(IncidentEvent.id))]
    assert incident.state == "resolved" and incident.resolved_by == "auto"
    assert kinds[0] == "opened" and kinds[-1] == "resolved"


def test_offline_probe_gets_its_own_incident_not_a_hotline_one(
        tmp_path: Path, broker: LocalBroker, database_url: str,
        start_ops: Callable[..., OpsService], fleet: FleetPublisher) -> None:
    # silent only after 5 rounds: this test moves the clock one round on, and must see
    # "offline", not "silent", for the probe that went away
    ops = start_ops(make_config(tmp_path, broker, database_url,
                                presence={"silent_factor": 5}))
    docs = publish_rounds(fleet, [[(p, "sip-answered", None) for p in SITES]])
    settle(ops, len(docs))
    fleet.wait_all([fleet.status("branch-3", "offline", reason="connection lost")])
    wait_until(lambda: _probe(ops, "branch-3").state == "offline", what="offline seen")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ROUND + 1)
    ops.sweep(now=later)
    incidents = open_incidents(ops)
    assert list(incidents) == ["probe:branch-3:presence"]
    assert incidents["probe:branch-3:presence"].cause == "probe.offline"
    assert incidents["probe:branch-3:presence"].detail["reason"] == "connection lost"
    fleet.wait_all([fleet.status("branch-3", "online", boot=2)])
    wait_until(lambda: _probe(ops, "branch-3").state == "online", what="back online")
    ops.sweep(now=later)
    assert open_incidents(ops) == {}


def _probe(ops: OpsService, probe_id: str) -> Probe:
    with ops.sessions() as s:
        probe = s.get(Probe, probe_id)
        assert probe is not None
        return probe


def test_maintenance_window_marks_and_suppresses(ops: OpsService,
                                                 fleet: FleetPublisher) -> None:
    now = dt.datetime.now(dt.UTC)
    with ops.sessions.begin() as s:
        s.add(Maintenance(target="support", starts_at=now - dt.timedelta(hours=1),
                          ends_at=now + dt.timedelta(hours=1), reason="IVR upgrade"))
    docs = publish_rounds(fleet, [[(p, "sip-busy", None) for p in SITES]] * 2)
    settle(ops, len(docs))
    hotline = open_incidents(ops)["hotline:support"]
    assert hotline.suppressed == "maintenance"


def test_flapping_incident_is_marked(tmp_path: Path, broker: LocalBroker, database_url: str,
                                     start_ops: Callable[..., OpsService],
                                     fleet: FleetPublisher) -> None:
    """Down, up, down, up...: with rounds_required 1 and recover_rounds 1 every change opens or
    resolves; the third opening within the flap window is flagged."""
    config = make_config(tmp_path, broker, database_url, correlation={
        "rounds_required": 1, "rounds_window": 1, "recover_rounds": 1, "flap_changes": 4})
    ops = start_ops(config)
    base = aligned(ROUND) - dt.timedelta(seconds=6 * ROUND)
    docs: list[dict] = []
    for i in range(6):
        kind = "sip-busy" if i % 2 == 0 else "sip-answered"
        docs += publish_rounds(fleet, [[(p, kind, None) for p in SITES[:2]]],
                               base=base + dt.timedelta(seconds=i * ROUND))
        settle(ops, len(docs))
    with ops.sessions() as s:
        flags = [i.flapping for i in s.scalars(select(Incident).order_by(Incident.id))]
    assert flags == [False, False, True]


def test_duplicates_stored_once_and_bad_messages_quarantined(ops: OpsService,
                                                             fleet: FleetPublisher) -> None:
    doc = result_doc("sip-answered", probe_id="branch-1", started_at=aligned(ROUND))
    spoofed = result_doc("sip-answered", probe_id="branch-2", started_at=aligned(ROUND))
    invalid = result_doc("sip-answered", probe_id="branch-1", started_at=aligned(ROUND))
    invalid["outcome"] = "exploded"
    topic = "hotline-probe/v1/branch-1/result"
    import json

    infos = [fleet.result(doc), fleet.result(doc),
             fleet.publish(topic, json.dumps(spoofed)),
             fleet.publish(topic, json.dumps(invalid)),
             fleet.publish(topic, b"\xff\xfe not json"),
             fleet.publish(topic, "[" * 100_000 + "]" * 100_000),
             fleet.publish(topic, b"{" + b" " * 1_100_000 + b"}"),
             fleet.result(result_doc("sip-answered", probe_id="branch-3",
                                     started_at=aligned(ROUND)))]
    fleet.wait_all(infos)
    wait_until(lambda: _results(ops) == 2 and ops.ingest.stats["quarantined"] == 5,
               what="2 stored, 5 quarantined")
    with ops.sessions() as s:
        reasons = sorted(q.reason.split(":")[0] for q in s.scalars(select(Quarantine)))
    assert reasons == ["hostile", "not UTF-8", "oversized", "schema", "spoofed"]
    assert ops.ingest.stats["duplicates"] == 1


def test_ingested_counter_counts_new_results_not_duplicates(ops: OpsService,
                                                            fleet: FleetPublisher) -> None:
    from probe.ops.db import counters

    docs = publish_rounds(fleet, [[(p, "sip-answered", None) for p in SITES]])
    fleet.wait_all([fleet.result(docs[0])])  # delivered again
    wait_until(lambda: ops.ingest.stats["duplicates"] == 1, what="duplicate seen")
    with ops.sessions() as s:
        assert counters(s)["ingested:support:sip"] == len(SITES)
