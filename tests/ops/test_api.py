"""The ops HTTP API, /healthz and /metrics on SQLite.  Authentication, cookies, the login rate
limit and forwarded headers go through a real uvicorn on 127.0.0.1; the rest through FastAPI's
TestClient.  Rows are inserted directly, as ingest and the incident engine would."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from probe.ops import auth
from probe.ops.api import client_address, create_app, request_is_https
from probe.ops.config import HttpConfig, OpsConfig
from probe.ops.db import (
    ApiToken,
    AuditLog,
    Command,
    Counter,
    Incident,
    IncidentEvent,
    LoginAttempt,
    Maintenance,
    Notification,
    Probe,
    Quarantine,
    Recording,
    Result,
    User,
    make_engine,
    session_factory,
    transaction,
    upgrade,
    utcnow,
)
from probe.ops.maintenance import in_maintenance
from tests.ops.conftest import served

PASSWORD = "correct horse battery"
T0 = dt.datetime(2025, 3, 3, 12, 0, tzinfo=dt.UTC)  # a Monday


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def sessions(tmp_path: Any) -> Iterator[sessionmaker[Session]]:
    """A migrated SQLite database in the test's directory."""
    engine = make_engine(f"sqlite:///{tmp_path}/ops.sqlite3")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def config(**http: Any) -> OpsConfig:
    return OpsConfig(http=HttpConfig(**http))


def add_user(sessions: sessionmaker[Session], name: str, role: str) -> str:
    """A user with :data:`PASSWORD` and an API token; the token's plaintext."""
    with transaction(sessions) as session:
        user = auth.create_user(session, name, PASSWORD, role)
        return auth.create_token(session, user, f"{name}-token")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def result_row(n: int, *, target: str = "support", probe: str = "p1", channel: str = "sip",
               at: dt.datetime = T0, met: bool = True, pdd: int | None = 800,
               answer: int | None = 3000, mos: float | None = 4.2,
               received_after_s: float = 1.0) -> Result:
    rid = f"00000000-0000-4000-8000-{n:012d}"
    return Result(id=rid, probe_id=probe, site=f"site-{probe}", target=target, channel=channel,
                  path=channel, started_at=at, received_at=at + dt.timedelta(
                      seconds=received_after_s), outcome="answered" if met else "busy",
                  met=met, vote="ok" if met else "fail", cause=None, verdict=None,
                  pdd_ms=pdd, answer_ms=answer, mos=mos,
                  document={"id": rid, "probe_id": probe, "target": target, "n": n})


def add_incident(session: Session, *, key: str = "hotline:support", state: str = "open",
                 cause: str = "hotline.unavailable", severity: str = "down",
                 scope: str = "hotline", resolved: bool = False) -> Incident:
    now = utcnow()
    incident = Incident(key=key, target="support", scope=scope, subject="*", state=state,
                        cause=cause, severity=severity, opened_at=now, updated_at=now,
                        resolved_at=now if resolved else None, sites=["site-p1"],
                        evidence=["503 from p1"], detail={"code": 503,
                                                          "reason": "Service Unavailable"},
                        last_round=1)
    session.add(incident)
    session.flush()
    session.add(IncidentEvent(incident_id=incident.id, at=now, kind="opened", detail={}))
    return incident


@dataclass
class ReplyingCommander:
    """A Commander that answers as a probe and ingest would: from another thread, after a
    delay, by appending to the command's row in the database."""

    sessions: sessionmaker[Session]
    replies: list[dict[str, Any]]
    delay_s: float = 0.3
    sent: list[tuple[str, str, dict[str, Any], str]] = field(default_factory=list)

    def send(self, probe_id: str, name: str, payload: dict[str, Any],
             correlation_id: str) -> None:
        self.sent.append((probe_id, name, payload, correlation_id))
        threading.Thread(target=self._answer, args=(correlation_id,), daemon=True).start()

    def _answer(self, correlation_id: str) -> None:
        for reply in self.replies:
            time.sleep(self.delay_s)
            with transaction(self.sessions) as session:
                row = session.get(Command, correlation_id)
                assert row is not None, "the row must exist before the command leaves"
                row.replies = [*row.replies, reply]
                row.last_reply_at = utcnow()


# --------------------------------------------------------------------------- auth (uvicorn)


