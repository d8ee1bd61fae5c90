"""The ops HTTP JSON API under ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``), ``/healthz``
and ``/metrics``.

Authentication is ``Authorization: Bearer hp_...`` (an API token) or the ``hp_session`` cookie
that ``POST /api/v1/login`` sets (HttpOnly, SameSite=Strict, Secure over HTTPS).  Roles: a
viewer reads everything and changes nothing; an operator also acknowledges, resolves and
comments incidents, schedules maintenance and sends commands to probes; an admin also manages
users and tokens.  Every change writes the audit log in the same transaction as the change.

The app is stateless: every request reads and writes the database, so any instance can answer
any request.  A command's reply reaches whichever instance consumes it; the requester's instance
polls the ``commands`` row until ingest has appended it.

Forwarded headers (``X-Forwarded-For`` / ``-Proto``) are believed only from the addresses in
``[http] trusted_proxies``; uvicorn's own proxy-header rewriting must therefore be off
(:func:`server_config` does that), or it would believe them from 127.0.0.1 on its own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal, Protocol

import jsonschema
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from probe import __version__
from probe.diagnosis.i18n import LANGUAGES
from probe.ops import auth
from probe.ops.auth import Role
from probe.ops.causes import ALL_CAUSES, describe
from probe.ops.config import NAME_PATTERN, OpsConfig
from probe.ops.console import console_router
from probe.ops.db import (
    ApiToken,
    AuditLog,
    Command,
    Incident,
    IncidentEvent,
    Maintenance,
    PresenceEvent,
    Probe,
    Quarantine,
    Recording,
    Result,
    User,
    transaction,
    utcnow,
)
from probe.ops.incidents import IncidentStateError, change_by_hand, lock_incident
from probe.ops.maintenance import PERIODS, in_maintenance, last_end, windows_between
from probe.ops.metrics import percentile, registry_for
from probe.uplink.commands import SCHEMAS as COMMAND_SCHEMAS

log = logging.getLogger("probe.ops.api")

PREFIX = "/api/v1"
SESSION_COOKIE = "hp_session"
#: Results "belong" to a target's current picture (its sites, channels, latest votes) when they
#: started within this horizon; older ones are history only.
TARGET_HORIZON = dt.timedelta(days=7)
MAX_AVAILABILITY_SPAN = dt.timedelta(days=93)
POLL_S = 0.2

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Lang = Literal[LANGUAGES]  # type: ignore[valid-type]
CommandName = Literal["run", "health", "reload", "silence"]


class Commander(Protocol):
    """Sends a command to a probe over MQTT (``correlation_id`` is the request's Correlation
    Data, and the id of the ``commands`` row the reply is appended to).  Raises
    :class:`ConnectionError` (e.g. :class:`CommandNotSent`) when it cannot hand the command to
    the broker."""

    def send(self, probe_id: str, name: str, payload: dict[str, Any],
             correlation_id: str) -> None: ...


class CommandNotSent(ConnectionError):
    """The commander could not hand the command to the broker."""


@dataclass
class Context:
    config: OpsConfig
    sessions: sessionmaker[Session]
    commander: Commander | None  # None while no broker connection: commands answer 503
    trusted: tuple[str, ...]


@dataclass(frozen=True)
class Principal:
    user_id: int
    name: str
    role: str
    token_id: int
    token_kind: str


# =========================================================================== forwarded headers


@lru_cache(maxsize=64)
def _networks(trusted: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in trusted)


def _is_trusted(address: str, trusted: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in _networks(tuple(trusted)))


def _valid_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def client_address(request: Request, trusted: Sequence[str]) -> str:
    """The client's address: the direct peer, or — when the peer is a trusted proxy — the
    nearest address in ``X-Forwarded-For`` that is not a trusted proxy.  The list is walked from
    the right because only the entries our proxies appended are true; a client can put anything
    on the left."""
    current = request.client.host if request.client else ""
    if not _is_trusted(current, trusted):
        return current
    header = ",".join(request.headers.getlist("x-forwarded-for"))
    for hop in reversed([h.strip() for h in header.split(",") if h.strip()]):
        if not _valid_ip(hop):
            break  # garbage from further left: the last address we could trust is the answer
        current = hop
        if not _is_trusted(hop, trusted):
            break
    return current


def request_is_https(request: Request, trusted: Sequence[str]) -> bool:
    """HTTPS directly, or as a trusted proxy says in ``X-Forwarded-Proto`` (its first value:
    the protocol the client used with the outermost proxy)."""
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else ""
    if not _is_trusted(peer, trusted):
        return False
    proto = request.headers.get("x-forwarded-proto", "")
    return proto.split(",")[0].strip().lower() == "https"


# =========================================================================== models


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class HealthSummary(_Out):
    ok: bool | None = Field(None, description="The probe's own equipment is fine.")
    faults: list[str] = []
    at: str | None = None
    uptime_s: int | None = None
    version: str | None = None
    outbox_count: int | None = Field(None, description="Results waiting on the probe.")
    channels: dict[str, str] = Field({}, description="channel -> worker state")


class ProbeOut(_Out):
    id: str
    site: str | None
    state: Literal["online", "offline", "silent", "unknown"]
    boot: int | None
    status_reason: str | None
    status_at: dt.datetime | None
    first_seen: dt.datetime
    last_result_at: dt.datetime | None
    health_at: dt.datetime | None
    health_summary: HealthSummary | None


class PresenceEventOut(_Out):
    at: dt.datetime
    state: str
    boot: int | None
    reason: str | None


class ProbeDetail(ProbeOut):
    health: dict[str, Any] | None = Field(description="The probe's latest health report.")
    presence: list[PresenceEventOut] = Field(description="Presence history, newest first.")


class VoteOut(_Out):
    probe_id: str
    site: str | None
    channel: str
    path: str
    vote: str
    outcome: str
    met: bool
    cause: str | None
    started_at: dt.datetime
    result_id: str


class IncidentOut(_Out):
    id: int
    key: str
    target: str | None
    scope: str
    subject: str
    state: str
    cause: str
    severity: str
    opened_at: dt.datetime
    updated_at: dt.datetime
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    resolved_at: dt.datetime | None
    resolved_by: str | None
    sites: list[str]
    flapping: bool
    suppressed: str | None


class TargetOut(BaseModel):
    name: str
    sites: list[str]
    channels: list[str]
    votes: list[VoteOut] = Field(description="The latest vote of each (probe, channel).")
    open_incidents: list[IncidentOut]


class Percentiles(BaseModel):
    count: int
    p50: float | None
    p95: float | None


class ChannelAvailability(BaseModel):
    channel: str
    results: int
    met: int
    ratio: float | None


class AvailabilityOut(BaseModel):
    target: str
    from_: dt.datetime = Field(serialization_alias="from")
    to: dt.datetime
    results: int = Field(description="Results counted (outside maintenance).")
    excluded_maintenance: int
    met: int
    ratio: float | None = Field(description="met / results; null without results.")
    by_channel: list[ChannelAvailability]
    pdd_ms: Percentiles
    answer_ms: Percentiles


class ResultOut(_Out):
    id: str
    probe_id: str
    site: str | None
    target: str
    channel: str
    path: str
    started_at: dt.datetime
    received_at: dt.datetime
    outcome: str
    met: bool
    vote: str
    cause: str | None
    verdict: str | None
    pdd_ms: int | None
    answer_ms: int | None
    mos: float | None
    has_recording: bool


class ResultPage(BaseModel):
    items: list[ResultOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page; "
                                                "null on the last page.")


class IncidentEventOut(_Out):
    id: int
    at: dt.datetime
    kind: str
    actor: str | None
    detail: dict[str, Any]


class IncidentDetail(IncidentOut):
    evidence: list[str]
    detail: dict[str, Any]
    summary: str | None = Field(description="The cause's summary, translated.")
    remedy: str | None
    language: str
    events: list[IncidentEventOut] = Field(description="Timeline, oldest first.")


class CommentIn(BaseModel):
    text: str = Field(min_length=1, max_length=4000)


class MaintenanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str | None = Field(None, pattern=NAME_PATTERN, description="null: every target")
    probe_id: str | None = Field(None, pattern=NAME_PATTERN, description="null: every probe")
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    repeat: Literal["none", "daily", "weekly"] = "none"
    until: AwareDatetime | None = Field(None, description="Last repetition starts at or "
                                                          "before this; null: for ever.")
    reason: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _span(self) -> MaintenanceIn:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        period = PERIODS.get(self.repeat)
        if period is not None and self.ends_at - self.starts_at >= period:
            raise ValueError(f"a {self.repeat} window must be shorter than {period}")
        if self.until is not None and self.repeat == "none":
            raise ValueError("until goes with repeat daily or weekly")
        if self.until is not None and self.until < self.starts_at:
            raise ValueError("until must not be before starts_at")
        return self


class MaintenanceOut(_Out):
    id: int
    target: str | None
    probe_id: str | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    repeat: str
    until: dt.datetime | None
    reason: str
    created_by: str | None
    created_at: dt.datetime
    active: bool = Field(description="In force now.")
    last_end: dt.datetime | None = Field(description="End of the last repetition; null: never.")


class CommandOut(_Out):
    id: str
    probe_id: str
    name: str
    payload: dict[str, Any]
    requested_by: str
    sent_at: dt.datetime
    replies: list[dict[str, Any]]
    last_reply_at: dt.datetime | None
    complete: bool = Field(description="A final reply arrived (not just \"accepted\").")


class UserOut(_Out):
    id: int
    name: str
    role: str
    disabled: bool
    created_at: dt.datetime


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    password: str = Field(min_length=auth.MIN_PASSWORD, max_length=1024)
    role: Role


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=auth.MIN_PASSWORD, max_length=1024)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    ttl_hours: float | None = Field(None, gt=0, le=24 * 366, description="null: no expiry")
    user: str | None = Field(None, description="Whose token (admin only); default: yours.")


class TokenOut(_Out):
    id: int
    user_id: int
    user_name: str
    name: str
    kind: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked: bool


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown this once, stored only hashed.")


class LoginIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    user: UserOut
    expires_at: dt.datetime


class QuarantineOut(_Out):
    id: int
    received_at: dt.datetime
    topic: str
    probe_id: str | None
    reason: str
    size: int
    preview: str = Field(description="The first 200 bytes, non-printables escaped.")


class AuditOut(_Out):
    id: int
    at: dt.datetime
    user_name: str
    action: str
    object: str
    detail: dict[str, Any]
    remote_addr: str | None


# =========================================================================== dependencies


def get_context(request: Request) -> Context:
    return request.app.state.ops


Ctx = Annotated[Context, Depends(get_context)]
_bearer = HTTPBearer(auto_error=False, description="An API token: hp_...")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                       description="The session cookie POST /api/v1/login sets.")


def current_principal(ctx: Ctx,
                      bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                      cookie: Annotated[str | None, Depends(_cookie)]) -> Principal:
    plaintext = bearer.credentials if bearer is not None else cookie
    if not plaintext:
        raise HTTPException(401, "authentication required",
                            headers={"WWW-Authenticate": "Bearer"})
    with transaction(ctx.sessions) as session:
        found = auth.find_token(session, plaintext, utcnow())
        if found is None:
            raise HTTPException(401, "invalid, expired or revoked token",
                                headers={"WWW-Authenticate": "Bearer"})
        user, token = found
        return Principal(user.id, user.name, user.role, token.id, token.kind)


def require(minimum: Role) -> Any:
    """A dependency: the principal, when its role is at least ``minimum`` (403 otherwise)."""

    def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not auth.role_at_least(principal.role, minimum):
            raise HTTPException(403, f"needs the {minimum} role")
        return principal

    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def remote(request: Request, ctx: Context) -> str:
    return client_address(request, ctx.trusted)


router = APIRouter(prefix=PREFIX)


# =========================================================================== login


@router.post("/login", response_model=LoginOut, tags=["auth"],
             responses={401: {"description": "wrong name or password"},
                        429: {"description": "too many failed attempts: wait a minute"}})
def login(body: LoginIn, request: Request, response: Response, ctx: Ctx) -> LoginOut:
    """Check the password and set the session cookie."""
    address = remote(request, ctx)
    hours = ctx.config.http.session_hours
    out: LoginOut | None = None
    plaintext = ""
    try:
        with transaction(ctx.sessions) as session:
            user = auth.login(session, body.name, body.password, address,
                              limit=ctx.config.http.login_attempts_per_minute, now=utcnow())
            if user is not None:
                plaintext, token = auth.issue_token(session, user, "console", "session",
                                                    dt.timedelta(hours=hours))
                auth.audit(session, user.name, "login", f"user:{user.name}", {},
                           address)
                out = LoginOut(user=UserOut.model_validate(user), expires_at=token.expires_at)
    except auth.LoginRefused as err:
        raise HTTPException(429, "too many failed login attempts; try again in a minute",
                            headers={"Retry-After": "60"}) from err
    if out is None:  # the failed attempt is committed above: it counts
        raise HTTPException(401, "wrong name or password")
    response.set_cookie(SESSION_COOKIE, plaintext, max_age=int(hours * 3600), path="/",
                        httponly=True, samesite="strict",
                        secure=request_is_https(request, ctx.trusted))
    return out


@router.post("/logout", status_code=204, tags=["auth"])
def logout(request: Request, response: Response, ctx: Ctx,
           cookie: Annotated[str | None, Depends(_cookie)]) -> Response:
    """Revoke the session cookie's token (if any) and clear the cookie."""
    if cookie:
        with transaction(ctx.sessions) as session:
            found = auth.find_token(session, cookie, utcnow())
            if found is not None and found[1].kind == "session":
                found[1].revoked = True
                auth.audit(session, found[0].name, "logout", f"user:{found[0].name}", {},
                           remote(request, ctx))
    out = Response(status_code=204)
    out.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                      secure=request_is_https(request, ctx.trusted))
    return out


