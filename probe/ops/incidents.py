"""Judgements into incidents: open, update, escalate, resolve — with the whole history kept.

Every function here runs inside one database transaction and first takes the lock of what it
decides about (:func:`probe.ops.db.lock_key`: an advisory lock on PostgreSQL), then reads the
rows it needs, decides with the pure :mod:`probe.ops.correlate`, and writes.  Nothing is kept in
process memory, so any instance may evaluate any target at any time and the incidents come out
the same; the partial unique index on an incident's key (one unresolved incident per key) is the
last guard against two instances opening the same one.

Lifecycle: ``open`` -> ``acknowledged`` (a person saw it; checks go on) -> ``resolved`` (by
recovery: ``recover_rounds`` good rounds in a row, or by hand).  An incident is ``suppressed``
while a maintenance window covers it or while the probe it is about is offline (its own incident
says so), and ``flapping`` when its key opened and resolved ``flap_changes`` times within
``flap_window_rounds``; suppressed and flapping incidents are recorded but not notified.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from probe.ops.config import Correlation, OpsConfig
from probe.ops.correlate import Judgement, LocalJudgement, Vote, judge, judge_local
from probe.ops.db import Incident, IncidentEvent, Maintenance, Probe, Result, lock_key
from probe.ops.maintenance import in_maintenance

log = logging.getLogger("probe.ops.incidents")
SEVERITY_RANK = {"degraded": 1, "down": 2}
HORIZON_ROUNDS = 10


@dataclass(frozen=True)
class Change:
    """One thing an evaluation did, for logs, metrics and the latency benchmark."""

    incident_id: int
    key: str
    kind: str  # opened / escalated / updated / resolved / suppressed / unsuppressed


# --------------------------------------------------------------------------- per target


def evaluate_target(session: Session, config: OpsConfig, target: str,
                    now: dt.datetime) -> list[Change]:
    """Bring ``target``'s hotline, path and site incidents up to date with its results."""
    lock_key(session, f"target:{target}")
    c = config.correlation_for(target)
    lookback = max(c.rounds_window, c.recover_rounds)
    # Rounds are counted among those that have results; this far back we look for them (a
    # probe's outbox drained hours later still lands in its round, but no longer decides).
    horizon = now - dt.timedelta(seconds=max(3 * lookback, HORIZON_ROUNDS) * c.round_s)
    rows = session.execute(
        select(Result.id, Result.probe_id, Result.site, Result.channel, Result.path,
               Result.vote, Result.cause, Result.started_at, Result.final, Result.cause_detail)
        .where(Result.target == target, Result.started_at >= horizon)).all()
    votes = [Vote(r.id, r.probe_id, r.site, r.channel, r.path, r.vote, r.cause,
                  r.started_at.timestamp(), r.final, r.cause_detail) for r in rows]
    # A probe that went offline keeps its votes for the rounds it called in (its results are
    # still what callers lived); a silent one has none to give.  Offline or silent, its own
    # site incidents are suppressed: its own presence incident says why.
    away = _away_probes(session)
    open_incidents = {i.key: i for i in session.scalars(
        select(Incident).where(Incident.target == target, Incident.resolved_at.is_(None))
        .with_for_update())}
    judgements = judge(target, votes, c, open_keys=open_incidents)
    windows = _windows(session, now)
    changes: list[Change] = []
    for j in judgements:
        incident = open_incidents.get(j.key)
        suppressed = _suppression(j.target, j.scope, j.subject, away, windows, now)
        if incident is None:
            if j.should_open:
                changes += _open(session, config, c, j.key, j.target, j.scope, j.subject,
                                 j.cause, j.severity, list(j.sites), list(j.evidence),
                                 dict(j.detail), j.latest_round, suppressed, now)
        elif j.should_open or not j.may_resolve:
            changes += _keep(session, config, incident, j, suppressed, now)
        else:
            changes += _resolve(session, config, incident, now, "recovered",
                                {"good_rounds": j.good_rounds})
    return changes


def _away_probes(session: Session) -> set[str]:
    """Probes that are not watching now: offline or silent."""
    return set(session.scalars(select(Probe.id).where(
        (Probe.state == "offline") | Probe.silent.is_(True))))


def _windows(session: Session, now: dt.datetime) -> list[Maintenance]:
    return list(session.scalars(select(Maintenance).where(Maintenance.starts_at <= now)))


def _suppression(target: str | None, scope: str, subject: str, away: set[str],
                 windows: Sequence[Maintenance], now: dt.datetime) -> str | None:
    probe = subject if scope in ("site", "probe") else None
    if in_maintenance(windows, target, probe, now):
        return "maintenance"
    if scope == "site" and subject in away:
        return "probe_offline"
    return None


# --------------------------------------------------------------------------- probe-local