def test_login_sets_a_strict_httponly_cookie_and_logout_revokes_it(sessions: Any) -> None:
    add_user(sessions, "alice", "viewer")
    cfg = config()
    with served(create_app(cfg, sessions), cfg) as base, httpx.Client(base_url=base) as client:
        wrong = client.post("/api/v1/login", json={"name": "alice", "password": "nope"})
        assert wrong.status_code == 401
        assert client.get("/api/v1/me").status_code == 401
        ok = client.post("/api/v1/login", json={"name": "alice", "password": PASSWORD})
        assert ok.status_code == 200, ok.text
        assert ok.json()["user"]["role"] == "viewer"
        cookie = ok.headers["set-cookie"].lower()
        assert "hp_session=hp_" in cookie and "httponly" in cookie
        assert "samesite=strict" in cookie and "secure" not in cookie  # plain HTTP
        assert client.get("/api/v1/me").json()["name"] == "alice"
        session_cookie = client.cookies["hp_session"]
        assert client.post("/api/v1/logout").status_code == 204
        again = httpx.get(f"{base}/api/v1/me", cookies={"hp_session": session_cookie})
        assert again.status_code == 401
    with transaction(sessions) as session:
        actions = [a.action for a in session.scalars(select(AuditLog).order_by(AuditLog.id))]
        tokens = session.scalars(select(ApiToken).where(ApiToken.kind == "session")).all()
    assert actions == ["login", "logout"]
    assert [t.revoked for t in tokens] == [True]


def test_eleventh_failed_login_is_refused_even_with_the_right_password(sessions: Any) -> None:
    """Ten failures, split over two instances on one database: the limit is fleet-wide."""
    add_user(sessions, "alice", "operator")
    add_user(sessions, "bob", "operator")
    cfg = config(trusted_proxies=["127.0.0.1"])

    def attempt(base: str, name: str, password: str, addr: str) -> int:
        return httpx.post(f"{base}/api/v1/login", json={"name": name, "password": password},
                          headers={"X-Forwarded-For": addr}).status_code

    with served(create_app(cfg, sessions), cfg) as one, \
            served(create_app(cfg, sessions), cfg) as two:
        for i in range(10):
            assert attempt((one, two)[i % 2], "alice", f"wrong{i}", "10.0.0.1") == 401
        assert attempt(one, "alice", PASSWORD, "10.0.0.1") == 429
        assert attempt(two, "alice", PASSWORD, "10.0.0.2") == 429  # the name is limited
        assert attempt(two, "bob", PASSWORD, "10.0.0.1") == 429  # ... and the address
        assert attempt(one, "bob", PASSWORD, "10.0.0.3") == 200
    with transaction(sessions) as session:
        attempts = session.scalars(select(LoginAttempt)).all()
        login = session.scalars(select(AuditLog).where(AuditLog.action == "login")).one()
    assert len(attempts) == 11  # refused attempts check no password and are not recorded
    assert (login.user_name, login.remote_addr) == ("bob", "10.0.0.3")


def test_forwarded_headers_are_believed_only_from_trusted_proxies(sessions: Any) -> None:
    add_user(sessions, "alice", "viewer")
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    body = {"name": "alice", "password": PASSWORD}
    seen = []
    for trusted in ([], ["127.0.0.0/8"]):
        cfg = config(trusted_proxies=trusted)
        with served(create_app(cfg, sessions), cfg) as base:
            response = httpx.post(f"{base}/api/v1/login", json=body, headers=headers)
        assert response.status_code == 200
        seen.append("secure" in response.headers["set-cookie"].lower())
    with transaction(sessions) as session:
        addrs = [a.remote_addr for a in session.scalars(select(AuditLog).order_by(AuditLog.id))]
    assert addrs == ["127.0.0.1", "203.0.113.9"]
    assert seen == [False, True]


def request_from(peer: str, headers: dict[str, str], scheme: str = "http") -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "scheme": scheme,
                    "query_string": b"", "server": ("ops", 80), "client": (peer, 5000),
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


def test_client_address_walks_forwarded_for_from_the_right() -> None:
    trusted = ("10.0.0.0/8",)
    spoofed = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.0.0.2"}
    assert client_address(request_from("10.0.0.1", spoofed), trusted) == "198.51.100.7"
    assert client_address(request_from("192.0.2.1", spoofed), trusted) == "192.0.2.1"
    assert client_address(request_from("10.0.0.1", {}), trusted) == "10.0.0.1"
    garbage = {"X-Forwarded-For": "not-an-ip, 10.0.0.2"}
    assert client_address(request_from("10.0.0.1", garbage), trusted) == "10.0.0.2"
    proto = {"X-Forwarded-Proto": "https"}
    assert request_is_https(request_from("10.0.0.1", proto), trusted)
    assert not request_is_https(request_from("192.0.2.1", proto), trusted)
    assert request_is_https(request_from("192.0.2.1", {}, scheme="https"), trusted)