@router.get("/me", response_model=UserOut, tags=["auth"])
def me(principal: Viewer, ctx: Ctx) -> UserOut:
    with transaction(ctx.sessions) as session:
        return UserOut.model_validate(session.get(User, principal.user_id))


# =========================================================================== probes


def _presence_state(probe: Probe) -> str:
    if probe.silent:
        return "silent"
    return probe.state if probe.state in ("online", "offline") else "unknown"


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """``doc[key]`` when it is an object, else empty: health is the probe's word, checked."""
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _health_summary(health: dict[str, Any] | None) -> HealthSummary | None:
    if not isinstance(health, dict):
        return None
    status, outbox, versions, channels = (_table(health, key) for key in (
        "status", "outbox", "versions", "channels"))
    return HealthSummary(
        ok=status.get("ok") if isinstance(status.get("ok"), bool) else None,
        faults=[str(f) for f in status.get("faults") or []],
        at=health.get("at") if isinstance(health.get("at"), str) else None,
        uptime_s=health.get("uptime_s") if isinstance(health.get("uptime_s"), int) else None,
        version=versions.get("probe") if isinstance(versions.get("probe"), str) else None,
        outbox_count=outbox.get("count") if isinstance(outbox.get("count"), int) else None,
        channels={str(c): str(v.get("state")) for c, v in channels.items()
                  if isinstance(v, dict)})


