"""The fleet grid: one row per (probe, target), one box per round, one stripe per channel.

Rounds are the correlation's own (``round_of``: epoch-aligned, ``round_s`` of the target), so a
box holds exactly the results the incident engine judged together.  In a box, each channel shows
its latest result of the round, coloured by its vote; the box as a whole takes the worst.

Rows come a page at a time (:data:`ROWS_PER_PAGE`, in (target, probe) order): a fleet of 1,000
probes calling 3 targets is 3,000 rows, 144,000 results in the default window — 40 MB of HTML
that took 8 s to make and 24 s to show (``tests/benchmarks/bench_console.py``).  The page's rows
are picked in SQL (the distinct (target, probe) pairs of the window) and only their results
are read.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from probe.ops.config import OpsConfig
from probe.ops.correlate import round_of
from probe.ops.db import IncidentEvent, PresenceEvent, Probe, Result

DEFAULT_ROUNDS = 24
MAX_ROUNDS = 288
ROWS_PER_PAGE = 100
#: Worst first: the box's colour is the worst of its channels'.  ``local`` ranks below the
#: hotline's own votes: a probe's fault says nothing about the hotline.
VOTE_RANK = {"fail": 4, "degraded": 3, "ok": 2, "local": 1}
CHANNEL_MARK = {"sip": "S", "gsm": "G", "analog": "A"}


@dataclass(frozen=True)
class Filters:
    target: str | None = None
    site: str | None = None
    channel: str | None = None
    carrier: str | None = None  # the operator of gsm:<operator>
    rounds: int = DEFAULT_ROUNDS
    page: int = 1

    def query(self, page: int | None = None) -> dict[str, str]:
        """The non-empty filters, as query parameters (for the grid fragment's URL); with
        ``page``: the same filters on that page."""
        out = {k: v for k, v in (("target", self.target), ("site", self.site),
                                 ("channel", self.channel), ("carrier", self.carrier)) if v}
        if self.rounds != DEFAULT_ROUNDS:
            out["rounds"] = str(self.rounds)
        page = self.page if page is None else page
        if page != 1:
            out["page"] = str(page)
        return out


@dataclass(frozen=True)
class Segment:
    result_id: str
    channel: str
    path: str
    vote: str
    outcome: str
    cause: str | None
    started_at: dt.datetime

    @property
    def mark(self) -> str:
        return CHANNEL_MARK.get(self.channel, self.channel[:1].upper())


@dataclass
class Box:
    start: dt.datetime
    segments: list[Segment] = field(default_factory=list)

    @property
    def vote(self) -> str | None:
        if not self.segments:
            return None
        return max(self.segments, key=lambda s: VOTE_RANK.get(s.vote, 0)).vote


@dataclass
class Row:
    target: str
    probe_id: str
    site: str | None
    presence: str  # online / offline / silent / unknown
    presence_reason: str | None
    round_s: float
    boxes: list[Box]


@dataclass
class Grid:
    rows: list[Row]
    quiet_probes: list[Probe]  # known, but no result in the window: shown apart, with a badge
    options: dict[str, list[str]]
    filters: Filters
    now: dt.datetime
    page: int = 1
    pages: int = 1
    total_rows: int = 0  # (target, probe) pairs with a result in the window, every page
    first_row: int = 0  # 1-based number of the page's first row (0: none)
    last_row: int = 0


def presence_of(probe: Probe | None) -> str:
    if probe is None:
        return "unknown"
    if probe.silent:
        return "silent"
    return probe.state if probe.state in ("online", "offline") else "unknown"


def horizon(config: OpsConfig, rounds: int) -> dt.timedelta:
    return dt.timedelta(seconds=rounds * config.longest_round_s)


def build_grid(session: Session, config: OpsConfig, filters: Filters,
               now: dt.datetime) -> Grid:
    since = now - horizon(config, filters.rounds)
    keys = [(k.target, k.probe_id) for k in session.execute(_keys_query(filters, since))]
    pages = max(1, math.ceil(len(keys) / ROWS_PER_PAGE))
    page = min(max(filters.page, 1), pages)
    first = (page - 1) * ROWS_PER_PAGE
    wanted = set(keys[first:first + ROWS_PER_PAGE])
    by_row: dict[tuple[str, str], list[Any]] = {key: [] for key in sorted(wanted)}
    if wanted:
        for r in session.execute(_results_query(filters, since, wanted)):
            if (r.target, r.probe_id) in wanted:  # the IN lists also match other pairs
                by_row[(r.target, r.probe_id)].append(r)
    probes = {p.id: p for p in session.scalars(select(Probe))}
    grid_rows = [_row(config, target, probe_id, results, probes.get(probe_id), filters.rounds,
                      now) for (target, probe_id), results in by_row.items()]
    # A target with a shorter round than the longest has results in the window before its
    # first box: a row of those alone has nothing to show (the page has one row fewer).
    grid_rows = [r for r in grid_rows if any(b.segments for b in r.boxes)]
    seen = {probe_id for _target, probe_id in keys}
    quiet = [p for p in probes.values() if p.id not in seen and not _filtered_out(p, filters)]
    return Grid(rows=grid_rows, quiet_probes=sorted(quiet, key=lambda p: p.id),
                options=_options(session, since), filters=filters, now=now, page=page,
                pages=pages, total_rows=len(keys), first_row=first + 1 if keys else 0,
                last_row=min(first + ROWS_PER_PAGE, len(keys)))


def _filtered_out(probe: Probe, filters: Filters) -> bool:
    return filters.site is not None and probe.site != filters.site


def _filtered(stmt: Any, filters: Filters) -> Any:
    if filters.target:
        stmt = stmt.where(Result.target == filters.target)
    if filters.site:
        stmt = stmt.where(Result.site == filters.site)
    if filters.channel:
        stmt = stmt.where(Result.channel == filters.channel)
    if filters.carrier:
        stmt = stmt.where(Result.path == f"gsm:{filters.carrier}")
    return stmt


def _keys_query(filters: Filters, since: dt.datetime) -> Any:
    """The grid's rows: every (target, probe) with a result in the window, in page order."""
    return _filtered(select(Result.target, Result.probe_id).where(Result.started_at >= since),
                     filters).distinct().order_by(Result.target, Result.probe_id)


def _results_query(filters: Filters, since: dt.datetime, keys: set[tuple[str, str]]) -> Any:
    """The results of one page's rows (read through the ``(probe_id, started_at)`` index)."""
    stmt = (select(Result.id, Result.probe_id, Result.site, Result.target, Result.channel,
                   Result.path, Result.started_at, Result.vote, Result.outcome, Result.cause)
            .where(Result.started_at >= since,
                   Result.probe_id.in_(sorted({p for _t, p in keys})),
                   Result.target.in_(sorted({t for t, _p in keys}))))
    return _filtered(stmt, filters).order_by(Result.started_at, Result.id)


def _row(config: OpsConfig, target: str, probe_id: str, results: Sequence[Any],
         probe: Probe | None, rounds: int, now: dt.datetime) -> Row:
    round_s = config.correlation_for(target).round_s
    current = round_of(now.timestamp(), round_s)
    first = current - rounds + 1
    boxes = {k: Box(dt.datetime.fromtimestamp(k * round_s, dt.UTC))
             for k in range(first, current + 1)}
    latest: dict[tuple[int, str], Any] = {}
    for r in results:  # ordered by start: the last of a (round, channel) wins, as in correlate
        k = round_of(r.started_at.timestamp(), round_s)
        if first <= k <= current:
            latest[(k, r.channel)] = r
    for (k, _channel), r in sorted(latest.items()):
        boxes[k].segments.append(Segment(r.id, r.channel, r.path, r.vote, r.outcome, r.cause,
                                         r.started_at))
    site = next((r.site for r in reversed(results) if r.site), probe.site if probe else None)
    return Row(target=target, probe_id=probe_id, site=site, presence=presence_of(probe),
               presence_reason=probe.status_reason if probe else None, round_s=round_s,
               boxes=[boxes[k] for k in sorted(boxes)])


def _options(session: Session, since: dt.datetime) -> dict[str, list[str]]:
    """The values the filters offer: what the window holds (plus nothing made up)."""
    pairs = session.execute(select(Result.target, Result.site, Result.channel, Result.path)
                            .where(Result.started_at >= since).distinct()).all()
    return {
        "target": sorted({p.target for p in pairs}),
        "site": sorted({p.site for p in pairs if p.site}),
        "channel": sorted({p.channel for p in pairs}),
        "carrier": sorted({p.path.removeprefix("gsm:") for p in pairs
                           if p.path.startswith("gsm:")}),
    }


# --------------------------------------------------------------------------- change marks


def change_marks(session: Session, since: dt.datetime) -> dict[str, Any]:
    """What the live page watches: the newest arrival among the results it can show, the
    newest incident event and presence event.

    The results are looked up per probe (the small ``probes`` table) through the
    ``(probe_id, started_at)`` index, so the poll costs an index range per probe rather than a
    scan of every result ever stored; a result older than the grid's window cannot change it."""
    probe_ids = list(session.scalars(select(Probe.id)))
    received = None
    if probe_ids:
        received = session.scalar(select(func.max(Result.received_at)).where(
            Result.probe_id.in_(probe_ids), Result.started_at >= since))
    return {
        "results": received.isoformat() if received else None,
        "incident_event": session.scalar(select(func.max(IncidentEvent.id))),
        "presence_event": session.scalar(select(func.max(PresenceEvent.id))),
        "probes": _probe_mark(session),
    }


def _probe_mark(session: Session) -> str:
    # A probe going silent changes a flag, not an event row: include the flags.
    rows = session.execute(select(Probe.id, Probe.state, Probe.silent).order_by(Probe.id))
    return ";".join(f"{r.id}:{r.state}:{int(bool(r.silent))}" for r in rows)