# --------------------------------------------------------------------------- roles, tokens


def seed_objects(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """One object of each kind a mutating endpoint acts on; its id by path parameter name."""
    with transaction(sessions) as session:
        session.add(Probe(id="p1", site="site-p1", state="online", first_seen=utcnow()))
        incident = add_incident(session)
        window = Maintenance(target="support", starts_at=T0, ends_at=T0 + dt.timedelta(hours=1))
        session.add(window)
        session.flush()
        admin = session.scalar(select(User).where(User.name == "root"))
        token = session.scalar(select(ApiToken).where(ApiToken.user_id == admin.id))
        return {"incident_id": incident.id, "maintenance_id": window.id, "probe_id": "p1",
                "name": "health", "user_id": admin.id, "token_id": token.id}


def test_a_viewer_can_change_nothing(sessions: Any) -> None:
    """Every mutating operation in the OpenAPI document, so a new endpoint is covered too."""
    viewer = add_user(sessions, "vera", "viewer")
    add_user(sessions, "root", "admin")
    ids = seed_objects(sessions)
    commander = ReplyingCommander(sessions, [{"ok": True}])
    client = TestClient(create_app(config(), sessions, commander=commander))
    spec = client.get("/api/v1/openapi.json").json()
    anyone = {("post", "/api/v1/login"), ("post", "/api/v1/logout")}
    checked = []
    for path, operations in spec["paths"].items():
        for method in operations:
            if method not in ("post", "put", "patch", "delete") or (method, path) in anyone:
                continue
            url = path.format(**ids)
            response = client.request(method, url, json={}, headers=bearer(viewer))
            assert response.status_code == 403, (method, path, response.text)
            checked.append((method, path))
    assert ("post", "/api/v1/incidents/{incident_id}/ack") in checked
    assert ("post", "/api/v1/probes/{probe_id}/commands/{name}") in checked
    assert len(checked) >= 10
    assert commander.sent == []
    with transaction(sessions) as session:
        assert session.scalars(select(AuditLog)).all() == []
        assert session.get(Incident, ids["incident_id"]).state == "open"
    # ... while reading works
    for path in ("/api/v1/probes", "/api/v1/targets", "/api/v1/results", "/api/v1/incidents",
                 f"/api/v1/incidents/{ids['incident_id']}", "/api/v1/maintenance"):
        assert client.get(path, headers=bearer(viewer)).status_code == 200, path


def test_passwords_are_scrypt_hashed_and_tokens_hashed_and_revocable(sessions: Any) -> None:
    root = add_user(sessions, "root", "admin")
    add_user(sessions, "olga", "operator")
    client = TestClient(create_app(config(), sessions))
    made = client.post("/api/v1/tokens", json={"name": "ci", "user": "olga"},
                       headers=bearer(root))
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert token.startswith("hp_")
    assert client.get("/api/v1/me", headers=bearer(token)).json()["name"] == "olga"
    with transaction(sessions) as session:
        user = session.scalar(select(User).where(User.name == "olga"))
        row = session.get(ApiToken, made.json()["id"])
        assert PASSWORD not in user.password_hash
        assert user.password_hash.startswith("scrypt$16384$8$1$")
        assert auth.verify_password(PASSWORD, user.password_hash)
        assert not auth.verify_password(PASSWORD + "x", user.password_hash)
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() != token
        assert row.last_used_at is not None
    assert client.delete(f"/api/v1/tokens/{made.json()['id']}",
                         headers=bearer(root)).status_code == 204
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert client.get("/api/v1/me", headers=bearer("hp_" + "x" * 43)).status_code == 401
    assert client.get("/api/v1/me").status_code == 401


def test_expired_tokens_and_disabled_users_are_refused(sessions: Any) -> None:
    root = add_user(sessions, "root", "admin")
    olga = add_user(sessions, "olga", "operator")
    with transaction(sessions) as session:
        user = session.scalar(select(User).where(User.name == "olga"))
        old = auth.create_token(session, user, "old", ttl=dt.timedelta(hours=1),
                                now=utcnow() - dt.timedelta(hours=2))
    client = TestClient(create_app(config(), sessions))
    assert client.get("/api/v1/me", headers=bearer(old)).status_code == 401
    assert client.get("/api/v1/me", headers=bearer(olga)).status_code == 200
    users = client.get("/api/v1/users", headers=bearer(root)).json()
    olga_id = next(u["id"] for u in users if u["name"] == "olga")
    assert client.patch(f"/api/v1/users/{olga_id}", json={"disabled": True},
                        headers=bearer(root)).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(olga)).status_code == 401
    root_id = next(u["id"] for u in users if u["name"] == "root")
    demote = client.patch(f"/api/v1/users/{root_id}", json={"role": "viewer"},
                          headers=bearer(root))
    assert demote.status_code == 409  # the last admin stays one
    assert client.get("/api/v1/users", headers=bearer(olga)).status_code == 401
    created = client.post("/api/v1/users", json={"name": "vic", "password": PASSWORD,
                                                 "role": "viewer"}, headers=bearer(root))
    assert created.status_code == 201
    assert client.post("/api/v1/users", json={"name": "vic", "password": PASSWORD,
                                              "role": "viewer"},
                       headers=bearer(root)).status_code == 409


