"""``/metrics``: Prometheus text built from the database at each scrape.

Every instance answers with the same numbers — the fleet's, not its own process's — so a load
balancer may send the scrape anywhere and an instance that restarts loses nothing.  Each query is
bounded by a time window or aggregated in SQL; none loads result documents.

The latency histograms (``hotline_ops_pdd_ms``, ``hotline_ops_answer_ms``) describe the results
of the **last hour**, not a running total: read them with ``histogram_quantile(0.95,
hotline_ops_pdd_ms_bucket)`` directly, not through ``rate()``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from probe.ops.db import Counter, Incident, Notification, Probe, Result, transaction, utcnow
from probe.ops.maintenance import in_maintenance, windows_between

BUCKETS_MS = (250, 500, 1000, 2000, 3000, 5000, 8000, 13000, 20000, 30000)
LAG_WINDOW = dt.timedelta(minutes=5)
RECENT = dt.timedelta(hours=1)
PROBE_STATES = ("online", "offline", "silent", "unknown")
NOTIFICATION_STATES = ("pending", "sent", "failed")
INCIDENT_SCOPES = ("hotline", "path", "site", "probe")
SEVERITIES = ("down", "degraded")
INGESTED_PREFIX = "ingested:"  # counters ingest adds to once per batch
QUARANTINE_PREFIX = "quarantined:"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class FleetCollector(Collector):
    """The metric families, computed from the database in one read transaction per scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        with transaction(self.sessions) as session:
            yield _ingested(session)
            yield _quarantined(session)
            yield _ingest_lag(session, now)
            yield _availability(session, now)
            yield from _latency_histograms(session, now)
            yield _mos(session, now)
            yield _open_incidents(session)
            yield _probes(session)
            yield _notifications(session)


