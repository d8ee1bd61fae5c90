"""Writing what ingest accepted: one function per kind of message, all inside the caller's
transaction, all idempotent — a message the broker delivers twice (it will, at least once)
changes nothing the second time.

- results: ``INSERT ... ON CONFLICT (id) DO NOTHING``: the primary key on the probe's result
  UUID, not a cache, decides what is a duplicate, so it holds across instances and restarts;
- status and health: the probe row is updated; a presence event is written only when the state
  or boot counter changes (every instance reads the retained status; they write one event);
- replies: appended to the command they answer (found by the MQTT 5 correlation data);
- recordings: one per result id;
- rejected messages: a quarantine row and a counter per reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from probe.ops.db import (
    Command,
    PresenceEvent,
    Probe,
    Quarantine,
    Recording,
    Result,
    add_counter,
    insert_for,
    lock_key,
)
from probe.ops.messages import (
    HealthIn,
    Parsed,
    RecordingIn,
    Rejected,
    ReplyIn,
    ResultIn,
    StatusIn,
)

log = logging.getLogger("probe.ops.store")
QUARANTINE_KEEP_BYTES = 4096


@dataclass
class Stored:
    """What one batch changed: the targets and probes whose judgements must be looked at."""

    results: int = 0
    duplicates: int = 0
    quarantined: int = 0
    targets: set[str] = field(default_factory=set)
    probes: set[str] = field(default_factory=set)
    result_times: list[tuple[str, dt.datetime]] = field(default_factory=list)
    per_path: dict[tuple[str, str], int] = field(default_factory=dict)  # (target, channel)

    def merge(self, other: Stored) -> None:
        self.results += other.results
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.targets |= other.targets
        self.probes |= other.probes
        self.result_times += other.result_times
        for key, n in other.per_path.items():
            self.per_path[key] = self.per_path.get(key, 0) + n


def finish(session: Session, out: Stored) -> None:
    """At the end of a batch's transaction: the fleet-wide counters, once per (target,
    channel) — one row update per key and batch, not per result, so instances sharing the
    load barely wait on each other's counter rows."""
    for (target, channel), n in sorted(out.per_path.items()):
        add_counter(session, f"ingested:{target}:{channel}", n)


def store(session: Session, item: Parsed, now: dt.datetime, out: Stored) -> None:
    """Write one parsed message (see the module docstring)."""
    if isinstance(item, ResultIn):
        _result(session, item, now, out)
    elif isinstance(item, StatusIn):
        _status(session, item, now)
        out.probes.add(item.probe_id)
    elif isinstance(item, HealthIn):
        _ensure_probe(session, item.probe_id, now, item.site)
        session.execute(update(Probe).where(Probe.id == item.probe_id).values(
            health=item.health, health_at=now, **({"site": item.site} if item.site else {})))
    elif isinstance(item, ReplyIn):
        _reply(session, item, now)
    elif isinstance(item, RecordingIn):
        session.execute(insert_for(session, Recording).values(
            result_id=item.result_id, probe_id=item.probe_id, received_at=now,
            content_type=item.content_type, size=len(item.data), data=item.data,
        ).on_conflict_do_nothing(index_elements=["result_id"]))
    else:
        quarantine(session, item, now)
        out.quarantined += 1


def quarantine(session: Session, item: Rejected, now: dt.datetime) -> None:
    log.warning("quarantined %s: %s", item.topic[:120], item.reason)
    session.add(Quarantine(received_at=now, topic=item.topic[:300], probe_id=item.probe_id,
                           reason=item.reason[:500], size=len(item.payload),
                           payload=item.payload[:QUARANTINE_KEEP_BYTES]))
    add_counter(session, f"quarantined:{item.reason.split(':')[0][:60]}")


def _result(session: Session, r: ResultIn, now: dt.datetime, out: Stored) -> None:
    inserted = session.execute(insert_for(session, Result).values(
        id=r.id, probe_id=r.probe_id, site=r.site, target=r.target, channel=r.channel,
        path=r.path, started_at=r.started_at, received_at=now, outcome=r.outcome, met=r.met,
        vote=r.vote, cause=r.cause, verdict=r.verdict, final=r.final,
        cause_detail=r.cause_detail or None, pdd_ms=r.pdd_ms,
        answer_ms=r.answer_ms, mos=r.mos, document=r.document,
    ).on_conflict_do_nothing(index_elements=["id"]).returning(Result.id)).first()
    if inserted is None:  # (rowcount is not reliable here: psycopg reports -1)
        out.duplicates += 1
        return
    out.results += 1
    out.per_path[(r.target, r.channel)] = out.per_path.get((r.target, r.channel), 0) + 1
    out.targets.add(r.target)
    out.probes.add(r.probe_id)
    out.result_times.append((r.target, r.started_at))
    _ensure_probe(session, r.probe_id, now, r.site)
    # Out-of-order arrival after an outbox drain is normal: keep the newest start time.
    session.execute(update(Probe).where(Probe.id == r.probe_id).where(
        (Probe.last_result_at.is_(None)) | (Probe.last_result_at < r.started_at)
    ).values(last_result_at=r.started_at))


def _ensure_probe(session: Session, probe_id: str, now: dt.datetime,
                  site: str | None = None) -> None:
    session.execute(insert_for(session, Probe).values(
        id=probe_id, site=site, state="unknown", first_seen=now, silent=False,
    ).on_conflict_do_nothing(index_elements=["id"]))


def _status(session: Session, s: StatusIn, now: dt.datetime) -> None:
    _ensure_probe(session, s.probe_id, now)
    lock_key(session, f"probe:{s.probe_id}")
    probe = session.scalars(select(Probe).where(Probe.id == s.probe_id).with_for_update()).one()
    # A late "offline" of an earlier boot must not mark a probe that already came back.
    if s.boot is not None and probe.boot is not None and s.boot < probe.boot:
        return
    changed = (probe.state, probe.boot) != (s.state, s.boot)
    probe.state, probe.boot, probe.status_reason, probe.status_at = (
        s.state, s.boot, s.reason, now)
    if changed:
        session.add(PresenceEvent(probe_id=s.probe_id, at=now, state=s.state, boot=s.boot,
                                  reason=s.reason))


def _reply(session: Session, r: ReplyIn, now: dt.datetime) -> None:
    command = session.scalars(select(Command).where(Command.id == r.correlation_id)
                              .with_for_update()).one_or_none()
    if command is None or command.probe_id != r.probe_id:
        quarantine(session, Rejected(f"hotline-probe/v1/{r.probe_id}/cmd-reply", r.probe_id,
                                     "reply to an unknown command", b""), now)
        return
    if r.reply in command.replies:  # delivered twice
        return
    command.replies = [*command.replies, r.reply]
    command.last_reply_at = now
