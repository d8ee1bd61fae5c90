"""The console's routes: login, fleet (with its live stream), incidents and maintenance."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from probe.ops import auth
from probe.ops.causes import describe
from probe.ops.console.fleet import (
    CHANNEL_MARK,
    DEFAULT_ROUNDS,
    MAX_ROUNDS,
    Filters,
    build_grid,
    change_marks,
    horizon,
    presence_of,
)
from probe.ops.console.web import (
    LOGIN_CSRF_COOKIE,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    User,
    Web,
    new_login_csrf,
    safe_next,
    same,
)
from probe.ops.db import (
    Incident,
    IncidentEvent,
    Maintenance,
    Result,
    transaction,
    utcnow,
)
from probe.ops.incidents import IncidentStateError, change_by_hand, lock_incident

SSE_POLL_S = 2.0
SSE_KEEPALIVE_S = 15.0
#: A stream ends after this and the browser reconnects (EventSource does it by itself): the
#: session is checked again, and no connection lives for ever behind a proxy.
SSE_LIFETIME_S = 300.0
PAST_INCIDENTS = 200
FormStr = Annotated[str, Form()]
OptionalForm = Annotated[str | None, Form()]


def see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=SECURITY_HEADERS)


# =========================================================================== login


def add_login_routes(router: APIRouter, web: Web) -> None:
    @router.get("/login")
    def login_form(request: Request, next: str | None = None) -> Response:
        if web.user(request) is not None:
            return see_other(safe_next(next))
        return _login_page(web, request, next, None, 200)

    @router.post("/login")
    def login_post(request: Request, name: FormStr, password: FormStr, csrf: FormStr,
                   next: OptionalForm = None) -> Response:
        if not same(csrf, request.cookies.get(LOGIN_CSRF_COOKIE)):
            return _login_page(web, request, next, "The form expired: please try again.", 403)
        address = web.remote(request)
        plaintext = None
        try:
            with transaction(web.sessions) as session:
                user = auth.login(session, name[:100], password[:1024], address,
                                  limit=web.config.http.login_attempts_per_minute,
                                  now=utcnow())
                if user is not None:
                    plaintext, _row = auth.issue_token(
                        session, user, "console", "session",
                        dt.timedelta(hours=web.config.http.session_hours))
                    auth.audit(session, user.name, "login", f"user:{user.name}", {}, address)
        except auth.LoginRefused:
            return _login_page(web, request, next, "Too many failed attempts: wait a minute.",
                               429)
        if plaintext is None:  # the failed attempt is committed: it counts towards the limit
            return _login_page(web, request, next, "Wrong name or password.", 401)
        response = see_other(safe_next(next))
        web.set_session(request, response, plaintext)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @router.post("/logout")
    def logout(request: Request, csrf: FormStr) -> Response:
        user = web.user(request)
        if user is not None and same(csrf, user.csrf):
            with transaction(web.sessions) as session:
                found = auth.find_token(session, user.token, utcnow())
                if found is not None and found[1].kind == "session":
                    found[1].revoked = True
                    auth.audit(session, user.name, "logout", f"user:{user.name}", {},
                               web.remote(request))
        response = see_other("/login")
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=web.https(request))
        return response


def _login_page(web: Web, request: Request, next: str | None, error: str | None,
                status: int) -> Response:
    token = new_login_csrf()
    response = web.render(request, "login.html", None, status=status, csrf=token,
                          next=safe_next(next), error=error)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path="/login", httponly=True,
                        samesite="strict", secure=web.https(request))
    return response


# =========================================================================== fleet


def _filters(request: Request) -> Filters:
    q = request.query_params

    def text(key: str) -> str | None:
        value = (q.get(key) or "").strip()
        return value[:200] or None

    def number(key: str, default: int) -> int:
        try:
            return int(q.get(key) or default)
        except ValueError:
            return default

    channel = text("channel")
    return Filters(target=text("target"), site=text("site"),
                   channel=channel if channel in CHANNEL_MARK else None,
                   carrier=text("carrier"),
                   rounds=min(max(number("rounds", DEFAULT_ROUNDS), 1), MAX_ROUNDS),
                   page=min(max(number("page", 1), 1), 1_000_000))


def add_fleet_routes(router: APIRouter, web: Web) -> None:
    web.env.globals["presence"] = presence_of
    def grid_context(request: Request) -> dict[str, Any]:
        filters = _filters(request)
        with transaction(web.sessions) as session:
            grid = build_grid(session, web.config, filters, utcnow())
        return {"grid": grid, "fragment": "/fleet/grid?" + urlencode(
            {**filters.query(), "lang": web.language(request)})}

    @router.get("/")
    def fleet(request: Request) -> Response:
        user = web.page_user(request)
        return web.render(request, "fleet.html", user, **grid_context(request))

    @router.get("/fleet/grid")
    def fleet_grid(request: Request) -> Response:
        user = web.user(request)
        if user is None:
            return Response(status_code=401)  # the page reloads and meets the login form
        return web.render(request, "fleet_grid.html", user, **grid_context(request))

    @router.get("/events")
    async def events(request: Request) -> Response:
        user = await run_in_threadpool(web.user, request)
        if user is None:
            return Response(status_code=401)
        return StreamingResponse(_stream(web, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})


def _marks(web: Web) -> dict[str, Any]:
    with transaction(web.sessions) as session:
        return change_marks(session, utcnow() - horizon(web.config, MAX_ROUNDS))


async def _stream(web: Web, request: Request) -> AsyncIterator[str]:
    """Server-sent events: ``change`` with the new marks whenever results, incidents or
    presence changed (polled every :data:`SSE_POLL_S`: the database is the only thing every
    instance shares, so any instance can serve any stream)."""
    last = await run_in_threadpool(_marks, web)
    yield f"retry: 3000\nevent: hello\ndata: {json.dumps(last)}\n\n"
    started = sent = time.monotonic()
    while time.monotonic() - started < SSE_LIFETIME_S:
        await asyncio.sleep(SSE_POLL_S)
        if await request.is_disconnected():
            return
        marks = await run_in_threadpool(_marks, web)
        if marks != last:
            last, sent = marks, time.monotonic()
            yield f"event: change\ndata: {json.dumps(marks)}\n\n"
        elif time.monotonic() - sent >= SSE_KEEPALIVE_S:
            sent = time.monotonic()
            yield ": keep-alive\n\n"


# =========================================================================== incidents


def add_incident_routes(router: APIRouter, web: Web) -> None:
    @router.get("/incidents")
    def incidents(request: Request, target: str | None = None) -> Response:
        user = web.page_user(request)
        lang = web.language(request)
        stmt = select(Incident).order_by(Incident.opened_at.desc(), Incident.id.desc())
        if target:
            stmt = stmt.where(Incident.target == target)
        with transaction(web.sessions) as session:
            current = list(session.scalars(stmt.where(Incident.resolved_at.is_(None))))
            past = list(session.scalars(stmt.where(Incident.resolved_at.is_not(None))
                                        .limit(PAST_INCIDENTS)))
        return web.render(request, "incidents.html", user, current=current, past=past,
                          summary=lambda i: describe(i.cause, i.detail or {}, lang)[0])

    @router.get("/incidents/{incident_id}")
    def incident(request: Request, incident_id: int) -> Response:
        return incident_page(web, request, web.page_user(request), incident_id)

    @router.post("/incidents/{incident_id}/ack")
    def acknowledge(request: Request, incident_id: int, csrf: OptionalForm = None
                    ) -> Response:
        return _change(web, request, incident_id, csrf, "acknowledged", {})

    @router.post("/incidents/{incident_id}/resolve")
    def resolve(request: Request, incident_id: int, csrf: OptionalForm = None) -> Response:
        return _change(web, request, incident_id, csrf, "resolved", {})

    @router.post("/incidents/{incident_id}/comment")
    def comment(request: Request, incident_id: int, text: FormStr, csrf: OptionalForm = None
                ) -> Response:
        text = text.strip()[:4000]
        if not text:
            raise HTTPException(422, "an empty comment")
        return _change(web, request, incident_id, csrf, "comment", {"text": text})

    @router.post("/maintenance")
    def add_maintenance(request: Request, starts_at: FormStr, ends_at: FormStr,
                        csrf: OptionalForm = None, target: OptionalForm = None,
                        probe_id: OptionalForm = None, repeat: OptionalForm = "none",
                        until: OptionalForm = None, reason: OptionalForm = "",
                        next: OptionalForm = None) -> Response:
        user = web.operator(request, csrf)
        fields = {"target": target or None, "probe_id": probe_id or None,
                  "starts_at": starts_at, "ends_at": ends_at, "repeat": repeat or "none",
                  "until": until or None, "reason": reason or ""}
        try:
            body = _maintenance_in(fields)
        except ValidationError as err:
            problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                        for e in err.errors(include_url=False)]
            return web.render(request, "error.html", user, status=422,
                              message="Invalid request.", problems=problems,
                              back=safe_next(next))
        with transaction(web.sessions) as session:
            row = Maintenance(**body.model_dump(), created_by=user.name, created_at=utcnow())
            session.add(row)
            session.flush()
            auth.audit(session, user.name, "maintenance.create", f"maintenance:{row.id}",
                       body.model_dump(mode="json"), web.remote(request))
        return see_other(safe_next(next))


def _maintenance_in(fields: dict[str, Any]) -> Any:
    """The API's own model validates the window (span, repeat, until): one set of rules."""
    from probe.ops.api import MaintenanceIn

    for key in ("starts_at", "ends_at", "until"):
        fields[key] = _utc_local(fields[key])
    return MaintenanceIn(**fields)