# --------------------------------------------------------------------------- incidents, audit


def test_ack_comment_resolve_maintenance_and_command_are_audited(sessions: Any) -> None:
    olga = add_user(sessions, "olga", "operator")
    with transaction(sessions) as session:
        session.add(Probe(id="p1", site="site-p1", state="online", first_seen=utcnow()))
        incident_id = add_incident(session).id
    commander = ReplyingCommander(sessions, [{"command": "health", "ok": True, "health": {}}],
                                  delay_s=0.05)
    client = TestClient(create_app(config(), sessions, commander=commander))
    base = f"/api/v1/incidents/{incident_id}"
    acked = client.post(f"{base}/ack", headers=bearer(olga))
    assert acked.status_code == 200
    assert (acked.json()["state"], acked.json()["acknowledged_by"]) == ("acknowledged", "olga")
    assert client.post(f"{base}/ack", headers=bearer(olga)).status_code == 409
    assert client.post(f"{base}/comments", json={"text": "calling the carrier"},
                       headers=bearer(olga)).status_code == 201
    resolved = client.post(f"{base}/resolve", headers=bearer(olga))
    assert resolved.status_code == 200
    assert (resolved.json()["state"], resolved.json()["resolved_by"]) == ("resolved", "olga")
    assert [e["kind"] for e in resolved.json()["events"]] == [
        "opened", "acknowledged", "comment", "resolved"]
    window = {"target": "support", "starts_at": "2025-03-03T12:00:00Z",
              "ends_at": "2025-03-03T13:00:00Z", "reason": "PBX upgrade"}
    made = client.post("/api/v1/maintenance", json=window, headers=bearer(olga))
    assert made.status_code == 201, made.text
    assert client.delete(f"/api/v1/maintenance/{made.json()['id']}",
                         headers=bearer(olga)).status_code == 204
    assert client.post("/api/v1/probes/p1/commands/health", json={},
                       headers=bearer(olga)).status_code == 200
    with transaction(sessions) as session:
        rows = session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
    assert [(r.action, r.user_name) for r in rows] == [
        ("incident.acknowledged", "olga"), ("incident.comment", "olga"),
        ("incident.resolved", "olga"), ("maintenance.create", "olga"),
        ("maintenance.delete", "olga"), ("command.health", "olga")]
    assert rows[1].detail == {"text": "calling the carrier"}
    assert rows[3].object == rows[4].object == f"maintenance:{made.json()['id']}"


def test_incident_detail_is_translated(sessions: Any) -> None:
    viewer = add_user(sessions, "vera", "viewer")
    with transaction(sessions) as session:
        incident_id = add_incident(session).id
    client = TestClient(create_app(config(), sessions))
    en = client.get(f"/api/v1/incidents/{incident_id}", headers=bearer(viewer)).json()
    ru = client.get(f"/api/v1/incidents/{incident_id}?lang=ru", headers=bearer(viewer)).json()
    assert en["language"] == "en" and ru["language"] == "ru"
    assert en["summary"] and en["remedy"] and ru["summary"] != en["summary"]
    assert any("\u0400" <= ch <= "\u04ff" for ch in ru["summary"])
    assert [e["kind"] for e in en["events"]] == ["opened"]
    listed = client.get("/api/v1/incidents?state=open", headers=bearer(viewer)).json()
    assert [i["id"] for i in listed] == [incident_id]
    assert client.get("/api/v1/incidents?state=resolved", headers=bearer(viewer)).json() == []


def test_maintenance_validation(sessions: Any) -> None:
    olga = add_user(sessions, "olga", "operator")
    client = TestClient(create_app(config(), sessions))
    bad = [{"starts_at": "2025-03-03T12:00:00Z", "ends_at": "2025-03-03T11:00:00Z"},
           {"starts_at": "2025-03-03T12:00:00Z", "ends_at": "2025-03-03T13:00:00Z",
            "repeat": "monthly"},
           {"starts_at": "2025-03-03T12:00:00", "ends_at": "2025-03-03T13:00:00"},
           {"starts_at": "2025-03-03T12:00:00Z", "ends_at": "2025-03-05T13:00:00Z",
            "repeat": "daily"}]
    for body in bad:
        assert client.post("/api/v1/maintenance", json=body,
                           headers=bearer(olga)).status_code == 422, body