def evaluate_probe(session: Session, config: OpsConfig, probe_id: str,
                   now: dt.datetime) -> list[Change]:
    """The probe's own incidents: a channel its own faults stop (cut line, no SIM, modem), and
    its presence (offline for a round, or silent)."""
    lock_key(session, f"probe:{probe_id}")
    probe = session.get(Probe, probe_id)
    if probe is None:
        return []
    c = config.correlation
    open_incidents = {i.key: i for i in session.scalars(
        select(Incident).where(Incident.scope == "probe", Incident.subject == probe_id,
                               Incident.resolved_at.is_(None)).with_for_update())}
    changes: list[Change] = []
    depth = max(c.rounds_required, c.recover_rounds)
    channels = session.scalars(select(Result.channel).where(Result.probe_id == probe_id)
                               .distinct()).all()
    windows = _windows(session, now)
    maintenance = "maintenance" if in_maintenance(windows, None, probe_id, now) else None
    for channel in sorted(channels):
        rows = session.execute(
            select(Result.id, Result.vote, Result.cause, Result.started_at, Result.target,
                   Result.path).where(Result.probe_id == probe_id, Result.channel == channel)
            .order_by(Result.started_at.desc()).limit(depth)).all()
        newest = [Vote(r.id, probe_id, probe.site, channel, r.path, r.vote, r.cause,
                       r.started_at.timestamp()) for r in rows]
        changes += _apply_local(session, config, c, judge_local(probe_id, channel, newest, c),
                                open_incidents, probe, maintenance, now)
    changes += _presence(session, config, probe, open_incidents, maintenance, now)
    return changes


def _apply_local(session: Session, config: OpsConfig, c: Correlation, j: LocalJudgement,
                 open_incidents: dict[str, Incident], probe: Probe, maintenance: str | None,
                 now: dt.datetime) -> list[Change]:
    incident = open_incidents.get(j.key)
    detail = {"site": probe.site or probe.id, "probe": probe.id, "channel": j.channel}
    if incident is None and j.should_open:
        return _open(session, config, c, j.key, None, "probe", probe.id, j.cause, "down",
                     [probe.id], list(j.evidence), detail, 0, maintenance, now)
    if incident is not None and j.may_resolve:
        return _resolve(session, config, incident, now, "recovered", {})
    return []


def _presence(session: Session, config: OpsConfig, probe: Probe,
              open_incidents: dict[str, Incident], maintenance: str | None,
              now: dt.datetime) -> list[Change]:
    key = f"probe:{probe.id}:presence"
    incident = open_incidents.get(key)
    cause, detail = presence_fault(probe, config, now)
    if cause is not None and incident is None:
        return _open(session, config, config.correlation, key, None, "probe", probe.id, cause,
                     "down", [probe.id], [], detail, 0, maintenance, now)
    if cause is None and incident is not None:
        return _resolve(session, config, incident, now, "back online", {})
    return []


def presence_fault(probe: Probe, config: OpsConfig,
                   now: dt.datetime) -> tuple[str | None, dict[str, Any]]:
    """``probe.offline`` once a probe has been offline for a whole round (a planned restart
    does not page), ``probe.silent`` when it is online but sent no result for
    ``silent_factor`` x the longest round (ThousandEyes' agent-offline rule)."""
    longest = config.longest_round_s
    site = probe.site or probe.id
    if probe.state == "offline" and probe.status_at is not None and (
            now - probe.status_at).total_seconds() >= longest:
        return "probe.offline", {"site": site, "reason": probe.status_reason or "offline"}
    if probe.silent:
        since = probe.last_result_at or probe.first_seen
        minutes = round((now - since).total_seconds() / 60)
        return "probe.silent", {"site": site, "silent_min": minutes}
    return None, {}


def mark_silent(session: Session, config: OpsConfig, now: dt.datetime) -> list[str]:
    """Set ``Probe.silent`` from the clock; the probes whose flag changed."""
    limit = dt.timedelta(seconds=config.presence.silent_factor * config.longest_round_s)
    changed = []
    for probe in session.scalars(select(Probe).with_for_update()):
        since = probe.last_result_at or probe.first_seen
        silent = probe.state != "offline" and now - since > limit
        if silent != probe.silent:
            probe.silent = silent
            changed.append(probe.id)
    return changed


# --------------------------------------------------------------------------- lifecycle


def _event(session: Session, incident: Incident, kind: str, now: dt.datetime,
           detail: dict[str, Any] | None = None, actor: str | None = None) -> IncidentEvent:
    event = IncidentEvent(incident_id=incident.id, at=now, kind=kind, actor=actor,
                          detail=detail or {})
    session.add(event)
    session.flush()
    return event


def _notify(session: Session, config: OpsConfig, incident: Incident, event: IncidentEvent,
            kind: str, now: dt.datetime) -> None:
    from probe.ops.notify import enqueue

    enqueue(session, incident, event, kind, config.receivers, now)


