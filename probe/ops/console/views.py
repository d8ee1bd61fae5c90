"""The console's routes: a target's report and SLA, a probe, a call; the shipped assets."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from probe.ops.causes import describe
from probe.ops.config import NAME_PATTERN
from probe.ops.console.details import channel_facts, checks, health_facts, measures
from probe.ops.console.fleet import presence_of
from probe.ops.console.report import PERIODS, PeriodError, build_report, parse_period, sla_csv
from probe.ops.console.svg import HistoryChart, bands, history_chart, ladder
from probe.ops.console.web import Web
from probe.ops.db import (
    HealthSample,
    PresenceEvent,
    Probe,
    Recording,
    Result,
    transaction,
    utcnow,
)

PRESENCE_HISTORY = 200
PROBE_RESULTS = 100
RUN_HORIZON = dt.timedelta(days=7)
NAME_RE = re.compile(NAME_PATTERN)
#: The probe page's history spans (``?history=``); retention (``health_days``) bounds them.
HISTORY_SPANS = {"6h": dt.timedelta(hours=6), "24h": dt.timedelta(hours=24),
                 "7d": dt.timedelta(days=7), "30d": dt.timedelta(days=30)}
DEFAULT_HISTORY = "24h"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml"}


# =========================================================================== targets


def add_target_routes(router: APIRouter, web: Web) -> None:
    def report_or_error(request: Request, name: str) -> Any:
        q = request.query_params
        if not _target_known(web, name):
            return None, "Not found.", 404
        try:
            period = parse_period(q.get("period"), q.get("from"), q.get("to"), utcnow())
        except PeriodError as err:
            return None, str(err), 422
        with transaction(web.sessions) as session:
            return build_report(session, name, period), None, 200

    def report_page(request: Request, name: str, template: str, **extra: Any) -> Response:
        """The target's report over the asked period in ``template``, or the error page."""
        user = web.page_user(request)
        report, problem, status = report_or_error(request, name)
        if report is None:
            return web.render(request, "error.html", user, status=status, message=problem,
                              problems=[], back="/")
        return web.render(request, template, user, report=report,
                          query=_period_query(request), **extra)

    @router.get("/targets/{name}")
    def target(request: Request, name: str) -> Response:
        return report_page(request, name, "target.html", periods=list(PERIODS))

    @router.get("/targets/{name}/sla")
    def sla_page(request: Request, name: str) -> Response:
        return report_page(request, name, "sla.html", generated=utcnow())

    @router.get("/targets/{name}/sla.csv")
    def sla_download(request: Request, name: str) -> Response:
        web.page_user(request)
        report, problem, status = report_or_error(request, name)
        if report is None:
            raise HTTPException(status, problem)
        p = report.period
        filename = f"sla-{name}-{p.start:%Y%m%dT%H%M}-{p.end:%Y%m%dT%H%M}.csv"
        return Response(sla_csv(report), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                 "Cache-Control": "no-store"})


def _period_query(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k in ("period", "from", "to")}


def _target_known(web: Web, name: str) -> bool:
    if not NAME_RE.match(name):
        return False
    if any(t.name == name for t in web.config.targets):
        return True
    with transaction(web.sessions) as session:
        return session.scalar(select(Result.id).where(Result.target == name).limit(1)) \
            is not None


# =========================================================================== probes


def add_probe_routes(router: APIRouter, web: Web) -> None:
    @router.get("/probes/{probe_id}")
    def probe(request: Request, probe_id: str) -> Response:
        user = web.page_user(request)
        with transaction(web.sessions) as session:
            row = session.get(Probe, probe_id)
            if row is None:
                return web.render(request, "error.html", user, status=404,
                                  message="Not found.", problems=[], back="/")
            presence = list(session.scalars(
                select(PresenceEvent).where(PresenceEvent.probe_id == probe_id)
                .order_by(PresenceEvent.at.desc(), PresenceEvent.id.desc())
                .limit(PRESENCE_HISTORY)))
            results = _probe_results(session, probe_id)
            targets = _run_targets(session, probe_id)
            span = request.query_params.get("history")
            span = span if span in HISTORY_SPANS else DEFAULT_HISTORY
            end = utcnow()
            start = end - HISTORY_SPANS[span]
            samples = _health_samples(session, probe_id, start)
        strips: dict[str, list[Any]] = {}
        for r in reversed(results):  # oldest first, left to right
            strips.setdefault(r.target, []).append(r)
        return web.render(request, "probe.html", user, probe=row, state=presence_of(row),
                          presence=presence, facts=health_facts(row.health),
                          channels=channel_facts(row.health), results=results,
                          strips=strips, run_targets=targets, history=span,
                          history_spans=list(HISTORY_SPANS), samples=len(samples),
                          charts=history_charts(samples, start, end))


def _health_samples(session: Session, probe_id: str, since: dt.datetime) -> list[Any]:
    return list(session.execute(
        select(HealthSample.at, HealthSample.line_state, HealthSample.line_volts,
               HealthSample.signal_dbm, HealthSample.operator, HealthSample.access_technology,
               HealthSample.outbox_count)
        .where(HealthSample.probe_id == probe_id, HealthSample.at >= since)
        .order_by(HealthSample.at)))