def registry_for(sessions: sessionmaker[Session]) -> CollectorRegistry:
    """A registry of its own per app: the process-wide default would mix in whatever else the
    process registered, and a second app in one process (tests) would collide."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(sessions))
    return registry


# --------------------------------------------------------------------------- families


def _ingested(session: Session) -> Metric:
    family = CounterMetricFamily("hotline_ops_results_ingested", "Results stored (new, not "
                                 "duplicates), per target and channel, fleet-wide.",
                                 labels=["target", "channel"])
    rows = session.execute(select(Counter.name, Counter.value)
                           .where(Counter.name.startswith(INGESTED_PREFIX, autoescape=True)))
    for name, value in rows:
        target, _, channel = name.removeprefix(INGESTED_PREFIX).rpartition(":")
        family.add_metric([target, channel], value)
    return family


def _quarantined(session: Session) -> Metric:
    family = CounterMetricFamily("hotline_ops_quarantined", "Messages ingest refused, by "
                                 "reason.", labels=["reason"])
    rows = session.execute(select(Counter.name, Counter.value)
                           .where(Counter.name.startswith(QUARANTINE_PREFIX, autoescape=True)))
    for name, value in rows:
        family.add_metric([name.removeprefix(QUARANTINE_PREFIX)], value)
    return family


def _ingest_lag(session: Session, now: dt.datetime) -> Metric:
    family = GaugeMetricFamily("hotline_ops_ingest_lag_seconds", "Time from a call's start to "
                               "its result being stored, over results received in the last "
                               "5 minutes.", labels=["stat"])
    rows = session.execute(select(Result.started_at, Result.received_at)
                           .where(Result.received_at >= now - LAG_WINDOW))
    lags = [(received - started).total_seconds() for started, received in rows]
    if lags:
        family.add_metric(["p50"], percentile(lags, 0.5) or 0.0)
        family.add_metric(["max"], max(lags))
    return family


def _availability(session: Session, now: dt.datetime) -> Metric:
    family = GaugeMetricFamily("hotline_ops_availability_ratio", "Share of the last hour's "
                               "results that met the target's expectations, maintenance "
                               "excluded.", labels=["target"])
    since = now - RECENT
    windows = windows_between(session, since, now)
    totals: dict[str, list[int]] = {}
    rows = session.execute(select(Result.target, Result.probe_id, Result.started_at, Result.met)
                           .where(Result.started_at >= since, Result.started_at < now))
    for target, probe_id, started_at, met in rows:
        if in_maintenance(windows, target, probe_id, started_at):
            continue
        counts = totals.setdefault(target, [0, 0])
        counts[0] += bool(met)
        counts[1] += 1
    for target, (met_count, total) in sorted(totals.items()):
        family.add_metric([target], met_count / total)
    return family


def _latency_histograms(session: Session, now: dt.datetime) -> Iterator[Metric]:
    for column, name, what in ((Result.pdd_ms, "hotline_ops_pdd_ms", "Post-dial delay"),
                               (Result.answer_ms, "hotline_ops_answer_ms", "Time to answer")):
        family = HistogramMetricFamily(name, f"{what} (ms) of the last hour's results, per "
                                       "target.", labels=["target"])
        for target, buckets, total in _histogram_rows(session, column, now - RECENT):
            family.add_metric([target], buckets, total)
        yield family


def _histogram_rows(session: Session, column: Any, since: dt.datetime
                    ) -> Iterator[tuple[str, list[tuple[str, float]], float]]:
    """Per target: cumulative (le, count) buckets and the sum, counted by the database."""
    le = [func.sum(case((column <= b, 1), else_=0)) for b in BUCKETS_MS]
    stmt = (select(Result.target, func.count(column), func.sum(column), *le)
            .where(Result.started_at >= since, column.is_not(None))
            .group_by(Result.target).order_by(Result.target))
    for target, count, total, *cumulative in session.execute(stmt):
        buckets = [(floatToGoString(b), float(c or 0))
                   for b, c in zip(BUCKETS_MS, cumulative, strict=True)]
        buckets.append(("+Inf", float(count)))
        yield target, buckets, float(total or 0)


def _mos(session: Session, now: dt.datetime) -> Metric:
    family = GaugeMetricFamily("hotline_ops_mos", "Mean MOS of the last hour's results.",
                               labels=["target"])
    rows = session.execute(select(Result.target, func.avg(Result.mos))
                           .where(Result.started_at >= now - RECENT, Result.mos.is_not(None))
                           .group_by(Result.target).order_by(Result.target))
    for target, mean in rows:
        family.add_metric([target], float(mean))
    return family


def _open_incidents(session: Session) -> Metric:
    family = GaugeMetricFamily("hotline_ops_open_incidents", "Unresolved incidents (open or "
                               "acknowledged).", labels=["scope", "severity"])
    counts = {(s, v): 0 for s in INCIDENT_SCOPES for v in SEVERITIES}  # zeros: alerts see 0
    rows = session.execute(select(Incident.scope, Incident.severity, func.count())
                           .where(Incident.resolved_at.is_(None))
                           .group_by(Incident.scope, Incident.severity))
    for scope, severity, count in rows:
        counts[(scope, severity)] = count
    for (scope, severity), count in sorted(counts.items()):
        family.add_metric([scope, severity], count)
    return family


def _probes(session: Session) -> Metric:
    family = GaugeMetricFamily("hotline_ops_probes", "Probes by presence.", labels=["state"])
    counts = dict.fromkeys(PROBE_STATES, 0)
    state = case((Probe.silent.is_(True), "silent"), else_=Probe.state)
    for name, count in session.execute(select(state, func.count()).group_by(state)):
        counts[name] = counts.get(name, 0) + count
    for name, count in counts.items():
        family.add_metric([name], count)
    return family


def _notifications(session: Session) -> Metric:
    family = GaugeMetricFamily("hotline_ops_notifications", "Notifications by state.",
                               labels=["state"])
    counts = dict.fromkeys(NOTIFICATION_STATES, 0)
    rows = session.execute(select(Notification.state, func.count())
                           .group_by(Notification.state))
    for name, count in rows:
        counts[name] = count
    for name, count in counts.items():
        family.add_metric([name], count)
    return family
