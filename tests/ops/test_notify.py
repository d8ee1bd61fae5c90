"""The notification queue against real receivers on loopback: an HTTP listener, an SMTP server
(aiosmtpd), Debian's Alertmanager; the database is SQLite (and PostgreSQL for the race)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from probe.ops import notify
from probe.ops.config import OpsConfig, parse_ops_config
from probe.ops.db import (
    Incident,
    IncidentEvent,
    Notification,
    counters,
    make_engine,
    session_factory,
    transaction,
    upgrade,
    utcnow,
)
from probe.sim.ports import free_port

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
RU_SUMMARY = "Назначение горячей линии недоступно (503 Service Unavailable)."
RU_REMEDY = "ИТ: проверьте, что очередь или номер горячей линии зарегистрированы и работают."
EN_SUMMARY = "The hotline's destination is unavailable (503 Service Unavailable)."


# --------------------------------------------------------------------------- receivers


@dataclass
class Listener:
    """A real webhook endpoint: answers ``statuses`` in turn (then 200), records every POST."""

    statuses: list[int] = field(default_factory=list)
    hang: bool = False  # accept, read, never answer (until the test ends)
    delay_s: float = 0.0
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def json(self) -> list[Any]:
        return [json.loads(b) for b in self.bodies]


def _handler(listener: Listener) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if listener.hang:
                listener.release.wait(10)
                return
            with listener.lock:
                listener.bodies.append(body)
                listener.headers.append(dict(self.headers))
                status = listener.statuses.pop(0) if listener.statuses else 200
            if listener.delay_s:
                time.sleep(listener.delay_s)  # a slow receiver: widens the race window
            reply = b"ok" if status < 300 else b"upstream exploded " + b"x" * 300
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return None  # keep pytest's output for failures

    return Handler


@pytest.fixture
def listeners() -> Iterator[Any]:
    """``listeners(**Listener fields)`` starts a real HTTP listener on 127.0.0.1; all stop at
    the end."""
    started: list[Listener] = []

    def start(**kwargs: Any) -> Listener:
        listener = Listener(**kwargs)
        listener.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(listener))
        threading.Thread(target=listener.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.release.set()
        assert listener.server is not None
        listener.server.shutdown()
        listener.server.server_close()


class Mailbox:
    """aiosmtpd handler: keeps every envelope it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def messages(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(e.content, policy=email.policy.default)
                for e in self.envelopes]


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 and a free port."""
    mailbox = Mailbox()
    port = free_port(kind=socket.SOCK_STREAM)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager (Debian's) routing everything to a null receiver; its base URL."""
    if not Path(ALERTMANAGER).exists():
        pytest.skip("prometheus-alertmanager not installed")
    work = tmp_path_factory.mktemp("alertmanager")
    (work / "am.yml").write_text('route: {receiver: "null"}\nreceivers: [{name: "null"}]\n')
    port = free_port(kind=socket.SOCK_STREAM)
    log = (work / "am.log").open("wb")
    process = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={work / 'am.yml'}", f"--storage.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, work / "am.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    # Alertmanager says nothing when it is ready but /-/ready: poll it.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"alertmanager exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"alertmanager not ready: {log.read_text()[-2000:]}")