def _utc_local(value: str | None) -> str | None:
    """``<input type=datetime-local>`` sends no zone; the form says its times are UTC."""
    if not value:
        return None
    return value if value.endswith("Z") or "+" in value[10:] else f"{value}Z"


def _change(web: Web, request: Request, incident_id: int, csrf: str | None, kind: str,
            detail: dict[str, Any]) -> Response:
    """An incident acknowledged / resolved / commented, as ``POST /api/v1/incidents/...``
    does it: the incident's lock, its event (the incident engine's own resolve, which also
    notifies), an audit row, one transaction."""
    user = web.operator(request, csrf)
    now = utcnow()
    with transaction(web.sessions) as session:
        incident = lock_incident(session, incident_id)
        if incident is None:
            raise HTTPException(404, "no such incident")
        try:
            change_by_hand(session, web.config, incident, kind, user.name, now, detail)
            conflict = None
        except IncidentStateError as err:
            conflict = str(err)
        else:
            auth.audit(session, user.name, f"incident.{kind}", f"incident:{incident.id}",
                       detail, web.remote(request))
    if conflict is not None:  # someone was quicker: show them the incident as it is now
        return incident_page(web, request, user, incident_id, error=conflict, status=409)
    return see_other(f"/incidents/{incident_id}")


def incident_page(web: Web, request: Request, user: User, incident_id: int, *,
                  error: str | None = None, status: int = 200) -> Response:
    lang = web.language(request)
    with transaction(web.sessions) as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            return web.render(request, "error.html", user, status=404, message="Not found.",
                              problems=[], back="/incidents")
        events = list(session.scalars(select(IncidentEvent)
                                      .where(IncidentEvent.incident_id == incident_id)
                                      .order_by(IncidentEvent.at, IncidentEvent.id)))
        evidence = list(incident.evidence or [])
        results = {r.id: r for r in session.execute(
            select(Result.id, Result.probe_id, Result.site, Result.channel, Result.path,
                   Result.started_at, Result.outcome, Result.vote, Result.final)
            .where(Result.id.in_(evidence)))} if evidence else {}
    summary, remedy = describe(incident.cause, incident.detail or {}, lang)
    now = utcnow().replace(second=0, microsecond=0)
    probe_scope = incident.scope in ("site", "probe")
    return web.render(request, "incident.html", user, status=status, incident=incident,
                      events=events, evidence=evidence, results=results, summary=summary,
                      remedy=remedy, error=error,
                      window={"target": incident.target or "",
                              "probe_id": incident.subject if probe_scope else "",
                              "starts_at": now.strftime("%Y-%m-%dT%H:%M"),
                              "ends_at": (now + dt.timedelta(hours=1)).strftime(
                                  "%Y-%m-%dT%H:%M")})