def _probe_fields(probe: Probe) -> dict[str, Any]:
    return {"id": probe.id, "site": probe.site, "state": _presence_state(probe),
            "boot": probe.boot, "status_reason": probe.status_reason,
            "status_at": probe.status_at, "first_seen": probe.first_seen,
            "last_result_at": probe.last_result_at, "health_at": probe.health_at,
            "health_summary": _health_summary(probe.health)}


@router.get("/probes", response_model=list[ProbeOut], tags=["probes"])
def list_probes(_: Viewer, ctx: Ctx) -> list[ProbeOut]:
    with transaction(ctx.sessions) as session:
        return [ProbeOut(**_probe_fields(p))
                for p in session.scalars(select(Probe).order_by(Probe.id))]


@router.get("/probes/{probe_id}", response_model=ProbeDetail, tags=["probes"])
def get_probe(probe_id: str, _: Viewer, ctx: Ctx,
              history: Annotated[int, Query(ge=1, le=1000)] = 100) -> ProbeDetail:
    with transaction(ctx.sessions) as session:
        probe = session.get(Probe, probe_id)
        if probe is None:
            raise HTTPException(404, "no such probe")
        events = session.scalars(select(PresenceEvent).where(PresenceEvent.probe_id == probe_id)
                                 .order_by(PresenceEvent.at.desc(), PresenceEvent.id.desc())
                                 .limit(history))
        return ProbeDetail(**_probe_fields(probe), health=probe.health,
                           presence=[PresenceEventOut.model_validate(e) for e in events])