def _alerts(base: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/api/v2/alerts", timeout=5) as response:
        found: list[dict[str, Any]] = json.load(response)
    return found


# --------------------------------------------------------------------------- database


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/ops.sqlite3")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def make_config(tmp_path: Path, receivers: list[dict[str, Any]], **notify_keys: Any) -> OpsConfig:
    data: dict[str, Any] = {"ops": {"state_dir": str(tmp_path), "public_url":
                                    "https://ops.example/"},
                            "receivers": receivers}
    if notify_keys:
        data["notify"] = notify_keys
    return parse_ops_config(data, base_dir=tmp_path)


def hook(name: str, url: str, **keys: Any) -> dict[str, Any]:
    return {"name": name, "kind": "webhook", "url": url, **keys}


def open_incident(sessions: sessionmaker[Session], config: OpsConfig, *, at: dt.datetime = T0,
                  key: str = "hotline:support", enqueue: bool = True,
                  **fields: Any) -> tuple[int, int]:
    """An open incident with its first event, as the incident code makes it; (ids)."""
    values: dict[str, Any] = {
        "key": key, "target": "support", "scope": "hotline", "subject": "*",
        "state": "open", "cause": "hotline.unavailable", "severity": "down",
        "opened_at": at, "updated_at": at, "last_round": 1,
        "sites": ["branch-001", "branch-002", "branch-017"],
        "evidence": ["3f0c6d1e-0000-4000-8000-000000000001",
                     "3f0c6d1e-0000-4000-8000-000000000002"],
        "detail": {"code": 503, "reason": "Service Unavailable", "reporting_sites": 4}}
    values.update(fields)
    with transaction(sessions) as session:
        incident = Incident(**values)
        session.add(incident)
        session.flush()
        event = IncidentEvent(incident_id=incident.id, at=at, kind="opened",
                              detail={"sites": values["sites"]})
        session.add(event)
        session.flush()
        if enqueue:
            notify.enqueue(session, incident, event, "open", config.receivers, at)
        return incident.id, event.id


def resolve_incident(sessions: sessionmaker[Session], config: OpsConfig, incident_id: int,
                     at: dt.datetime) -> list[Notification]:
    with transaction(sessions) as session:
        incident = session.get_one(Incident, incident_id)
        incident.state, incident.resolved_at, incident.updated_at = "resolved", at, at
        event = IncidentEvent(incident_id=incident_id, at=at, kind="resolved", detail={})
        session.add(event)
        session.flush()
        return notify.enqueue(session, incident, event, "resolve", config.receivers, at)


def rows(sessions: sessionmaker[Session]) -> list[Notification]:
    with transaction(sessions) as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def events_of(sessions: sessionmaker[Session], incident_id: int) -> list[IncidentEvent]:
    with transaction(sessions) as session:
        return list(session.scalars(select(IncidentEvent)
                                    .where(IncidentEvent.incident_id == incident_id)
                                    .order_by(IncidentEvent.id)))


# --------------------------------------------------------------------------- enqueue


def test_enqueue_is_idempotent_and_follows_receiver_events(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    config = make_config(tmp_path, [hook("all", "http://127.0.0.1:9/a"),
                                    hook("resolves", "http://127.0.0.1:9/b",
                                         events=["resolve"])])
    incident_id, event_id = open_incident(sessions, config, enqueue=False)
    with transaction(sessions) as session:
        incident = session.get_one(Incident, incident_id)
        event = session.get_one(IncidentEvent, event_id)
        first = notify.enqueue(session, incident, event, "open", config.receivers, T0)
        again = notify.enqueue(session, incident, event, "open", config.receivers, T0)
    assert [n.receiver for n in first] == ["all"] and again == []
    assert [(n.receiver, n.event, n.state, n.next_attempt_at) for n in rows(sessions)] == [
        ("all", "open", "pending", T0)]
    resolved = resolve_incident(sessions, config, incident_id, T0 + dt.timedelta(minutes=5))
    assert sorted(n.receiver for n in resolved) == ["all", "resolves"]


@pytest.mark.parametrize("quiet", [{"suppressed": "maintenance"}, {"flapping": True}])
def test_suppressed_or_flapping_incident_is_not_notified(
        sessions: sessionmaker[Session], tmp_path: Path, quiet: dict[str, Any]) -> None:
    config = make_config(tmp_path, [hook("ops", "http://127.0.0.1:9/a",
                                         events=["open", "update", "resolve"])])
    incident_id, event_id = open_incident(sessions, config, **quiet)
    with transaction(sessions) as session:
        incident = session.get_one(Incident, incident_id)
        event = session.get_one(IncidentEvent, event_id)
        assert notify.enqueue(session, incident, event, "update", config.receivers, T0) == []
    # Never announced: its end is not announced either.
    assert resolve_incident(sessions, config, incident_id, T0 + dt.timedelta(hours=1)) == []
    assert rows(sessions) == []


def test_unknown_kind_is_refused(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    config = make_config(tmp_path, [])
    incident_id, event_id = open_incident(sessions, config, enqueue=False)
    with transaction(sessions) as session, pytest.raises(ValueError, match="unknown"):
        notify.enqueue(session, session.get_one(Incident, incident_id),
                       session.get_one(IncidentEvent, event_id), "opened", [], T0)


# --------------------------------------------------------------------------- webhooks


def test_webhook_json_and_slack(sessions: sessionmaker[Session], tmp_path: Path,
                                listeners: Any) -> None:
    plain, slack = listeners(), listeners()
    config = make_config(tmp_path, [hook("json", plain.url),
                                    hook("chat", slack.url, format="slack")])
    incident_id, event_id = open_incident(sessions, config)
    stats = notify.dispatch_due(sessions, config, T0)
    assert (stats.claimed, stats.sent) == (2, 2)

    [doc] = plain.json()
    assert plain.headers[0]["Content-Type"] == "application/json"
    assert doc["version"] == "1" and doc["event"] == "open" and doc["event_id"] == event_id
    incident = doc["incident"]
    assert incident == {
        "id": incident_id, "key": "hotline:support", "target": "support", "scope": "hotline",
        "subject": "*", "state": "open", "cause": "hotline.unavailable", "severity": "down",
        "opened_at": "2026-03-02T09:00:00Z", "resolved_at": None, "acknowledged_by": None,
        "sites": ["branch-001", "branch-002", "branch-017"],
        "evidence": ["3f0c6d1e-0000-4000-8000-000000000001",
                     "3f0c6d1e-0000-4000-8000-000000000002"],
        "flapping": False, "suppressed": None, "summary": EN_SUMMARY,
        "remedy": "IT: check that the hotline's queue or extension is registered and in "
                  "service.",
        "url": f"https://ops.example/incidents/{incident_id}"}

    [chat] = slack.json()
    assert chat == {"text": (
        ":red_circle: [DOWN] support: hotline down at 3 of 4 sites — " + EN_SUMMARY + "\n"
        "Remedy: IT: check that the hotline's queue or extension is registered and in "
        f"service.\nhttps://ops.example/incidents/{incident_id}")}

    resolve_incident(sessions, config, incident_id, T0 + dt.timedelta(minutes=12))
    assert notify.dispatch_due(sessions, config, T0 + dt.timedelta(minutes=12)).sent == 2
    assert plain.json()[1]["event"] == "resolve"
    assert plain.json()[1]["incident"]["resolved_at"] == "2026-03-02T09:12:00Z"
    assert slack.json()[1]["text"].startswith(
        ":large_green_circle: [RESOLVED] support: hotline was down at 3 of 4 sites for 12 min")
    assert counters_of(sessions) == {"notifications_sent_total:json": 2,
                                     "notifications_sent_total:chat": 2}


def test_missing_placeholder_renders_a_question_mark(
        sessions: sessionmaker[Session], tmp_path: Path, listeners: Any) -> None:
    plain = listeners()
    config = make_config(tmp_path, [hook("json", plain.url)])
    open_incident(sessions, config, detail={"code": 503})
    notify.dispatch_due(sessions, config, T0)
    assert plain.json()[0]["incident"]["summary"] == \
        "The hotline's destination is unavailable (503 ?)."


def counters_of(sessions: sessionmaker[Session]) -> dict[str, int]:
    with transaction(sessions) as session:
        return counters(session)


def test_failures_are_retried_with_backoff_then_sent(
        sessions: sessionmaker[Session], tmp_path: Path, listeners: Any) -> None:
    flaky = listeners(statuses=[500, 500])
    config = make_config(tmp_path, [hook("flaky", flaky.url)], retry_first_s=5,
                         retry_max_s=600)
    incident_id, _ = open_incident(sessions, config)
    second = dt.timedelta(seconds=1)

    assert notify.dispatch_due(sessions, config, T0).retrying == 1
    [row] = rows(sessions)
    assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 1, T0 + 5 * second)
    assert row.last_error is not None and row.last_error.startswith(
        "HTTP 500: upstream exploded xxx")
    assert len(row.last_error) == len("HTTP 500: ") + 200  # the body's first 200 bytes

    assert notify.dispatch_due(sessions, config, T0 + 4 * second).claimed == 0  # not yet due
    assert notify.dispatch_due(sessions, config, T0 + 5 * second).retrying == 1
    [row] = rows(sessions)
    assert (row.attempts, row.next_attempt_at) == (2, T0 + 15 * second)  # 5 s, then 10 s
    assert notify.dispatch_due(sessions, config, T0 + 14 * second).claimed == 0
    assert notify.dispatch_due(sessions, config, T0 + 15 * second).sent == 1

    [row] = rows(sessions)
    assert (row.state, row.attempts, row.sent_at, row.last_error) == (
        "sent", 3, T0 + 15 * second, None)
    assert len(flaky.bodies) == 3
    timeline = [(e.kind, e.detail.get("attempt")) for e in events_of(sessions, incident_id)]
    assert timeline == [("opened", None), ("notify_failed", 1), ("notify_failed", 2),
                        ("notified", 3)]
    failed = events_of(sessions, incident_id)[1].detail
    assert failed["receiver"] == "flaky" and failed["event"] == "open"
    assert failed["error"].startswith("HTTP 500")
    assert counters_of(sessions) == {"notifications_errors_total:flaky": 2,
                                     "notifications_sent_total:flaky": 1}


def test_backoff_is_capped(tmp_path: Path) -> None:
    config = make_config(tmp_path, [], retry_first_s=5, retry_max_s=60)
    waits = [notify.backoff(config, n).total_seconds() for n in range(1, 8)]
    assert waits == [5, 10, 20, 40, 60, 60, 60]
    assert notify.backoff(config, 10_000).total_seconds() == 60


def test_gives_up_after_give_up_after_s(sessions: sessionmaker[Session], tmp_path: Path,
                                        listeners: Any) -> None:
    broken = listeners(statuses=[503] * 100)
    config = make_config(tmp_path, [hook("broken", broken.url)], retry_first_s=5,
                         retry_max_s=20, give_up_after_s=60)
    incident_id, _ = open_incident(sessions, config)
    now, attempts_at = T0, []
    while True:
        stats = notify.dispatch_due(sessions, config, now)
        assert stats.claimed == 1
        attempts_at.append((now - T0).total_seconds())
        [row] = rows(sessions)
        if row.state != "pending":
            break
        now = row.next_attempt_at
    # 5, 10, 20, 20 s apart; the last retry is moved to the give-up time itself.
    assert attempts_at == [0, 5, 15, 35, 55, 60]
    assert (row.state, row.attempts) == ("failed", 6)
    assert row.last_error is not None and row.last_error.startswith("HTTP 503")
    final = events_of(sessions, incident_id)[-1]
    assert final.kind == "notify_failed" and final.detail["final"] is True
    assert counters_of(sessions)["notifications_failed_total:broken"] == 1
    assert notify.dispatch_due(sessions, config, now + dt.timedelta(hours=1)).claimed == 0


def test_hanging_receiver_costs_one_timeout_and_delays_no_other(
        sessions: sessionmaker[Session], tmp_path: Path, listeners: Any) -> None:
    hung, healthy = listeners(hang=True), listeners()
    config = make_config(tmp_path, [hook("hung", hung.url, timeout_s=0.5),
                                    hook("healthy", healthy.url)])
    open_incident(sessions, config)
    open_incident(sessions, config, key="hotline:sales", target="sales")
    started = time.monotonic()
    stats = notify.dispatch_due(sessions, config, T0)
    elapsed = time.monotonic() - started
    # The second row for "hung" is deferred, not waited for: one timeout in all.
    assert elapsed < 0.5 + 1.0, elapsed
    assert (stats.claimed, stats.sent, stats.retrying, stats.deferred) == (4, 2, 1, 1)
    assert len(healthy.bodies) == 2
    by_receiver = {(n.receiver, n.id): n for n in rows(sessions)}
    hung_rows = sorted((n for (name, _), n in by_receiver.items() if name == "hung"),
                       key=lambda n: n.id)
    assert hung_rows[0].last_error == "timed out after 0.5 s (no answer)"
    assert hung_rows[0].attempts == 1 and hung_rows[1].attempts == 0  # deferred: not counted
    assert hung_rows[1].next_attempt_at == hung_rows[0].next_attempt_at


def test_removed_receiver_fails_its_rows(sessions: sessionmaker[Session], tmp_path: Path,
                                         listeners: Any) -> None:
    config = make_config(tmp_path, [hook("old", listeners().url)])
    open_incident(sessions, config)
    stats = notify.dispatch_due(sessions, make_config(tmp_path, []), T0)
    assert stats.failed == 1
    [row] = rows(sessions)
    assert row.state == "failed" and "no longer configured" in (row.last_error or "")


def test_messages_of_one_incident_keep_their_order(
        sessions: sessionmaker[Session], tmp_path: Path, listeners: Any) -> None:
    flaky = listeners(statuses=[500])
    config = make_config(tmp_path, [hook("flaky", flaky.url)], retry_first_s=5)
    incident_id, _ = open_incident(sessions, config)
    notify.dispatch_due(sessions, config, T0)  # the open fails, retried at T0 + 5 s
    resolve_incident(sessions, config, incident_id, T0 + dt.timedelta(seconds=1))
    # The resolve is due, but waits for the open.
    assert notify.dispatch_due(sessions, config, T0 + dt.timedelta(seconds=2)).claimed == 0
    assert notify.dispatch_due(sessions, config, T0 + dt.timedelta(seconds=5)).sent == 1
    assert notify.dispatch_due(sessions, config, T0 + dt.timedelta(seconds=5)).sent == 1
    assert [d["event"] for d in flaky.json()] == ["open", "open", "resolve"]


# --------------------------------------------------------------------------- racing


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    from probe.sim.postgres import LocalPostgres, PostgresError

    try:
        pg = LocalPostgres().start()
    except PostgresError as err:
        pytest.skip(str(err))
    try:
        yield pg.url
    finally:
        pg.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_racing_dispatchers_send_each_notification_once(
        request: pytest.FixtureRequest, tmp_path: Path, listeners: Any, backend: str) -> None:
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path}/race.sqlite3")
    else:
        engine = make_engine(request.getfixturevalue("postgres"))
    upgrade(engine)
    sessions = session_factory(engine)
    slow = listeners(delay_s=0.01)
    config = make_config(tmp_path, [hook("slow", slow.url), hook("other", slow.url)])
    now = utcnow()
    for n in range(15):
        open_incident(sessions, config, at=now, key=f"hotline:t{n}", target=f"t{n}")
    start = threading.Barrier(2)
    claimed: list[int] = []

    def dispatcher() -> None:
        start.wait()
        mine = 0
        while batch := notify.dispatch_due(sessions, config, now, limit=4).claimed:
            mine += batch
        claimed.append(mine)

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sum(claimed) == 30
        assert min(claimed) > 0, claimed  # both really took part
        keys = [d["incident"]["key"] for d in slow.json()]
        assert len(keys) == 30  # 15 incidents x 2 receivers, nothing twice
        assert {k: keys.count(k) for k in keys} == {f"hotline:t{n}": 2 for n in range(15)}
        assert {n.state for n in rows(sessions)} == {"sent"}
        assert all(n.attempts == 1 for n in rows(sessions))
    finally:
        with engine.begin() as connection:  # PostgreSQL's cluster is shared by the module
            for table in ("notifications", "incident_events", "counters", "incidents"):
                connection.exec_driver_sql(f"DELETE FROM {table}")
        engine.dispose()


# --------------------------------------------------------------------------- email


def test_email_in_russian_threads_the_resolve(sessions: sessionmaker[Session], tmp_path: Path,
                                              smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    data = {"ops": {"state_dir": str(tmp_path), "language": "ru",
                    "public_url": "https://ops.example"},
            "receivers": [{"name": "oncall", "kind": "email", "smtp_host": "127.0.0.1",
                           "smtp_port": port, "mail_from": "probe@ops.example",
                           "mail_to": ["oncall@example.com", "it@example.com"]}]}
    config = parse_ops_config(data, base_dir=tmp_path)
    incident_id, _ = open_incident(sessions, config)
    assert notify.dispatch_due(sessions, config, T0).sent == 1
    resolve_incident(sessions, config, incident_id, T0 + dt.timedelta(hours=1, minutes=5))
    assert notify.dispatch_due(sessions, config, T0 + dt.timedelta(hours=1, minutes=5)).sent == 1

    opening, resolved = mailbox.messages()
    envelope = mailbox.envelopes[0]
    assert envelope.mail_from == "probe@ops.example"
    assert envelope.rcpt_tos == ["oncall@example.com", "it@example.com"]
    assert opening["Subject"] == "[hotline-probe] DOWN support: hotline down at 3 of 4 sites"
    assert opening["From"] == "probe@ops.example"
    assert opening["To"] == "oncall@example.com, it@example.com"
    assert opening["Message-ID"] == f"<incident-{incident_id}@ops.example>"
    assert opening["Date"] == "Mon, 02 Mar 2026 09:00:00 +0000"
    text = opening.get_content()
    assert RU_SUMMARY in text and f"Remedy: {RU_REMEDY}" in text
    assert "branch-001, branch-002, branch-017" in text
    assert "3f0c6d1e-0000-4000-8000-000000000002" in text
    assert f"https://ops.example/incidents/{incident_id}" in text
    assert "2026-03-02T09:00:00Z  opened" in text

    assert resolved["Subject"] == ("[hotline-probe] RESOLVED support: hotline was down at 3 "
                                   "of 4 sites for 1 h 5 min")
    assert resolved["In-Reply-To"] == opening["Message-ID"]
    assert resolved["References"] == opening["Message-ID"]
    assert resolved["Message-ID"] != opening["Message-ID"]
    body = resolved.get_content()
    assert "2026-03-02T10:05:00Z  resolved" in body and "notified" not in body


def test_email_to_a_closed_port_is_a_clear_failure(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    port = free_port(kind=socket.SOCK_STREAM)  # nothing listens there
    config = make_config(tmp_path, [{"name": "mail", "kind": "email", "smtp_host": "127.0.0.1",
                                     "smtp_port": port, "mail_from": "p@x.example",
                                     "mail_to": ["o@x.example"], "timeout_s": 2}])
    open_incident(sessions, config)
    assert notify.dispatch_due(sessions, config, T0).retrying == 1
    [row] = rows(sessions)
    assert row.last_error is not None and row.last_error.startswith("SMTP: ConnectionRefused")


# --------------------------------------------------------------------------- alertmanager


def _ours(base: str, key: str) -> list[dict[str, Any]]:
    return [a for a in _alerts(base) if a["labels"].get("incident_key") == key]


def test_alertmanager_open_refresh_resolve(sessions: sessionmaker[Session], tmp_path: Path,
                                           alertmanager: str) -> None:
    config = make_config(tmp_path, [{"name": "am", "kind": "alertmanager",
                                     "url": alertmanager + "/"}])
    opened = utcnow().replace(microsecond=0) - dt.timedelta(minutes=10)
    incident_id, _ = open_incident(sessions, config, at=opened, key="hotline:am-test")
    assert notify.dispatch_due(sessions, config).sent == 1

    [active] = _ours(alertmanager, "hotline:am-test")
    assert active["status"]["state"] == "active"
    assert active["labels"] == {"alertname": "HotlineProbeIncident",
                                "incident_key": "hotline:am-test", "target": "support",
                                "scope": "hotline", "subject": "*",
                                "cause": "hotline.unavailable", "severity": "down"}
    assert active["annotations"] == {
        "summary": EN_SUMMARY,
        "remedy": "IT: check that the hotline's queue or extension is registered and in "
                  "service.",
        "sites": "branch-001, branch-002, branch-017",
        "url": f"https://ops.example/incidents/{incident_id}"}
    assert active["generatorURL"] == f"https://ops.example/incidents/{incident_id}"
    assert dt.datetime.fromisoformat(active["startsAt"]) == opened
    # No endsAt from us: Alertmanager's resolve_timeout (5 min) from now...
    ends = dt.datetime.fromisoformat(active["endsAt"])
    assert ends > utcnow() + dt.timedelta(minutes=4)

    # ... which the sweep's refresh pushes on.
    assert notify.refresh_alerts(sessions, config) == 1
    [refreshed] = _ours(alertmanager, "hotline:am-test")
    assert refreshed["updatedAt"] > active["updatedAt"]

    resolve_incident(sessions, config, incident_id, utcnow())
    assert notify.dispatch_due(sessions, config).sent == 1
    # Alertmanager v0.25 lists only unresolved alerts: a resolved one is gone at once.
    assert _ours(alertmanager, "hotline:am-test") == []
    assert notify.refresh_alerts(sessions, config) == 0  # resolved: no longer re-posted


def test_alertmanager_resolve_payload_has_ends_at(tmp_path: Path) -> None:
    config = make_config(tmp_path, [{"name": "am", "kind": "alertmanager",
                                     "url": "http://127.0.0.1:9093"}])
    incident = Incident(id=7, key="probe:branch-017", target=None, scope="probe",
                        subject="branch-017", state="resolved", cause="modem.no_sim",
                        severity="down", opened_at=T0, resolved_at=T0 + dt.timedelta(hours=2),
                        sites=[], evidence=[], detail={"channel": "gsm"})
    content_type, body, extra = notify.render(incident, [], "resolve", config.receivers[0],
                                              "en", None)
    [posted] = json.loads(body)
    assert content_type == "application/json"
    assert extra == {"url": "http://127.0.0.1:9093/api/v2/alerts"}
    assert posted["endsAt"] == "2026-03-02T11:00:00Z"
    assert "target" not in posted["labels"] and "generatorURL" not in posted
    assert posted["annotations"]["summary"] == "The gsm modem has no usable SIM (?)."