# --------------------------------------------------------------------------- results


def test_keyset_paging_returns_every_result_exactly_once(sessions: Any) -> None:
    viewer = add_user(sessions, "vera", "viewer")
    with transaction(sessions) as session:
        for n in range(37):  # groups of three share a start time: the id breaks the tie
            session.add(result_row(n, at=T0 + dt.timedelta(minutes=n // 3),
                                   channel=("sip", "gsm")[n % 2]))
        session.add(Recording(result_id=result_row(5).id, probe_id="p1", content_type="audio/wav",
                              size=4, data=b"RIFF"))
    client = TestClient(create_app(config(), sessions))
    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        if pages == 2:  # a result arriving meanwhile, newer than every page: not in this walk
            with transaction(sessions) as session:
                session.add(result_row(99, at=T0 + dt.timedelta(hours=5)))
        page = client.get("/api/v1/results", params=params, headers=bearer(viewer)).json()
        seen += [(r["started_at"], r["id"]) for r in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 37 and pages == 8
    assert seen == sorted(seen, reverse=True)
    gsm = client.get("/api/v1/results", params={"channel": "gsm", "limit": 500},
                     headers=bearer(viewer)).json()["items"]
    assert len(gsm) == 18 and {r["channel"] for r in gsm} == {"gsm"}
    doc = client.get(f"/api/v1/results/{result_row(7).id}", headers=bearer(viewer)).json()
    assert doc["n"] == 7
    recording = client.get(f"/api/v1/results/{result_row(5).id}/recording",
                           headers=bearer(viewer))
    assert (recording.content, recording.headers["content-type"]) == (b"RIFF", "audio/wav")
    assert client.get(f"/api/v1/results/{result_row(6).id}/recording",
                      headers=bearer(viewer)).status_code == 404
    assert client.get("/api/v1/results", params={"cursor": "!!"},
                      headers=bearer(viewer)).status_code == 422


# --------------------------------------------------------------------------- availability


def window(start: dt.datetime, hours: float, repeat: str = "none", target: str | None = None,
           probe: str | None = None, until: dt.datetime | None = None) -> SimpleNamespace:
    return SimpleNamespace(target=target, probe_id=probe, starts_at=start,
                           ends_at=start + dt.timedelta(hours=hours), repeat=repeat,
                           until=until)


def test_in_maintenance_one_off_daily_weekly_until_and_scope() -> None:
    hour = dt.timedelta(hours=1)
    one = [window(T0, 1)]
    assert in_maintenance(one, "support", "p1", T0)
    assert not in_maintenance(one, "support", "p1", T0 + hour)  # the end is outside
    assert not in_maintenance(one, "support", "p1", T0 - hour)
    daily = [window(T0, 2, "daily", until=T0 + dt.timedelta(days=2))]
    assert in_maintenance(daily, "x", None, T0 + dt.timedelta(days=2, minutes=90))
    assert not in_maintenance(daily, "x", None, T0 + dt.timedelta(days=3, minutes=30))
    assert not in_maintenance(daily, "x", None, T0 + dt.timedelta(days=1, hours=3))
    weekly = [window(T0, 1, "weekly", target="support", probe="p2")]
    assert in_maintenance(weekly, "support", "p2", T0 + dt.timedelta(weeks=30, minutes=5))
    assert not in_maintenance(weekly, "support", "p2", T0 + dt.timedelta(days=1, minutes=5))
    assert not in_maintenance(weekly, "support", "p1", T0 + dt.timedelta(minutes=5))
    assert not in_maintenance(weekly, "sales", "p2", T0 + dt.timedelta(minutes=5))
    assert not in_maintenance(weekly, "support", None, T0 + dt.timedelta(minutes=5))


def test_availability_excludes_one_off_and_weekly_maintenance(sessions: Any) -> None:
    viewer = add_user(sessions, "vera", "viewer")
    start = T0 + dt.timedelta(weeks=2)
    with transaction(sessions) as session:
        n = 0
        for minute in range(0, 24 * 60, 10):  # two probes, one result each every 10 minutes
            at = start + dt.timedelta(minutes=minute)
            for probe in ("p1", "p2"):
                hour = minute // 60
                met = not (2 <= hour < 4 or (probe == "p2" and 18 <= hour < 19))
                session.add(result_row(n, probe=probe, at=at, met=met, pdd=100 + minute,
                                       answer=1000 + minute))
                n += 1
        # 14:00-16:00 once for every probe of the target; every Tuesday 06:00-07:00 (from two
        # weeks before) for p2 only
        session.add(Maintenance(target="support", starts_at=start + dt.timedelta(hours=2),
                                ends_at=start + dt.timedelta(hours=4)))
        session.add(Maintenance(target=None, probe_id="p2", repeat="weekly",
                                starts_at=T0 + dt.timedelta(hours=18),
                                ends_at=T0 + dt.timedelta(hours=19)))
        session.add(Maintenance(target="sales", starts_at=start, ends_at=start + dt.timedelta(
            hours=24)))  # another target's window changes nothing here
    client = TestClient(create_app(config(), sessions))
    params = {"from": start.isoformat(), "to": (start + dt.timedelta(days=1)).isoformat()}
    got = client.get("/api/v1/targets/support/availability", params=params,
                     headers=bearer(viewer))
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["excluded_maintenance"] == 2 * 12 + 6  # 2 h of both probes, 1 h of p2
    assert body["results"] == 288 - 30
    assert body["met"] == body["results"] and body["ratio"] == 1.0
    assert body["pdd_ms"]["count"] == 258 and body["pdd_ms"]["p50"] is not None
    assert body["pdd_ms"]["p50"] <= body["pdd_ms"]["p95"]
    assert body["from"].startswith("2025-03-17T12:00:00")
    # without the windows a fifth of the day's checks would have failed
    with transaction(sessions) as session:
        for row in session.scalars(select(Maintenance)):
            session.delete(row)
    plain = client.get("/api/v1/targets/support/availability", params=params,
                       headers=bearer(viewer)).json()
    assert plain["results"] == 288 and plain["met"] == 258


# --------------------------------------------------------------------------- commands


def test_command_round_trip_through_the_database(sessions: Any) -> None:
    olga = add_user(sessions, "olga", "operator")
    with transaction(sessions) as session:
        session.add(Probe(id="p1", site="site-p1", state="online", first_seen=utcnow()))
    replies = [{"command": "run", "ok": True, "accepted": True},
               {"command": "run", "ok": True, "result": {"outcome": "answered"}}]
    commander = ReplyingCommander(sessions, replies, delay_s=0.3)
    client = TestClient(create_app(config(), sessions, commander=commander))
    started = time.monotonic()
    sent = client.post("/api/v1/probes/p1/commands/run", json={"target": "support"},
                       headers=bearer(olga))
    assert sent.status_code == 200, sent.text
    assert 0.5 < time.monotonic() - started < 5
    body = sent.json()
    assert body["replies"] == replies and body["complete"]
    (probe_id, name, payload, correlation), = commander.sent
    assert (probe_id, name, payload, correlation) == ("p1", "run", {"target": "support"},
                                                      body["id"])
    later = client.get(f"/api/v1/commands/{body['id']}", headers=bearer(olga)).json()
    assert later["replies"] == replies
    # only "accepted" within the wait: 202, and the rest is read later
    slow = ReplyingCommander(sessions, replies, delay_s=0.4)
    client = TestClient(create_app(config(), sessions, commander=slow))
    partial = client.post("/api/v1/probes/p1/commands/run?wait_s=0.6",
                          json={"target": "support", "channel": "gsm"}, headers=bearer(olga))
    assert partial.status_code == 202
    assert partial.json()["replies"] == replies[:1] and not partial.json()["complete"]
    time.sleep(0.6)
    done = client.get(f"/api/v1/commands/{partial.json()['id']}", headers=bearer(olga)).json()
    assert done["complete"]
    assert client.post("/api/v1/probes/p1/commands/run", json={},
                       headers=bearer(olga)).status_code == 422  # run needs a target
    assert client.post("/api/v1/probes/nope/commands/health",
                       headers=bearer(olga)).status_code == 404


def test_commands_without_a_broker_are_503(sessions: Any) -> None:
    olga = add_user(sessions, "olga", "operator")

    @dataclass
    class Disconnected:
        def send(self, probe_id: str, name: str, payload: dict[str, Any],
                 correlation_id: str) -> None:
            raise ConnectionError("not connected")

    with transaction(sessions) as session:
        session.add(Probe(id="p1", site="site-p1", state="online", first_seen=utcnow()))
    none = TestClient(create_app(config(), sessions))
    assert none.post("/api/v1/probes/p1/commands/health",
                     headers=bearer(olga)).status_code == 503
    down = TestClient(create_app(config(), sessions, commander=Disconnected()))
    assert down.post("/api/v1/probes/p1/commands/health",
                     headers=bearer(olga)).status_code == 503
    with transaction(sessions) as session:
        row = session.scalars(select(Command)).one()
    assert row.replies[0]["ok"] is False and row.replies[0]["source"] == "ops"


# --------------------------------------------------------------------------- probes, targets


def test_probes_targets_and_quarantine(sessions: Any) -> None:
    olga = add_user(sessions, "olga", "operator")
    viewer = add_user(sessions, "vera", "viewer")
    now = utcnow()
    with transaction(sessions) as session:
        session.add(Probe(id="p1", site="site-p1", state="online", first_seen=now, boot=3,
                          health={"status": {"ok": False, "faults": ["line.no_voltage"]},
                                  "uptime_s": 60, "channels": {"sip": {"state": "idle"}}}))
        session.add(Probe(id="p2", site="site-p2", state="online", silent=True, first_seen=now))
        session.add(result_row(1, probe="p1", at=now - dt.timedelta(minutes=10), met=False))
        session.add(result_row(2, probe="p1", at=now - dt.timedelta(minutes=5)))
        session.add(result_row(3, probe="p2", channel="gsm", at=now - dt.timedelta(minutes=5)))
        add_incident(session)
        session.add(Quarantine(topic="hotline-probe/v1/p1/result", probe_id="p1",
                               reason="schema: 'id' is required", size=1000,
                               payload=b'{"a":"\\xff\n\x00\xff', received_at=now))
    client = TestClient(create_app(config(), sessions))
    probes = client.get("/api/v1/probes", headers=bearer(viewer)).json()
    assert [(p["id"], p["state"]) for p in probes] == [("p1", "online"), ("p2", "silent")]
    assert probes[0]["health_summary"]["faults"] == ["line.no_voltage"]
    detail = client.get("/api/v1/probes/p1", headers=bearer(viewer)).json()
    assert detail["health"]["uptime_s"] == 60 and detail["presence"] == []
    targets = client.get("/api/v1/targets", headers=bearer(viewer)).json()
    assert [t["name"] for t in targets] == ["support"]
    (support,) = targets
    assert support["sites"] == ["site-p1", "site-p2"] and support["channels"] == ["gsm", "sip"]
    assert [(v["probe_id"], v["channel"], v["vote"]) for v in support["votes"]] == [
        ("p1", "sip", "ok"), ("p2", "gsm", "ok")]
    assert len(support["open_incidents"]) == 1
    assert client.get("/api/v1/quarantine", headers=bearer(viewer)).status_code == 403
    (q,) = client.get("/api/v1/quarantine", headers=bearer(olga)).json()
    assert q["preview"] == '{"a":"\\\\xff\\n\\x00\\xff' and q["size"] == 1000


# --------------------------------------------------------------------------- metrics, health


def test_metrics_report_the_fleet_from_the_database(sessions: Any) -> None:
    now = utcnow()
    with transaction(sessions) as session:
        session.add_all([
            result_row(1, at=now - dt.timedelta(minutes=3), pdd=400, answer=2500, mos=4.0,
                       received_after_s=2),
            result_row(2, at=now - dt.timedelta(minutes=2), pdd=900, answer=6000, mos=3.0,
                       met=False, received_after_s=4),
            result_row(3, channel="gsm", at=now - dt.timedelta(minutes=1), pdd=None,
                       answer=None, mos=None, received_after_s=3),
            result_row(4, target="sales", at=now - dt.timedelta(hours=3), pdd=100),
        ])
        session.add(Counter(name="quarantined:schema", value=3))
        session.add(Counter(name="quarantined:too_large", value=1))
        session.add(Counter(name="other", value=9))
        # what ingest's store.finish adds up per batch (Results above are inserted directly)
        session.add(Counter(name="ingested:support:sip", value=2))
        session.add(Counter(name="ingested:support:gsm", value=1))
        session.add(Counter(name="ingested:sales:sip", value=1))
        session.add(Probe(id="p1", state="online", first_seen=now))
        session.add(Probe(id="p2", state="offline", first_seen=now))
        session.add(Probe(id="p3", state="online", silent=True, first_seen=now))
        incident = add_incident(session)
        add_incident(session, key="path:support:gsm", scope="path", severity="degraded",
                     state="acknowledged")
        add_incident(session, key="old", resolved=True, state="resolved")
        event = session.scalar(select(IncidentEvent).where(
            IncidentEvent.incident_id == incident.id))
        for receiver, state in (("a", "pending"), ("b", "sent"), ("c", "sent")):
            session.add(Notification(incident_id=incident.id, event_id=event.id,
                                     receiver=receiver, event="open", state=state,
                                     next_attempt_at=now, created_at=now))
    text = TestClient(create_app(config(), sessions)).get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(family: str, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(s.labels.items())): s.value for s in families[family].samples
                if s.name == family + suffix}

    assert samples("hotline_ops_results_ingested", "_total") == {
        (("channel", "sip"), ("target", "support")): 2,
        (("channel", "gsm"), ("target", "support")): 1,
        (("channel", "sip"), ("target", "sales")): 1}
    assert samples("hotline_ops_quarantined", "_total") == {
        (("reason", "schema"),): 3, (("reason", "too_large"),): 1}
    lag = samples("hotline_ops_ingest_lag_seconds")
    assert lag == {(("stat", "p50"),): 3.0, (("stat", "max"),): 4.0}
    assert samples("hotline_ops_availability_ratio") == {(("target", "support"),): 2 / 3}
    pdd = samples("hotline_ops_pdd_ms", "_bucket")
    assert pdd[(("le", "250.0"), ("target", "support"))] == 0
    assert pdd[(("le", "500.0"), ("target", "support"))] == 1
    assert pdd[(("le", "1000.0"), ("target", "support"))] == 2
    assert pdd[(("le", "+Inf"), ("target", "support"))] == 2
    assert samples("hotline_ops_pdd_ms", "_sum") == {(("target", "support"),): 1300}
    answer = samples("hotline_ops_answer_ms", "_bucket")
    assert answer[(("le", "3000.0"), ("target", "support"))] == 1
    assert answer[(("le", "8000.0"), ("target", "support"))] == 2
    assert samples("hotline_ops_mos") == {(("target", "support"),): 3.5}
    incidents = samples("hotline_ops_open_incidents")
    assert incidents[(("scope", "hotline"), ("severity", "down"))] == 1
    assert incidents[(("scope", "path"), ("severity", "degraded"))] == 1
    assert sum(incidents.values()) == 2
    assert samples("hotline_ops_probes") == {
        (("state", "online"),): 1, (("state", "offline"),): 1, (("state", "silent"),): 1,
        (("state", "unknown"),): 0}
    assert samples("hotline_ops_notifications") == {
        (("state", "pending"),): 1, (("state", "sent"),): 2, (("state", "failed"),): 0}


def test_healthz_reports_the_database(sessions: Any, tmp_path: Any) -> None:
    assert TestClient(create_app(config(), sessions)).get("/healthz").json() == {"ok": True}
    gone = session_factory(make_engine(f"sqlite:///{tmp_path}/missing/dir/ops.sqlite3"))
    response = TestClient(create_app(config(), gone)).get("/healthz")
    assert response.status_code == 503 and response.json()["ok"] is False


def test_openapi_document_lists_every_endpoint(sessions: Any) -> None:
    raw = TestClient(create_app(config(), sessions)).get("/api/v1/openapi.json")
    spec = json.loads(raw.text)
    assert spec["openapi"].startswith("3.")
    expected = {
        "/api/v1/login": {"post"}, "/api/v1/logout": {"post"},
        "/api/v1/probes": {"get"}, "/api/v1/probes/{probe_id}": {"get"},
        "/api/v1/targets": {"get"}, "/api/v1/targets/{name}/availability": {"get"},
        "/api/v1/results": {"get"}, "/api/v1/results/{result_id}": {"get"},
        "/api/v1/results/{result_id}/recording": {"get"},
        "/api/v1/incidents": {"get"}, "/api/v1/incidents/{incident_id}": {"get"},
        "/api/v1/incidents/{incident_id}/ack": {"post"},
        "/api/v1/incidents/{incident_id}/resolve": {"post"},
        "/api/v1/incidents/{incident_id}/comments": {"post"},
        "/api/v1/maintenance": {"get", "post"},
        "/api/v1/maintenance/{maintenance_id}": {"delete"},
        "/api/v1/probes/{probe_id}/commands/{name}": {"post"},
        "/api/v1/commands/{command_id}": {"get"},
        "/api/v1/users": {"get", "post"}, "/api/v1/tokens": {"get", "post"},
        "/api/v1/tokens/{token_id}": {"delete"}, "/api/v1/quarantine": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(spec["paths"].get(path, {})), path
    schemas = spec["components"]["schemas"]
    assert {"ResultPage", "IncidentDetail", "CommandOut", "AvailabilityOut"} <= set(schemas)
    assert set(spec["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyCookie"}