# =========================================================================== targets


def _latest_votes(session: Session, since: dt.datetime) -> dict[str, list[VoteOut]]:
    """target -> the latest result of each of its (probe, channel) since ``since``."""
    latest = (select(Result.target, Result.probe_id, Result.channel,
                     func.max(Result.started_at).label("at"))
              .where(Result.started_at >= since)
              .group_by(Result.target, Result.probe_id, Result.channel).subquery())
    stmt = (select(Result.target, Result.probe_id, Result.site, Result.channel, Result.path,
                   Result.vote, Result.outcome, Result.met, Result.cause, Result.started_at,
                   Result.id)
            .join(latest, and_(Result.target == latest.c.target,
                               Result.probe_id == latest.c.probe_id,
                               Result.channel == latest.c.channel,
                               Result.started_at == latest.c.at))
            .order_by(Result.id))
    votes: dict[tuple[str, str, str], VoteOut] = {}
    for row in session.execute(stmt):  # two results at the same instant: the last id wins
        votes[(row.target, row.probe_id, row.channel)] = VoteOut(
            probe_id=row.probe_id, site=row.site, channel=row.channel, path=row.path,
            vote=row.vote, outcome=row.outcome, met=row.met, cause=row.cause,
            started_at=row.started_at, result_id=row.id)
    by_target: dict[str, list[VoteOut]] = {}
    for (target, _probe, _channel), vote in sorted(votes.items()):
        by_target.setdefault(target, []).append(vote)
    return by_target


@router.get("/targets", response_model=list[TargetOut], tags=["targets"])
def list_targets(_: Viewer, ctx: Ctx) -> list[TargetOut]:
    """Every target configured, reported on in the last 7 days, or with an open incident."""
    with transaction(ctx.sessions) as session:
        votes = _latest_votes(session, utcnow() - TARGET_HORIZON)
        incidents = list(session.scalars(select(Incident).where(Incident.resolved_at.is_(None))
                                         .order_by(Incident.opened_at)))
    names = ({t.name for t in ctx.config.targets} | set(votes)
             | {i.target for i in incidents if i.target})
    return [TargetOut(name=name, sites=sorted({v.site for v in votes.get(name, []) if v.site}),
                      channels=sorted({v.channel for v in votes.get(name, [])}),
                      votes=votes.get(name, []),
                      open_incidents=[IncidentOut.model_validate(i) for i in incidents
                                      if i.target == name])
            for name in sorted(names)]


def _percentiles(values: list[float]) -> Percentiles:
    return Percentiles(count=len(values), p50=percentile(values, 0.5),
                       p95=percentile(values, 0.95))


@router.get("/targets/{name}/availability", response_model=AvailabilityOut, tags=["targets"])
def availability(name: str, _: Viewer, ctx: Ctx,
                 from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
                 to: AwareDatetime | None = None) -> AvailabilityOut:
    """Share of results that met the target's expectations, maintenance excluded; default: the
    last 24 hours.  PDD and time to answer over the same results."""
    end = to or utcnow()
    start = from_ or end - dt.timedelta(hours=24)
    if start >= end:
        raise HTTPException(422, "from must be before to")
    if end - start > MAX_AVAILABILITY_SPAN:
        raise HTTPException(422, f"at most {MAX_AVAILABILITY_SPAN.days} days at once")
    with transaction(ctx.sessions) as session:
        windows = windows_between(session, start, end, name)
        rows = session.execute(
            select(Result.probe_id, Result.channel, Result.started_at, Result.met,
                   Result.pdd_ms, Result.answer_ms)
            .where(Result.target == name, Result.started_at >= start, Result.started_at < end)
        ).all()
    kept = [r for r in rows if not in_maintenance(windows, name, r.probe_id, r.started_at)]
    return AvailabilityOut(
        target=name, from_=start, to=end, results=len(kept),
        excluded_maintenance=len(rows) - len(kept), met=sum(bool(r.met) for r in kept),
        ratio=sum(bool(r.met) for r in kept) / len(kept) if kept else None,
        by_channel=_by_channel(kept),
        pdd_ms=_percentiles([r.pdd_ms for r in kept if r.pdd_ms is not None]),
        answer_ms=_percentiles([r.answer_ms for r in kept if r.answer_ms is not None]))


def _by_channel(rows: Iterable[Any]) -> list[ChannelAvailability]:
    counts: dict[str, list[int]] = {}
    for r in rows:
        c = counts.setdefault(r.channel, [0, 0])
        c[0] += bool(r.met)
        c[1] += 1
    return [ChannelAvailability(channel=ch, results=n, met=m, ratio=m / n)
            for ch, (m, n) in sorted(counts.items())]


# =========================================================================== results