def history_charts(samples: list[Any], start: dt.datetime, end: dt.datetime
                   ) -> dict[str, HistoryChart]:
    """The probe page's time charts: line voltage over the line state's bands, the mobile
    signal labelled with the operator it was on, the outbox depth (its peak per bucket: a
    backlog that came and went must not average away)."""
    def network(s: Any) -> str | None:
        if s.operator is None:
            return None
        return s.operator + (f" · {s.access_technology}" if s.access_technology else "")

    return {
        "line": history_chart([(s.at, s.line_volts) for s in samples], start, end,
                              label="line", css="s-volts", unit="V",
                              states=[(s.at, s.line_state) for s in samples]),
        # -113 dBm is CSQ 0, -51 dBm CSQ 31: the axis shows at least a usual stretch of it.
        "signal": history_chart([(s.at, s.signal_dbm) for s in samples], start, end,
                                label="signal", css="s-signal", unit="dBm",
                                texts=[(s.at, network(s)) for s in samples],
                                include=(-105.0, -65.0)),
        "outbox": history_chart([(s.at, s.outbox_count) for s in samples], start, end,
                                label="outbox", css="s-outbox", unit="", reduce="max"),
    }


def _probe_results(session: Session, probe_id: str) -> list[Any]:
    return list(session.execute(
        select(Result.id, Result.target, Result.channel, Result.path, Result.started_at,
               Result.outcome, Result.vote, Result.cause, Result.pdd_ms, Result.answer_ms,
               Result.mos)
        .where(Result.probe_id == probe_id)
        .order_by(Result.started_at.desc(), Result.id.desc()).limit(PROBE_RESULTS)))


def _run_targets(session: Session, probe_id: str) -> list[str]:
    """The targets this probe has called lately: the ones a "run now" makes sense for."""
    return sorted(set(session.scalars(
        select(Result.target).where(Result.probe_id == probe_id,
                                    Result.started_at >= utcnow() - RUN_HORIZON).distinct())))


# =========================================================================== calls


@dataclass(frozen=True)
class Cause:
    code: str
    scope: str | None
    summary: str
    remedy: str


def add_call_routes(router: APIRouter, web: Web) -> None:
    @router.get("/calls/{result_id}")
    def call(request: Request, result_id: str) -> Response:
        user = web.page_user(request)
        lang = web.language(request)
        with transaction(web.sessions) as session:
            result = session.get(Result, result_id)
            recording = session.execute(
                select(Recording.content_type, Recording.size)
                .where(Recording.result_id == result_id)).first()
        if result is None:
            return web.render(request, "error.html", user, status=404, message="Not found.",
                              problems=[], back="/")
        doc = result.document or {}
        analysis = doc.get("analysis") if isinstance(doc.get("analysis"), dict) else None
        duration = _audio_seconds(doc)
        return web.render(
            request, "call.html", user, result=result, doc=doc, analysis=analysis,
            ladder=ladder(doc.get("timeline") or []), recording=recording,
            bands=bands(analysis, duration) if duration else None, duration=duration,
            causes=_causes(doc, lang), measures=measures(doc), checks=checks(doc))


def _audio_seconds(doc: dict[str, Any]) -> float | None:
    """How long the received audio is, by the document (the analysis, else the probe's file);
    the bands and the waveform share this time axis."""
    analysis = doc.get("analysis") or {}
    if isinstance(analysis.get("duration_s"), int | float) and analysis["duration_s"] > 0:
        return float(analysis["duration_s"])
    audio = doc.get("audio") or {}
    if isinstance(audio.get("duration_ms"), int | float) and audio["duration_ms"] > 0:
        return audio["duration_ms"] / 1000
    return None


def _causes(doc: dict[str, Any], lang: str) -> list[Cause]:
    """The probe's causes in the reader's language (the probe wrote them in its own)."""
    out = []
    for c in (doc.get("diagnosis") or {}).get("causes") or []:
        if not isinstance(c, dict) or not isinstance(c.get("code"), str):
            continue
        summary, remedy = describe(c["code"], c.get("evidence") or {}, lang)
        if summary == c["code"]:  # a code this ops does not know: the probe's own words
            summary, remedy = c.get("summary") or c["code"], c.get("remedy") or ""
        out.append(Cause(c["code"], c.get("scope"), summary, remedy))
    return out


# =========================================================================== assets


@cache
def _asset(name: str) -> tuple[bytes, str] | None:
    """A file of ``static/`` (read once) and its ETag; None for anything else."""
    if "/" in name or "\\" in name or name.startswith(".") or not any(
            name.endswith(ext) for ext in STATIC_TYPES):
        return None
    node = resources.files("probe.ops.console") / "static" / name
    if not node.is_file():
        return None
    data = node.read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:16]


def asset_url(name: str) -> str:
    found = _asset(name)
    if found is None:
        raise LookupError(f"no static asset {name!r}")
    return f"/static/{name}?v={found[1]}"  # a new version is a new URL: cache for long


def add_static_routes(router: APIRouter, web: Web) -> None:
    web.env.globals["asset"] = asset_url

    @router.get("/static/{name}")
    def static(name: str, request: Request) -> Response:
        found = _asset(name)
        if found is None:
            raise HTTPException(404, "no such asset")
        data, etag = found
        headers = {"ETag": f'"{etag}"', "Cache-Control": "public, max-age=86400",
                   "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == f'"{etag}"':
            return Response(status_code=304, headers=headers)
        media = STATIC_TYPES[name[name.rindex("."):]]
        return Response(data, media_type=media, headers=headers)
