"""Writing what ingest accepted: one function per kind of message, all inside the caller's
transaction, all idempotent — a message the broker delivers twice (it will, at least once)
changes nothing the second time.

- results: ``INSERT ... ON CONFLICT (id) DO NOTHING``: the primary key on the probe's result
  UUID, not a cache, decides what is a duplicate, so it holds across instances and restarts;
- status and health: the probe row is updated; a presence event is written only when the state
  or boot counter changes (every instance reads the retained status; they write one event);
  a health report also leaves a :class:`~probe.ops.db.HealthSample` (a few numbers for the
  probe page's charts), at most one per probe per :data:`HEALTH_SAMPLE_S` — every instance
  reads every health report, and the probe's lock makes them write one sample between them;
- replies: appended to the command they answer (found by the MQTT 5 correlation data);
- recordings: one per result id;
- rejected messages: a quarantine row and a counter per reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from probe.ops.db import (
    Command,
    HealthSample,
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
#: A probe reports its health every minute or so, and on demand: one sample per 30 s bounds
#: the table (2,880 rows per probe and day at most) and still shows a change within a minute.
HEALTH_SAMPLE_S = 30.0


@dataclass
class Stored:
    """What one batch changed: the targets and probes whose judgements must be looked at."""

    results: int = 0
    duplicates: int = 0
    quarantined: int = 0
    targets: set[str] = field(default_factory=set)
    probes: set[str] = field(default_factory=set)  # status changed, or a local fault: evaluate
    seen_probes: set[str] = field(default_factory=set)  # any new result: evaluate if incident
    per_path: dict[tuple[str, str], int] = field(default_factory=dict)  # (target, channel)

    def merge(self, other: Stored) -> None:
        self.results += other.results
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.targets |= other.targets
        self.probes |= other.probes
        self.seen_probes |= other.seen_probes
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
        store_results(session, [item], now, out)
    elif isinstance(item, StatusIn):
        _status(session, item, now)
        out.probes.add(item.probe_id)
    elif isinstance(item, HealthIn):
        _ensure_probe(session, item.probe_id, now, item.site)
        session.execute(update(Probe).where(Probe.id == item.probe_id).values(
            health=item.health, health_at=now, **({"site": item.site} if item.site else {})))
        _health_sample(session, item, now)
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


# --------------------------------------------------------------------------- health samples


def _health_sample(session: Session, h: HealthIn, now: dt.datetime) -> None:
    lock_key(session, f"probe:{h.probe_id}")  # the instances that all read it write one row
    last = session.scalar(select(func.max(HealthSample.at))
                          .where(HealthSample.probe_id == h.probe_id))
    if last is not None and (now - last).total_seconds() < HEALTH_SAMPLE_S:
        return
    session.add(HealthSample(probe_id=h.probe_id, at=now, **health_sample(h.health)))


def health_sample(health: Any) -> dict[str, Any]:
    """The charted numbers of one health report (``probe/daemon/run.py`` ``health()``), each None
    when the report lacks it or holds something else: the report is the probe's word, so a
    missing section, a string where a number belongs or a NaN must not refuse the message.

    The signal and operator are the mobile modem's: the ``gsm`` channel's, else the first
    channel (by name) whose modem reports a signal (a probe has one mobile modem at most)."""
    doc = health if isinstance(health, Mapping) else {}
    outbox, line = _mapping(doc.get("outbox")), _mapping(doc.get("line"))
    status = _mapping(doc.get("status"))
    modem = _mobile_modem(_mapping(doc.get("channels")))
    return {
        "outbox_count": _int(outbox.get("count")),
        "outbox_dropped": _int(outbox.get("dropped")),
        "line_state": _text(line.get("state"), 24),
        "line_volts": _number(line.get("dc_volts")),
        "signal_dbm": _number(modem.get("signal_dbm")),
        "operator": _text(modem.get("operator"), 64),
        "access_technology": _text(modem.get("access_technology"), 24),
        "clock_synced": _bool(doc.get("clock_synced")),
        "ok": _bool(status.get("ok")),
    }


def _mobile_modem(channels: Mapping[str, Any]) -> Mapping[str, Any]:
    modems = [(name, _mapping(_mapping(c).get("modem"))) for name, c in channels.items()
              if isinstance(name, str)]
    for name, modem in sorted(modems, key=lambda m: (m[0] != "gsm", m[0])):
        if name == "gsm" or _number(modem.get("signal_dbm")) is not None:
            return modem
    return {}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    # bool is an int in Python: a true "signal" is not 1 dBm.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and abs(number) < 1e9 else None


def _int(value: Any) -> int | None:
    number = _number(value)
    # an INTEGER column on PostgreSQL holds 32 bits; a larger count is not a real outbox depth
    return int(number) if number is not None and number.is_integer() and \
        abs(number) < 2**31 else None


def _text(value: Any, size: int) -> str | None:
    return value[:size] if isinstance(value, str) and value else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


# --------------------------------------------------------------------------- results in bulk


def store_results(session: Session, results: list[ResultIn], now: dt.datetime,
                  out: Stored) -> None:
    """A batch of results in three statements (one multi-row INSERT ... ON CONFLICT DO NOTHING
    RETURNING id, one for the probes first seen, one executemany for their newest start time)
    instead of three per result: at a thousand results a second the round trips were half of
    ingest.  Same outcome as :func:`store` on each, duplicates included."""
    unique = list({r.id: r for r in results}.values())
    out.duplicates += len(results) - len(unique)
    if not unique:
        return
    inserted = set(session.scalars(insert_for(session, Result).values([
        {"id": r.id, "probe_id": r.probe_id, "site": r.site, "target": r.target,
         "channel": r.channel, "path": r.path, "started_at": r.started_at, "received_at": now,
         "outcome": r.outcome, "met": r.met, "vote": r.vote, "cause": r.cause,
         "verdict": r.verdict, "final": r.final, "cause_detail": r.cause_detail or None,
         "pdd_ms": r.pdd_ms, "answer_ms": r.answer_ms, "mos": r.mos, "document": r.document}
        for r in unique]).on_conflict_do_nothing(index_elements=["id"]).returning(Result.id)))
    out.duplicates += len(unique) - len(inserted)
    newest: dict[str, ResultIn] = {}
    for r in unique:
        if r.id not in inserted:
            continue
        out.results += 1
        out.per_path[(r.target, r.channel)] = out.per_path.get((r.target, r.channel), 0) + 1
        out.targets.add(r.target)
        out.seen_probes.add(r.probe_id)
        if r.vote == "local":
            out.probes.add(r.probe_id)
        if r.probe_id not in newest or newest[r.probe_id].started_at < r.started_at:
            newest[r.probe_id] = r
    if not newest:
        return
    session.execute(insert_for(session, Probe).values([
        {"id": p, "site": r.site, "state": "unknown", "first_seen": now, "silent": False}
        for p, r in sorted(newest.items())]).on_conflict_do_nothing(index_elements=["id"]))
    # Out-of-order arrival after an outbox drain is normal: keep the newest start time.
    table = cast(Table, Probe.__table__)
    probes = table.c
    session.execute(
        table.update().where(probes.id == bindparam("pid")).where(
            probes.last_result_at.is_(None) | (probes.last_result_at < bindparam("at")))
        .values(last_result_at=bindparam("at")),
        [{"pid": p, "at": r.started_at} for p, r in sorted(newest.items())])