def _encode_cursor(started_at: dt.datetime, result_id: str) -> str:
    raw = json.dumps([started_at.isoformat(), result_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, result_id = json.loads(raw)
        started_at = dt.datetime.fromisoformat(at)
    except (ValueError, TypeError, binascii.Error) as err:
        raise HTTPException(422, "invalid cursor") from err
    if started_at.tzinfo is None or not isinstance(result_id, str):
        raise HTTPException(422, "invalid cursor")
    return started_at, result_id


@router.get("/results", response_model=ResultPage, tags=["results"])
def list_results(_: Viewer, ctx: Ctx, target: str | None = None, probe: str | None = None,
                 channel: str | None = None, outcome: str | None = None,
                 since: AwareDatetime | None = None, until: AwareDatetime | None = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 cursor: str | None = None) -> ResultPage:
    """Newest first, keyset-paged on (started_at, id): a page never repeats or skips a result
    when new ones arrive between requests."""
    has_recording = Recording.result_id.is_not(None).label("has_recording")
    stmt = (select(Result.id, Result.probe_id, Result.site, Result.target, Result.channel,
                   Result.path, Result.started_at, Result.received_at, Result.outcome,
                   Result.met, Result.vote, Result.cause, Result.verdict, Result.pdd_ms,
                   Result.answer_ms, Result.mos, has_recording)
            .outerjoin(Recording, Recording.result_id == Result.id))
    for column, value in ((Result.target, target), (Result.probe_id, probe),
                          (Result.channel, channel), (Result.outcome, outcome)):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(Result.started_at >= since)
    if until is not None:
        stmt = stmt.where(Result.started_at < until)
    if cursor is not None:
        at, last_id = _decode_cursor(cursor)
        stmt = stmt.where(or_(Result.started_at < at,
                              and_(Result.started_at == at, Result.id < last_id)))
    stmt = stmt.order_by(Result.started_at.desc(), Result.id.desc()).limit(limit + 1)
    with transaction(ctx.sessions) as session:
        rows = session.execute(stmt).all()
    items = [ResultOut.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return ResultPage(items=items, next_cursor=_encode_cursor(items[-1].started_at, items[-1].id)
                      if more else None)


@router.get("/results/{result_id}", response_model=dict[str, Any], tags=["results"])
def get_result(result_id: str, _: Viewer, ctx: Ctx) -> dict[str, Any]:
    """The result document as the probe published it (``probe/schema/result-v1.json``)."""
    with transaction(ctx.sessions) as session:
        document = session.scalar(select(Result.document).where(Result.id == result_id))
    if document is None:
        raise HTTPException(404, "no such result")
    return document


@router.get("/results/{result_id}/recording", tags=["results"],
            responses={200: {"content": {"audio/*": {}}, "description": "The recording."},
                       404: {"description": "no recording for this result"}})
def get_recording(result_id: str, _: Viewer, ctx: Ctx) -> Response:
    with transaction(ctx.sessions) as session:
        recording = session.get(Recording, result_id)
        if recording is None:
            raise HTTPException(404, "no recording for this result")
        data, content_type = recording.data, recording.content_type
    # The type comes from a probe: anything but audio is served as opaque bytes, so a recording
    # cannot become a page running script on the console's origin.
    media_type = content_type if content_type.startswith("audio/") else "application/octet-stream"
    return Response(data, media_type=media_type,
                    headers={"X-Content-Type-Options": "nosniff",
                             "Content-Security-Policy": "sandbox",
                             "Content-Disposition": f'inline; filename="{result_id}"'})


# =========================================================================== incidents


def _explain(incident: Incident, language: str) -> tuple[str | None, str | None]:
    """The cause's summary and remedy in ``language`` (the probe's causes and ops' own), filled
    from the incident's detail as notifications fill them."""
    if incident.cause not in ALL_CAUSES:
        return None, None
    return describe(incident.cause, incident.detail or {}, language)


def _incident_detail(session: Session, incident: Incident, language: str) -> IncidentDetail:
    events = session.scalars(select(IncidentEvent).where(IncidentEvent.incident_id == incident.id)
                             .order_by(IncidentEvent.at, IncidentEvent.id))
    summary, remedy = _explain(incident, language)
    return IncidentDetail(**IncidentOut.model_validate(incident).model_dump(),
                          evidence=list(incident.evidence or []), detail=incident.detail or {},
                          summary=summary, remedy=remedy, language=language,
                          events=[IncidentEventOut.model_validate(e) for e in events])


@router.get("/incidents", response_model=list[IncidentOut], tags=["incidents"])
def list_incidents(_: Viewer, ctx: Ctx,
                   state: Literal["open", "acknowledged", "resolved", "all"] = "all",
                   target: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[IncidentOut]:
    """Newest first."""
    stmt = select(Incident).order_by(Incident.opened_at.desc(), Incident.id.desc()).limit(limit)
    if state != "all":
        stmt = stmt.where(Incident.state == state)
    if target is not None:
        stmt = stmt.where(Incident.target == target)
    with transaction(ctx.sessions) as session:
        return [IncidentOut.model_validate(i) for i in session.scalars(stmt)]


@router.get("/incidents/{incident_id}", response_model=IncidentDetail, tags=["incidents"])
def get_incident(incident_id: int, _: Viewer, ctx: Ctx, lang: Lang | None = None
                 ) -> IncidentDetail:
    with transaction(ctx.sessions) as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise HTTPException(404, "no such incident")
        return _incident_detail(session, incident, lang or ctx.config.ops.language)


def _incident_change(ctx: Ctx, request: Request, principal: Principal, incident_id: int,
                     kind: str, detail: dict[str, Any]
                     ) -> IncidentDetail:
    """Move an incident (``kind``: acknowledged / resolved / comment) with its event and audit
    row, all in one transaction; 409 when its state does not allow it (incidents.BY_HAND)."""
    now = utcnow()
    with transaction(ctx.sessions) as session:
        incident = lock_incident(session, incident_id)
        if incident is None:
            raise HTTPException(404, "no such incident")
        try:
            change_by_hand(session, ctx.config, incident, kind, principal.name, now, detail)
        except IncidentStateError as err:
            raise HTTPException(409, str(err)) from err
        auth.audit(session, principal.name, f"incident.{kind}", f"incident:{incident.id}",
                   detail, remote(request, ctx))
        session.flush()
        return _incident_detail(session, incident, ctx.config.ops.language)


@router.post("/incidents/{incident_id}/ack", response_model=IncidentDetail, tags=["incidents"],
             responses={409: {"description": "not open"}})
def acknowledge(incident_id: int, request: Request, principal: Operator, ctx: Ctx
                ) -> IncidentDetail:
    """Someone is on it.  Notifications and correlation go on as before."""
    return _incident_change(ctx, request, principal, incident_id, "acknowledged", {})


@router.post("/incidents/{incident_id}/resolve", response_model=IncidentDetail,
             tags=["incidents"], responses={409: {"description": "already resolved"}})
def resolve(incident_id: int, request: Request, principal: Operator, ctx: Ctx
            ) -> IncidentDetail:
    """Resolve by hand (notified as resolved; if the fault persists, correlation opens a new
    incident)."""
    return _incident_change(ctx, request, principal, incident_id, "resolved", {})


@router.post("/incidents/{incident_id}/comments", response_model=IncidentDetail,
             status_code=201, tags=["incidents"])
def comment(incident_id: int, body: CommentIn, request: Request, principal: Operator,
            ctx: Ctx) -> IncidentDetail:
    return _incident_change(ctx, request, principal, incident_id, "comment",
                            {"text": body.text})


# =========================================================================== maintenance


def _maintenance_out(row: Maintenance, now: dt.datetime) -> MaintenanceOut:
    return MaintenanceOut(
        id=row.id, target=row.target, probe_id=row.probe_id, starts_at=row.starts_at,
        ends_at=row.ends_at, repeat=row.repeat, until=row.until, reason=row.reason,
        created_by=row.created_by, created_at=row.created_at,
        active=in_maintenance([row], row.target, row.probe_id, now), last_end=last_end(row))


@router.get("/maintenance", response_model=list[MaintenanceOut], tags=["maintenance"])
def list_maintenance(_: Viewer, ctx: Ctx, include_past: bool = False) -> list[MaintenanceOut]:
    """Windows that are in force or to come (``include_past``: finished ones too)."""
    now = utcnow()
    with transaction(ctx.sessions) as session:
        rows = session.scalars(select(Maintenance).order_by(Maintenance.starts_at.desc()))
        out = [_maintenance_out(r, now) for r in rows]
    return [m for m in out if include_past or m.last_end is None or m.last_end > now]


@router.post("/maintenance", response_model=MaintenanceOut, status_code=201,
             tags=["maintenance"])
def create_maintenance(body: MaintenanceIn, request: Request, principal: Operator, ctx: Ctx
                       ) -> MaintenanceOut:
    now = utcnow()
    with transaction(ctx.sessions) as session:
        row = Maintenance(**body.model_dump(), created_by=principal.name, created_at=now)
        session.add(row)
        session.flush()
        auth.audit(session, principal.name, "maintenance.create", f"maintenance:{row.id}",
                   body.model_dump(mode="json"), remote(request, ctx))
        return _maintenance_out(row, now)


@router.delete("/maintenance/{maintenance_id}", status_code=204, tags=["maintenance"])
def delete_maintenance(maintenance_id: int, request: Request, principal: Operator, ctx: Ctx
                       ) -> Response:
    with transaction(ctx.sessions) as session:
        row = session.get(Maintenance, maintenance_id)
        if row is None:
            raise HTTPException(404, "no such maintenance window")
        detail = MaintenanceIn.model_construct(
            **{k: getattr(row, k) for k in MaintenanceIn.model_fields}).model_dump(mode="json")
        session.delete(row)
        auth.audit(session, principal.name, "maintenance.delete", f"maintenance:{row.id}",
                   detail, remote(request, ctx))
    return Response(status_code=204)


# =========================================================================== commands


def _complete(replies: list[dict[str, Any]]) -> bool:
    """A final reply: a refusal, or an ``ok`` that is not merely ``accepted`` (a run's first
    reply; its result follows when the call has ended)."""
    return any(r.get("ok") is False or (r.get("ok") is True and not r.get("accepted"))
               for r in replies if isinstance(r, dict))


def _command_out(row: Command) -> CommandOut:
    return CommandOut(id=row.id, probe_id=row.probe_id, name=row.name, payload=row.payload,
                      requested_by=row.requested_by, sent_at=row.sent_at,
                      replies=list(row.replies or []), last_reply_at=row.last_reply_at,
                      complete=_complete(list(row.replies or [])))


def _load_command(ctx: Context, command_id: str) -> CommandOut | None:
    with transaction(ctx.sessions) as session:
        row = session.get(Command, command_id)
        return None if row is None else _command_out(row)


def _record_command(ctx: Context, command_id: str, probe_id: str, name: str,
                    payload: dict[str, Any], principal: Principal, address: str) -> None:
    """The row exists (committed) before the command leaves, so a reply arriving at once — at
    any instance — finds it."""
    with transaction(ctx.sessions) as session:
        if session.get(Probe, probe_id) is None:
            raise HTTPException(404, "no such probe")
        session.add(Command(id=command_id, probe_id=probe_id, name=name, payload=payload,
                            requested_by=principal.name, sent_at=utcnow(), replies=[]))
        auth.audit(session, principal.name, f"command.{name}", f"probe:{probe_id}",
                   {"command_id": command_id, "payload": payload}, address)


def _note_not_sent(ctx: Context, command_id: str, reason: str) -> None:
    with transaction(ctx.sessions) as session:
        row = session.get(Command, command_id)
        if row is not None:
            row.replies = [*row.replies, {"ok": False, "reason": reason, "source": "ops"}]
            row.last_reply_at = utcnow()


async def _await_reply(ctx: Context, command_id: str, wait_s: float) -> CommandOut:
    deadline = time.monotonic() + wait_s
    while True:
        out = await run_in_threadpool(_load_command, ctx, command_id)
        if out is None:  # deleted meanwhile (retention): nothing more to wait for
            raise HTTPException(404, "the command is gone")
        left = deadline - time.monotonic()
        if out.complete or left <= 0:
            return out
        await asyncio.sleep(min(POLL_S, left))


@router.post("/probes/{probe_id}/commands/{name}", response_model=CommandOut, tags=["commands"],
             responses={202: {"model": CommandOut, "description": "sent; no final reply yet"},
                        503: {"description": "no broker connection"}})
async def send_command(probe_id: str, name: CommandName, request: Request, response: Response,
                       principal: Operator, ctx: Ctx,
                       payload: Annotated[dict[str, Any] | None, Body()] = None,
                       wait_s: Annotated[float, Query(ge=0, le=60)] = 10) -> CommandOut:
    """Send ``name`` to the probe and wait up to ``wait_s`` for its final reply: 200 with it,
    or 202 with what came so far (read on with ``GET /api/v1/commands/{id}``)."""
    commander = ctx.commander
    if commander is None:
        raise HTTPException(503, "not connected to the broker: commands cannot be sent")
    args = payload or {}
    try:
        jsonschema.validate(args, COMMAND_SCHEMAS[name])
    except jsonschema.ValidationError as err:
        raise HTTPException(422, f"invalid {name} payload: {err.message}") from err
    command_id = str(uuid.uuid4())
    await run_in_threadpool(_record_command, ctx, command_id, probe_id, name, args, principal,
                            remote(request, ctx))
    try:
        await run_in_threadpool(commander.send, probe_id, name, args, command_id)
    except ConnectionError as err:
        log.warning("command %s to %s not sent: %s", name, probe_id, err)
        await run_in_threadpool(_note_not_sent, ctx, command_id, f"not sent: {err}")
        raise HTTPException(503, f"the command was not sent: {err}") from err
    out = await _await_reply(ctx, command_id, wait_s)
    response.status_code = 200 if out.complete else 202
    return out


@router.get("/commands/{command_id}", response_model=CommandOut, tags=["commands"])
def get_command(command_id: str, _: Viewer, ctx: Ctx) -> CommandOut:
    out = _load_command(ctx, command_id)
    if out is None:
        raise HTTPException(404, "no such command")
    return out


# =========================================================================== users, tokens


@router.get("/users", response_model=list[UserOut], tags=["admin"])
def list_users(_: Admin, ctx: Ctx) -> list[UserOut]:
    with transaction(ctx.sessions) as session:
        users = session.scalars(select(User).order_by(User.name))
        return [UserOut.model_validate(u) for u in users]


@router.post("/users", response_model=UserOut, status_code=201, tags=["admin"],
             responses={409: {"description": "the name is taken"}})
def create_user(body: UserIn, request: Request, principal: Admin, ctx: Ctx) -> UserOut:
    with transaction(ctx.sessions) as session:
        try:
            user = auth.create_user(session, body.name, body.password, body.role)
        except auth.AuthError as err:
            raise HTTPException(409, str(err)) from err
        auth.audit(session, principal.name, "user.create", f"user:{user.name}",
                   {"role": user.role}, remote(request, ctx))
        return UserOut.model_validate(user)


@router.patch("/users/{user_id}", response_model=UserOut, tags=["admin"],
              responses={409: {"description": "would leave no enabled admin"}})
def update_user(user_id: int, body: UserPatch, request: Request, principal: Admin, ctx: Ctx
                ) -> UserOut:
    """Change a user's role, disable or enable them, or set a password.  Disabling or a new
    password revokes all their tokens (sessions included)."""
    with transaction(ctx.sessions) as session:
        user = session.get(User, user_id)
        if user is None:
            raise HTTPException(404, "no such user")
        if body.role is not None:
            user.role = body.role
        if body.disabled is not None:
            user.disabled = body.disabled
        if body.password is not None:
            auth.set_password(user, body.password)
        if body.disabled or body.password is not None:
            auth.revoke_tokens(session, user.id)
        session.flush()
        if not session.scalar(select(func.count()).select_from(User).where(
                User.role == "admin", User.disabled.is_(False))):
            raise HTTPException(409, "this would leave no enabled admin")
        auth.audit(session, principal.name, "user.update", f"user:{user.name}",
                   body.model_dump(exclude={"password"}, exclude_none=True)
                   | ({"password": "changed"} if body.password is not None else {}),
                   remote(request, ctx))
        return UserOut.model_validate(user)


def _token_out(row: ApiToken, user_name: str) -> TokenOut:
    return TokenOut(id=row.id, user_id=row.user_id, user_name=user_name, name=row.name,
                    kind=row.kind, created_at=row.created_at, expires_at=row.expires_at,
                    last_used_at=row.last_used_at, revoked=row.revoked)


@router.get("/tokens", response_model=list[TokenOut], tags=["auth"])
def list_tokens(principal: Viewer, ctx: Ctx) -> list[TokenOut]:
    """Your tokens; an admin's: everyone's."""
    stmt = (select(ApiToken, User.name).join(User, User.id == ApiToken.user_id)
            .order_by(ApiToken.id))
    if principal.role != "admin":
        stmt = stmt.where(ApiToken.user_id == principal.user_id)
    with transaction(ctx.sessions) as session:
        return [_token_out(row, name) for row, name in session.execute(stmt)]


@router.post("/tokens", response_model=TokenCreated, status_code=201, tags=["auth"])
def create_token(body: TokenIn, request: Request, principal: Operator, ctx: Ctx
                 ) -> TokenCreated:
    """A new API token (for yourself; an admin: for anyone), returned this once."""
    owner_name = body.user or principal.name
    if owner_name != principal.name and principal.role != "admin":
        raise HTTPException(403, "only an admin makes tokens for others")
    ttl = None if body.ttl_hours is None else dt.timedelta(hours=body.ttl_hours)
    with transaction(ctx.sessions) as session:
        owner = session.scalar(select(User).where(User.name == owner_name))
        if owner is None or owner.disabled:
            raise HTTPException(404, "no such (enabled) user")
        plaintext, row = auth.issue_token(session, owner, body.name, "api", ttl)
        auth.audit(session, principal.name, "token.create", f"token:{row.id}",
                   {"user": owner.name, "name": body.name, "ttl_hours": body.ttl_hours},
                   remote(request, ctx))
        return TokenCreated(**_token_out(row, owner.name).model_dump(), token=plaintext)


@router.delete("/tokens/{token_id}", status_code=204, tags=["auth"])
def revoke_token(token_id: int, request: Request, principal: Viewer, ctx: Ctx) -> Response:
    """Revoke a token: your own (any role), or anyone's (admin)."""
    with transaction(ctx.sessions) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise HTTPException(404, "no such token")
        if row.user_id != principal.user_id and principal.role != "admin":
            raise HTTPException(403, "not your token")
        row.revoked = True
        auth.audit(session, principal.name, "token.revoke", f"token:{row.id}",
                   {"name": row.name}, remote(request, ctx))
    return Response(status_code=204)


# =========================================================================== quarantine, audit


def _escaped(payload: bytes) -> str:
    """Bytes as readable text: UTF-8 where it is, ``\\xNN`` for bytes that are not, escapes for
    control characters, and a doubled backslash so the result is unambiguous."""
    out = []
    for char in payload.decode("utf-8", "surrogateescape"):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


@router.get("/quarantine", response_model=list[QuarantineOut], tags=["admin"])
def list_quarantine(_: Operator, ctx: Ctx,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[QuarantineOut]:
    """Messages ingest refused, newest first."""
    with transaction(ctx.sessions) as session:
        rows = session.scalars(select(Quarantine)
                               .order_by(Quarantine.received_at.desc(), Quarantine.id.desc())
                               .limit(limit))
        return [QuarantineOut(id=q.id, received_at=q.received_at, topic=q.topic,
                              probe_id=q.probe_id, reason=q.reason, size=q.size,
                              preview=_escaped(q.payload[:200])) for q in rows]


@router.get("/audit", response_model=list[AuditOut], tags=["admin"])
def list_audit(_: Admin, ctx: Ctx, limit: Annotated[int, Query(ge=1, le=1000)] = 200
               ) -> list[AuditOut]:
    """The audit log, newest first."""
    with transaction(ctx.sessions) as session:
        rows = session.scalars(select(AuditLog).order_by(AuditLog.id.desc()).limit(limit))
        return [AuditOut.model_validate(a) for a in rows]


# =========================================================================== the app


def _healthz(ctx: Context) -> JSONResponse:
    try:
        with transaction(ctx.sessions) as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        log.error("healthz: database unreachable: %s", err)
        return JSONResponse({"ok": False, "error": "database unreachable"}, status_code=503)
    return JSONResponse({"ok": True})


def create_app(config: OpsConfig, sessions: sessionmaker[Session], *,
               commander: Commander | None = None) -> FastAPI:
    """The API app.  ``commander`` may be set later (``app.state.ops.commander = ...``) when the
    broker connection comes up, and set back to None when it drops."""
    trusted = tuple(config.http.trusted_proxies)
    try:
        _networks(trusted)
    except ValueError as err:
        raise ValueError(f"http.trusted_proxies: {err}") from err
    app = FastAPI(title="hotline-probe ops", version=__version__,
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=f"{PREFIX}/docs",
                  redoc_url=None)
    app.state.ops = Context(config, sessions, commander, trusted)
    app.include_router(router)
    registry = registry_for(sessions)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return _healthz(app.state.ops)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(console_router(config, sessions))
    return app


def server_config(app: FastAPI, config: OpsConfig, **overrides: Any) -> Any:
    """The uvicorn configuration for ``app`` under ``[http]``: TLS when configured, and
    uvicorn's proxy-header handling off (:func:`client_address` decides whom to believe)."""
    import uvicorn

    http = config.http
    options: dict[str, Any] = {
        "host": http.listen, "port": http.port, "proxy_headers": False, "server_header": False,
        "ssl_certfile": str(http.tls_cert_file) if http.tls_cert_file else None,
        "ssl_keyfile": str(http.tls_key_file) if http.tls_key_file else None,
        "lifespan": "off", "log_level": "info",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
