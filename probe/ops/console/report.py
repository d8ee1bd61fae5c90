"""A target over a period: availability with maintenance excluded, timings, MOS, outcomes.

The figures are the API's (``GET /api/v1/targets/{name}/availability``): the share of results
whose expectations were met, results inside a maintenance window left out, the same
percentile function.  The page, its printable form and the CSV are three views of one
:class:`Report`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from probe.ops.console.svg import Chart, line_chart
from probe.ops.db import Result
from probe.ops.maintenance import in_maintenance, windows_between
from probe.ops.metrics import percentile

PERIODS = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7),
           "30d": dt.timedelta(days=30), "90d": dt.timedelta(days=90)}
DEFAULT_PERIOD = "7d"
MAX_SPAN = dt.timedelta(days=93)  # the API's limit too
HOURLY_UP_TO = dt.timedelta(hours=48)


class PeriodError(ValueError):
    pass


@dataclass(frozen=True)
class Period:
    start: dt.datetime
    end: dt.datetime
    name: str | None  # 24h / 7d / ... ; None for from/to

    @property
    def bucket(self) -> dt.timedelta:
        return dt.timedelta(hours=1) if self.end - self.start <= HOURLY_UP_TO \
            else dt.timedelta(days=1)

    @property
    def hourly(self) -> bool:
        return self.bucket == dt.timedelta(hours=1)


def parse_period(period: str | None, from_: str | None, to: str | None,
                 now: dt.datetime) -> Period:
    """``period=24h|7d|30d|90d`` ending now, or ``from``/``to`` (a UTC date: ``to`` counts the
    whole day; or an ISO time with its zone)."""
    if from_ or to:
        end = _moment(to, end_of_day=True) if to else now
        start = _moment(from_, end_of_day=False) if from_ else end - PERIODS[DEFAULT_PERIOD]
        name = None
    else:
        name = period if period in PERIODS else DEFAULT_PERIOD
        end, start = now, now - PERIODS[name]
    if start >= end:
        raise PeriodError("from must be before to")
    if end - start > MAX_SPAN:
        raise PeriodError(f"at most {MAX_SPAN.days} days at once")
    return Period(start, end, name)


def _moment(text: str, *, end_of_day: bool) -> dt.datetime:
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            midnight = dt.datetime.combine(day, dt.time(), dt.UTC)
            return midnight + dt.timedelta(days=1) if end_of_day else midnight
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise PeriodError(f"not a date or time: {text[:40]!r}") from err
    if moment.tzinfo is None:
        raise PeriodError("a time needs its zone (…Z or +03:00)")
    return moment.astimezone(dt.UTC)


@dataclass
class Stats:
    """Availability and timings of a set of results (maintenance already left out)."""

    results: int = 0
    met: int = 0
    pdd: list[float] = field(default_factory=list)
    answer: list[float] = field(default_factory=list)
    mos: list[float] = field(default_factory=list)

    def add(self, r: Any) -> None:
        self.results += 1
        self.met += bool(r.met)
        if r.pdd_ms is not None:
            self.pdd.append(r.pdd_ms)
        if r.answer_ms is not None:
            self.answer.append(r.answer_ms)
        if r.mos is not None:
            self.mos.append(r.mos)

    @property
    def ratio(self) -> float | None:
        return self.met / self.results if self.results else None

    @property
    def percent(self) -> float | None:
        return None if self.ratio is None else 100 * self.ratio

    def p(self, which: str, q: float) -> float | None:
        return percentile(getattr(self, which), q)


@dataclass
class OutcomeRow:
    site: str
    channel: str
    outcomes: Counter[str]
    stats: Stats


@dataclass
class Report:
    target: str
    period: Period
    total: Stats
    excluded: int
    by_channel: dict[str, Stats]
    buckets: list[tuple[dt.datetime, Stats]]
    outcome_rows: list[OutcomeRow]
    outcome_names: list[str]

    def timing_chart(self, labels: dict[str, str]) -> Chart:
        return line_chart(
            [(labels["pdd50"], "s-pdd50", [(t, s.p("pdd", 0.5)) for t, s in self.buckets]),
             (labels["pdd95"], "s-pdd95", [(t, s.p("pdd", 0.95)) for t, s in self.buckets]),
             (labels["ans50"], "s-ans50", [(t, s.p("answer", 0.5)) for t, s in self.buckets]),
             (labels["ans95"], "s-ans95", [(t, s.p("answer", 0.95)) for t, s in self.buckets])],
            self.period.start, self.period.end, unit="ms", hourly=self.period.hourly)

    def mos_chart(self, labels: dict[str, str]) -> Chart:
        return line_chart(
            [(labels["mos50"], "s-mos50", [(t, s.p("mos", 0.5)) for t, s in self.buckets]),
             (labels["mosmin"], "s-mosmin",
              [(t, min(s.mos) if s.mos else None) for t, s in self.buckets])],
            self.period.start, self.period.end, unit="", hourly=self.period.hourly,
            y_floor=1.0, y_ceiling=5.0)

    def availability_chart(self, label: str) -> Chart:
        return line_chart([(label, "s-avail", [(t, s.percent) for t, s in self.buckets])],
                          self.period.start, self.period.end, unit="%",
                          hourly=self.period.hourly, y_floor=0.0, y_ceiling=100.0)


def build_report(session: Session, target: str, period: Period) -> Report:
    windows = windows_between(session, period.start, period.end, target)
    rows = session.execute(
        select(Result.probe_id, Result.site, Result.channel, Result.started_at, Result.met,
               Result.outcome, Result.pdd_ms, Result.answer_ms, Result.mos)
        .where(Result.target == target, Result.started_at >= period.start,
               Result.started_at < period.end)).all()
    kept = [r for r in rows if not in_maintenance(windows, target, r.probe_id, r.started_at)]
    total, by_channel = Stats(), dict[str, Stats]()
    for r in kept:
        total.add(r)
        by_channel.setdefault(r.channel, Stats()).add(r)
    outcome_rows = _outcomes(kept)
    names = sorted({name for row in outcome_rows for name in row.outcomes})
    return Report(target=target, period=period, total=total, excluded=len(rows) - len(kept),
                  by_channel=dict(sorted(by_channel.items())),
                  buckets=_buckets(kept, period), outcome_rows=outcome_rows,
                  outcome_names=names)


def _buckets(rows: Iterable[Any], period: Period) -> list[tuple[dt.datetime, Stats]]:
    size = period.bucket
    first = _floor(period.start, size)
    out: dict[dt.datetime, Stats] = {}
    t = first
    while t < period.end:
        out[t] = Stats()
        t += size
    for r in rows:
        out[_floor(r.started_at, size)].add(r)
    return sorted(out.items())


def _floor(at: dt.datetime, size: dt.timedelta) -> dt.datetime:
    seconds = size.total_seconds()
    return dt.datetime.fromtimestamp(at.timestamp() // seconds * seconds, dt.UTC)


def _outcomes(rows: Sequence[Any]) -> list[OutcomeRow]:
    table: dict[tuple[str, str], OutcomeRow] = {}
    for r in rows:
        key = (r.site or r.probe_id, r.channel)
        row = table.setdefault(key, OutcomeRow(key[0], key[1], Counter(), Stats()))
        row.outcomes[r.outcome] += 1
        row.stats.add(r)
    return [table[k] for k in sorted(table)]


# --------------------------------------------------------------------------- CSV

CSV_COLUMNS = ["row", "from", "to", "target", "channel", "results", "met",
               "excluded_maintenance", "availability_percent", "pdd_p50_ms", "pdd_p95_ms",
               "answer_p50_ms", "answer_p95_ms", "mos_p50"]


def sla_csv(report: Report) -> str:
    """The SLA figures as CSV: the period, then each channel over the period, then each
    bucket.  An empty cell is a figure that could not be measured (no results)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    p = report.period
    writer.writerow(_csv_row("period", p.start, p.end, report.target, "all", report.total,
                             report.excluded))
    for channel, stats in report.by_channel.items():
        writer.writerow(_csv_row("channel", p.start, p.end, report.target, channel, stats, ""))
    for start, stats in report.buckets:
        writer.writerow(_csv_row("hour" if p.hourly else "day", start,
                                 min(start + p.bucket, p.end), report.target, "all", stats,
                                 ""))
    return buf.getvalue()


def _csv_row(kind: str, start: dt.datetime, end: dt.datetime, target: str, channel: str,
             s: Stats, excluded: int | str) -> list[str]:
    return [kind, _iso(start), _iso(end), target, channel, str(s.results), str(s.met),
            str(excluded), _fmt(s.percent, 3), _fmt(s.p("pdd", 0.5), 0),
            _fmt(s.p("pdd", 0.95), 0), _fmt(s.p("answer", 0.5), 0),
            _fmt(s.p("answer", 0.95), 0), _fmt(s.p("mos", 0.5), 2)]


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"