def _open(session: Session, config: OpsConfig, c: Correlation, key: str, target: str | None,
          scope: str, subject: str, cause: str, severity: str, sites: list[str],
          evidence: list[str], detail: dict[str, Any], latest_round: int,
          suppressed: str | None, now: dt.datetime) -> list[Change]:
    since = now - dt.timedelta(seconds=c.flap_window_rounds * c.round_s)
    recent = session.scalar(select(func.count()).select_from(Incident).where(
        Incident.key == key, Incident.opened_at >= since)) or 0
    flapping = 2 * recent + 1 >= c.flap_changes  # each earlier one opened and resolved
    incident = Incident(key=key, target=target, scope=scope, subject=subject, state="open",
                        cause=cause, severity=severity, opened_at=now, updated_at=now,
                        sites=sites, evidence=evidence, detail=detail, last_round=latest_round,
                        good_rounds=0, flapping=flapping, suppressed=suppressed)
    session.add(incident)
    session.flush()
    event = _event(session, incident, "opened", now, {"cause": cause, "severity": severity,
                                                      "sites": sites,
                                                      "suppressed": suppressed,
                                                      "flapping": flapping})
    log.warning("incident %d opened: %s %s (%s)%s", incident.id, key, cause, severity,
                f" [{suppressed}]" if suppressed else "")
    _notify(session, config, incident, event, "open", now)
    return [Change(incident.id, key, "opened")]


def _keep(session: Session, config: OpsConfig, incident: Incident, j: Judgement,
          suppressed: str | None, now: dt.datetime) -> list[Change]:
    changes: list[Change] = []
    incident.good_rounds = j.good_rounds
    incident.last_round = j.latest_round
    if not j.holds_now:
        return changes
    if suppressed != incident.suppressed:
        kind = "suppressed" if suppressed else "unsuppressed"
        incident.suppressed = suppressed
        event = _event(session, incident, kind, now, {"reason": suppressed})
        changes.append(Change(incident.id, incident.key, kind))
        if kind == "unsuppressed":  # still failing after the window: now it is news
            _notify(session, config, incident, event, "open", now)
    if SEVERITY_RANK.get(j.severity, 0) > SEVERITY_RANK.get(incident.severity, 0):
        event = _event(session, incident, "escalated", now,
                       {"from": incident.severity, "to": j.severity, "cause": j.cause})
        incident.severity, incident.cause = j.severity, j.cause
        _notify(session, config, incident, event, "escalate", now)
        changes.append(Change(incident.id, incident.key, "escalated"))
    joined = sorted(set(j.sites) - set(incident.sites))
    left = sorted(set(incident.sites) - set(j.sites))
    if joined or left:
        event = _event(session, incident, "sites_changed", now,
                       {"joined": joined, "left": left, "sites": list(j.sites)})
        incident.sites = list(j.sites)
        _notify(session, config, incident, event, "update", now)
        changes.append(Change(incident.id, incident.key, "updated"))
    incident.evidence = _merge(incident.evidence, j.evidence)
    incident.detail = {**incident.detail, **j.detail}
    incident.updated_at = now
    return changes


def _merge(old: Iterable[str], new: Iterable[str], keep: int = 200) -> list[str]:
    merged = list(dict.fromkeys([*new, *old]))
    return merged[:keep]


def _resolve(session: Session, config: OpsConfig, incident: Incident, now: dt.datetime,
             why: str, detail: dict[str, Any], actor: str | None = None) -> list[Change]:
    incident.state = "resolved"
    incident.resolved_at = now
    incident.resolved_by = actor or "auto"
    incident.updated_at = now
    event = _event(session, incident, "resolved", now, {"why": why, **detail}, actor)
    log.warning("incident %d resolved: %s (%s)", incident.id, incident.key, why)
    _notify(session, config, incident, event, "resolve", now)
    return [Change(incident.id, incident.key, "resolved")]


# --------------------------------------------------------------------------- by hand

#: What a person may do to an incident (the API and the console), from which states.
BY_HAND: dict[str, tuple[str, ...]] = {
    "acknowledged": ("open",),
    "resolved": ("open", "acknowledged"),
    "comment": ("open", "acknowledged", "resolved"),
}


class IncidentStateError(ValueError):
    """The incident is not in a state that allows the change (someone was quicker)."""


def lock_key_of(incident: Incident) -> str:
    """The lock the evaluation of this incident takes (its target's, or its probe's)."""
    return f"target:{incident.target}" if incident.target else f"probe:{incident.subject}"


def lock_incident(session: Session, incident_id: int) -> Incident | None:
    """The incident re-read under the lock the engine takes for it, so a person's change and a
    correlation round in another instance come one after the other, never interleaved."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        return None
    lock_key(session, lock_key_of(incident))
    session.refresh(incident)
    return incident


def change_by_hand(session: Session, config: OpsConfig, incident: Incident, kind: str,
                   user: str, now: dt.datetime, detail: dict[str, Any] | None = None) -> None:
    """Acknowledge (the checks go on), resolve (recorded as the person's, notified as
    resolved) or comment on a locked incident; :class:`IncidentStateError` when its state
    does not allow it."""
    if incident.state not in BY_HAND[kind]:
        raise IncidentStateError(f"the incident is {incident.state}")
    if kind == "resolved":
        _resolve(session, config, incident, now, "resolved by hand", {}, actor=user)
        return
    if kind == "acknowledged":
        incident.state, incident.acknowledged_at, incident.acknowledged_by = (
            "acknowledged", now, user)
    incident.updated_at = now
    _event(session, incident, kind, now, detail or {}, actor=user)
