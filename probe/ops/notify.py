"""The durable notification queue and its three receivers: webhooks, e-mail and Alertmanager.

The queue
    :func:`enqueue` runs inside the incident code's transaction and adds one
    :class:`~probe.ops.db.Notification` row per receiver that wants the event's kind (``open``,
    ``escalate``, ``update``, ``resolve``; the receiver's ``events``).  The unique constraint
    ``(event_id, receiver)`` and ``INSERT ... ON CONFLICT DO NOTHING`` make a second enqueue of
    the same event a no-op, so instances racing over one event cannot duplicate it.  Nothing is
    sent there: the row commits with the incident change or not at all, and a crash after the
    commit loses no notification.

    Incidents that are ``suppressed`` (maintenance, probe offline) or ``flapping`` get no
    ``open`` / ``update`` / ``escalate``.  A ``resolve`` is queued only for an incident that was
    announced, i.e. has an ``open`` notification row (pending, sent or failed) for some receiver:
    a suppressed incident nobody heard of does not end with a "resolved" message.  (When a
    suppression lifts on an incident still open, the incident code queues ``open`` for that
    event: the receivers have not heard of it yet.)

Claim, lease, send, mark: :func:`dispatch_due`
    1. A short transaction selects due rows (``pending`` and ``next_attempt_at <= now``, by id)
       ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises the
       claim instead), renders them, adds one to ``attempts`` and pushes ``next_attempt_at`` a
       lease into the future (``2 * timeout_s + 10 s``), then commits.  Other instances now
       skip those rows; if this one dies mid-send the lease runs out and another sends them
       (delivery is at-least-once: receivers may see a repeat, with the same ``event_id`` /
       Message-ID, never a loss).
       A row waits while an earlier row of the same incident and receiver is still pending,
       so an incident's messages reach each receiver in order (no "resolved" before "down").
    2. The messages are sent with no transaction open (network I/O never holds the database or
       blocks ingest), one thread per receiver, rows of one receiver in order; after a failure
       the receiver's remaining rows in the batch are *deferred* (not attempted, no attempt
       counted) so a dead receiver costs one timeout per batch, not one per row.
    3. A second transaction marks each row ``sent`` (``sent_at``), or schedules a retry with
       exponential backoff (``notify.retry_first_s`` doubling per attempt up to
       ``notify.retry_max_s``; ``last_error`` says why) or, once ``notify.give_up_after_s`` has
       passed since ``created_at``, marks it ``failed``.  A row whose receiver is gone from
       ops.toml is marked ``failed`` at once.

    Each outcome is an :class:`~probe.ops.db.IncidentEvent` on the incident (``notified``:
    receiver, event, attempt; ``notify_failed``: receiver, event, error, attempt, final) and a
    fleet-wide counter (:func:`~probe.ops.db.add_counter`)::

        notifications_sent_total:<receiver>     delivered
        notifications_errors_total:<receiver>   failed attempts (each retry counts)
        notifications_failed_total:<receiver>   given up (or receiver removed)

Formats (:func:`render`)
    webhook ``json``   ``{"version": "1", "event": kind, "event_id": ..., "incident": {...}}``
                       (see :func:`incident_document`), ``application/json``.
    webhook ``slack``  ``{"text": "..."}``: one to three lines, for Slack / Mattermost incoming
                       webhooks: ``:red_circle: [DOWN] support: hotline down at 3 of 4 sites —
                       <summary>`` / ``Remedy: ...`` / the console link.
    email              an RFC 5322 message, plain text: the headline as Subject, summary,
                       remedy, sites, evidence and the incident's timeline.  The ``open`` mail's
                       Message-ID is ``<incident-<id>@<host>>`` (host: public_url's, else
                       ``hotline-probe``); every later mail of the incident replies to it
                       (In-Reply-To / References), so mail clients thread an incident.
    alertmanager       ``POST <url>/api/v2/alerts`` with one alert (labels ``alertname=
                       HotlineProbeIncident``, incident_key, target, scope, subject, cause,
                       severity).  Open / escalate / update omit ``endsAt``; resolve sends
                       ``endsAt = resolved_at`` and Alertmanager resolves it.  Alertmanager
                       itself resolves an alert not re-posted within its ``resolve_timeout``
                       (default 5 min): :func:`refresh_alerts`, called from the sweep, re-posts
                       the open incidents.  Routing and silences stay Alertmanager's.

Summary and remedy are the cause catalogue's texts (:data:`probe.diagnosis.rules.CAUSES`) translated
into ``[ops] language``, their ``{placeholders}`` filled from ``incident.detail`` (``?`` when
missing).  The rest of the wording is English (the catalogue holds only the causes).
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, NamedTuple

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from probe.ops.causes import describe
from probe.ops.config import OpsConfig, Receiver
from probe.ops.db import (
    Incident,
    IncidentEvent,
    Notification,
    add_counter,
    insert_for,
    transaction,
    utcnow,
)

log = logging.getLogger(__name__)

KINDS = ("open", "escalate", "update", "resolve")
#: Kinds a suppressed or flapping incident does not send.
QUIET_KINDS = frozenset({"open", "escalate", "update"})
#: Incident events the queue itself writes; left out of the timelines it renders.
BOOKKEEPING_EVENTS = frozenset({"notified", "notify_failed"})
ALERTNAME = "HotlineProbeIncident"
ERROR_BODY_BYTES = 200
LEASE_MARGIN_S = 10.0

#: Delivers one rendered message to a receiver; raises (:class:`DeliveryError`) on failure.
Sender = Callable[[Receiver, "Rendered"], None]


class Rendered(NamedTuple):
    """A message ready to go: what to send, and where (``extra``: url / mail_from, mail_to)."""

    content_type: str
    body: bytes
    extra: dict[str, Any]


class DeliveryError(Exception):
    """A receiver did not take the message; the text is what ``last_error`` shows."""


@dataclass
class DispatchStats:
    """What one :func:`dispatch_due` did: rows claimed, and what became of them (``deferred``:
    released unattempted after an earlier failure of the same receiver in the batch)."""

    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    deferred: int = 0


# --------------------------------------------------------------------------- enqueue


def enqueue(session: Session, incident: Incident, event: IncidentEvent, kind: str,
            receivers: Sequence[Receiver], now: dt.datetime) -> list[Notification]:
    """Queue ``kind`` of ``event`` for every receiver that wants it, in the caller's transaction.

    Returns the rows this call created (none when the event was already queued, the incident
    is suppressed or flapping, or a ``resolve`` concerns an incident never announced)."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r} (one of {', '.join(KINDS)})")
    if incident.id is None or event.id is None:
        session.flush()  # the rows reference both ids
    if not _wanted(session, incident, kind):
        return []
    created = []
    for receiver in receivers:
        if kind not in receiver.events:
            continue
        stmt = (insert_for(session, Notification)
                .values(incident_id=incident.id, event_id=event.id, receiver=receiver.name,
                        event=kind, state="pending", attempts=0, next_attempt_at=now,
                        created_at=now)
                .on_conflict_do_nothing(index_elements=["event_id", "receiver"])
                .returning(Notification.id))
        new_id = session.execute(stmt).scalar_one_or_none()
        if new_id is not None:
            created.append(session.get_one(Notification, new_id))
    return created


def _wanted(session: Session, incident: Incident, kind: str) -> bool:
    if kind in QUIET_KINDS:
        return not (incident.suppressed or incident.flapping)
    # resolve: only what was announced ends with a "resolved" message.
    announced = session.scalar(select(exists().where(Notification.incident_id == incident.id,
                                                     Notification.event == "open")))
    return bool(announced)


# --------------------------------------------------------------------------- render


def render(incident: Incident, events: Sequence[IncidentEvent], kind: str, receiver: Receiver,
           language: str, public_url: str | None) -> Rendered:
    """The message for ``receiver`` about ``kind`` of ``incident``.

    ``events`` is the incident's timeline up to the event being notified (the last one; its id
    and time make the message deterministic, so a retry sends the same bytes)."""
    if receiver.kind == "email":
        return _render_email(incident, events, kind, receiver, language, public_url)
    if receiver.kind == "alertmanager":
        assert receiver.url is not None  # the config model requires it
        alerts = [alert(incident, kind, language, public_url)]
        return Rendered("application/json", _json_bytes(alerts),
                        {"url": receiver.url.rstrip("/") + "/api/v2/alerts"})
    assert receiver.url is not None
    if receiver.format == "slack":
        doc: dict[str, Any] = {"text": slack_text(incident, kind, language, public_url)}
    else:
        doc = {"version": "1", "event": kind, "event_id": events[-1].id if events else None,
               "incident": incident_document(incident, language, public_url)}
    return Rendered("application/json", _json_bytes(doc), {"url": receiver.url})


def cause_texts(incident: Incident, language: str) -> tuple[str, str]:
    """(summary, remedy) of the incident's cause in ``language``, placeholders filled."""
    return describe(incident.cause, incident.detail or {}, language)


def incident_url(incident: Incident, public_url: str | None) -> str | None:
    return f"{public_url.rstrip('/')}/incidents/{incident.id}" if public_url else None


def incident_document(incident: Incident, language: str,
                      public_url: str | None) -> dict[str, Any]:
    """The ``incident`` object of the JSON webhook (version 1: keys are only ever added)."""
    summary, remedy = cause_texts(incident, language)
    return {
        "id": incident.id, "key": incident.key, "target": incident.target,
        "scope": incident.scope, "subject": incident.subject, "state": incident.state,
        "cause": incident.cause, "severity": incident.severity,
        "opened_at": _iso(incident.opened_at), "resolved_at": _iso(incident.resolved_at),
        "acknowledged_by": incident.acknowledged_by, "sites": list(incident.sites or []),
        "evidence": list(incident.evidence or []), "flapping": bool(incident.flapping),
        "suppressed": incident.suppressed, "summary": summary, "remedy": remedy,
        "url": incident_url(incident, public_url),
    }


def label(incident: Incident, kind: str) -> str:
    """``DOWN``, ``DEGRADED``, ``ESCALATED: DOWN``, ``UPDATE: DEGRADED`` or ``RESOLVED``."""
    severity = incident.severity.upper()
    return {"open": severity, "escalate": f"ESCALATED: {severity}",
            "update": f"UPDATE: {severity}", "resolve": "RESOLVED"}[kind]


def headline(incident: Incident, kind: str) -> str:
    """``support: hotline down at 3 of 4 sites`` (``was down ... for 12 min`` when resolved).

    The site total is ``incident.detail["reporting_sites"]`` (what correlation records for a
    hotline incident) when present."""
    verb = f"was {incident.severity}" if kind == "resolve" else incident.severity
    sites = list(incident.sites or [])
    total = (incident.detail or {}).get("reporting_sites")
    if not sites:
        where = ""
    elif isinstance(total, int) and total >= len(sites):
        where = f" at {len(sites)} of {total} sites"
    else:
        where = f" at {len(sites)} site{'s' if len(sites) != 1 else ''}"
    if incident.scope == "hotline":
        what = f"hotline {verb}{where}"
    elif incident.scope == "path":
        what = f"{incident.subject} {verb}{where}"
    elif incident.scope == "site":
        what = f"{verb} at {incident.subject}"
    else:
        what = f"probe {incident.subject} {verb}"
    if kind == "resolve" and incident.resolved_at is not None:
        what += f" for {_duration(incident.resolved_at - incident.opened_at)}"
    return f"{incident.target or incident.subject}: {what}"


_SLACK_EMOJI = {"down": ":red_circle:", "degraded": ":large_orange_circle:"}


def slack_text(incident: Incident, kind: str, language: str, public_url: str | None) -> str:
    summary, remedy = cause_texts(incident, language)
    emoji = (":large_green_circle:" if kind == "resolve"
             else _SLACK_EMOJI.get(incident.severity, ":warning:"))
    lines = [f"{emoji} [{label(incident, kind)}] {headline(incident, kind)} — {summary}"]
    if kind != "resolve" and remedy:
        lines.append(f"Remedy: {remedy}")
    url = incident_url(incident, public_url)
    if url:
        lines.append(url)
    # Slack's three control characters; Mattermost decodes the entities as well.
    text = "\n".join(lines)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def alert(incident: Incident, kind: str, language: str,
          public_url: str | None) -> dict[str, Any]:
    """One Alertmanager v2 ``postableAlert``; resolve sets ``endsAt`` (the resolution)."""
    summary, remedy = cause_texts(incident, language)
    url = incident_url(incident, public_url)
    labels = {"alertname": ALERTNAME, "incident_key": incident.key, "target": incident.target,
              "scope": incident.scope, "subject": incident.subject, "cause": incident.cause,
              "severity": incident.severity}
    annotations = {"summary": summary, "remedy": remedy,
                   "sites": ", ".join(incident.sites or []), "url": url}
    doc: dict[str, Any] = {
        # Alertmanager wants strings: an absent value (no target for a probe) is no label.
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": _iso(incident.opened_at),
    }
    if kind == "resolve":
        doc["endsAt"] = _iso(incident.resolved_at or utcnow())
    if url:
        doc["generatorURL"] = url
    return doc


def message_id(incident: Incident, public_url: str | None,
               event: IncidentEvent | None = None) -> str:
    """The open mail's Message-ID, or (with ``event``) a later mail's: derived, not stored."""
    # The console's host keeps two deployments' incident 1 apart in one mailbox.
    host = urllib.parse.urlsplit(public_url).hostname if public_url else None
    host = host or "hotline-probe"
    if event is None:
        return f"<incident-{incident.id}@{host}>"
    return f"<incident-{incident.id}-event-{event.id}@{host}>"


def _render_email(incident: Incident, events: Sequence[IncidentEvent], kind: str,
                  receiver: Receiver, language: str, public_url: str | None) -> Rendered:
    assert receiver.mail_from is not None
    trigger = events[-1] if events else None
    # cte_type 7bit: a Russian body goes quoted-printable or base64, whatever the server
    # says about 8BITMIME.
    msg = EmailMessage(policy=email.policy.SMTP.clone(cte_type="7bit"))
    msg["Subject"] = f"[hotline-probe] {label(incident, kind)} {headline(incident, kind)}"
    msg["From"] = receiver.mail_from
    msg["To"] = ", ".join(receiver.mail_to)
    msg["Date"] = email.utils.format_datetime(trigger.at if trigger else incident.updated_at)
    opening = message_id(incident, public_url)
    if kind == "open":
        msg["Message-ID"] = opening
    else:
        msg["Message-ID"] = message_id(incident, public_url, trigger)
        msg["In-Reply-To"] = opening
        msg["References"] = opening
    msg["X-Hotline-Probe-Incident"] = str(incident.id)
    msg.set_content(_email_text(incident, events, kind, language, public_url))
    return Rendered("message/rfc822", msg.as_bytes(),
                    {"mail_from": receiver.mail_from, "mail_to": list(receiver.mail_to)})


def _email_text(incident: Incident, events: Sequence[IncidentEvent], kind: str, language: str,
                public_url: str | None) -> str:
    summary, remedy = cause_texts(incident, language)
    rows = [("Incident", f"#{incident.id} {incident.key}"), ("State", incident.state),
            ("Cause", f"{incident.cause} ({incident.severity})"),
            ("Opened", _iso(incident.opened_at)), ("Resolved", _iso(incident.resolved_at)),
            ("Acknowledged by", incident.acknowledged_by),
            ("Suppressed", incident.suppressed),
            ("Flapping", "yes" if incident.flapping else None),
            ("Sites", ", ".join(incident.sites or [])),
            ("Evidence", ", ".join(incident.evidence or [])),
            ("Link", incident_url(incident, public_url))]
    lines = [f"[{label(incident, kind)}] {headline(incident, kind)}", "", summary, ""]
    if remedy:
        lines += [f"Remedy: {remedy}", ""]
    lines += [f"{name + ':':<17}{value}" for name, value in rows if value]
    timeline = [e for e in events if e.kind not in BOOKKEEPING_EVENTS]
    if timeline:
        lines += ["", "Timeline:"]
        lines += [f"  {_iso(e.at)}  {e.kind}{_event_text(e)}" for e in timeline]
    return "\n".join(lines) + "\n"


def _event_text(event: IncidentEvent) -> str:
    parts = [f"by {event.actor}"] if event.actor else []
    for key, value in (event.detail or {}).items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key}={shown[:80]}")
    return f"  ({'; '.join(parts)})" if parts else ""


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _duration(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# --------------------------------------------------------------------------- deliver


def deliver(receiver: Receiver, message: Rendered) -> None:
    """Send ``message`` to ``receiver`` (the default :data:`Sender`)."""
    if receiver.kind == "email":
        _send_smtp(receiver, message)
    else:
        _post(message.extra["url"], message, receiver.timeout_s)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without the body: a 3xx is a failure.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post(url: str, message: Rendered, timeout: float) -> None:
    # Error texts never carry the URL: a Slack or Mattermost webhook URL is a secret.
    request = urllib.request.Request(url, data=message.body, method="POST", headers={
        "Content-Type": message.content_type, "User-Agent": "hotline-probe-ops"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(ERROR_BODY_BYTES)
    except urllib.error.HTTPError as err:
        body = err.read(ERROR_BODY_BYTES).decode("utf-8", "replace")
        raise DeliveryError(f"HTTP {err.code}: {body}".strip()) from err
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise DeliveryError(f"timed out after {timeout:g} s") from err
        raise DeliveryError(f"cannot connect: {err.reason}") from err
    except TimeoutError as err:
        raise DeliveryError(f"timed out after {timeout:g} s (no answer)") from err
    except (OSError, ValueError) as err:
        raise DeliveryError(f"{type(err).__name__}: {err}") from err


def _send_smtp(receiver: Receiver, message: Rendered) -> None:
    assert receiver.smtp_host is not None
    try:
        with smtplib.SMTP(receiver.smtp_host, receiver.smtp_port,
                          timeout=receiver.timeout_s) as smtp:
            if receiver.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if receiver.smtp_username:
                password = receiver.password.reveal() if receiver.password else ""
                smtp.login(receiver.smtp_username, password)
            smtp.sendmail(message.extra["mail_from"], message.extra["mail_to"], message.body)
    except smtplib.SMTPResponseException as err:
        text = err.smtp_error.decode("utf-8", "replace") if isinstance(
            err.smtp_error, bytes) else str(err.smtp_error)
        raise DeliveryError(f"SMTP {err.smtp_code}: {text[:ERROR_BODY_BYTES]}") from err
    except smtplib.SMTPRecipientsRefused as err:
        raise DeliveryError(f"SMTP recipients refused: {sorted(err.recipients)}") from err
    except TimeoutError as err:
        raise DeliveryError(f"SMTP timed out after {receiver.timeout_s:g} s") from err
    except (smtplib.SMTPException, OSError) as err:
        raise DeliveryError(f"SMTP: {type(err).__name__}: {err}") from err


# --------------------------------------------------------------------------- dispatch


@dataclass
class _Job:
    """A claimed row, detached from the session: the send phase touches no database."""

    id: int
    incident_id: int
    receiver: Receiver
    kind: str
    attempt: int
    created_at: dt.datetime
    message: Rendered | None = None
    error: str | None = None  # set: failed before sending (render) or while sending
    deferred: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


def dispatch_due(sessions: sessionmaker[Session], config: OpsConfig,
                 now: dt.datetime | None = None, *, limit: int = 50,
                 send: Sender | None = None) -> DispatchStats:
    """Send up to ``limit`` due notifications: claim (short transaction), send (none), mark.

    ``now`` (default: the clock) is the time of the claim and of the marks; ``send`` replaces
    :func:`deliver` (tests wrap the real one)."""
    send = send or deliver
    stats = DispatchStats()
    jobs = _claim(sessions, config, now or utcnow(), limit, stats)
    if not jobs:
        return stats
    _send_all(jobs, send)
    _mark(sessions, config, now or utcnow(), jobs, stats)
    return stats


def _claim(sessions: sessionmaker[Session], config: OpsConfig, now: dt.datetime, limit: int,
           stats: DispatchStats) -> list[_Job]:
    receivers = {r.name: r for r in config.receivers}
    earlier = aliased(Notification)
    waits = exists().where(earlier.incident_id == Notification.incident_id,
                           earlier.receiver == Notification.receiver,
                           earlier.state == "pending", earlier.id < Notification.id)
    query = (select(Notification)
             .where(Notification.state == "pending", Notification.next_attempt_at <= now,
                    ~waits)
             .order_by(Notification.id).limit(limit)
             .with_for_update(skip_locked=True, of=Notification))
    jobs = []
    with transaction(sessions) as session:
        for row in session.scalars(query):
            stats.claimed += 1
            receiver = receivers.get(row.receiver)
            if receiver is None:
                _give_up(session, row, now, f"receiver {row.receiver!r} is no longer "
                         "configured", stats)
                continue
            row.attempts += 1
            row.next_attempt_at = now + dt.timedelta(
                seconds=2 * receiver.timeout_s + LEASE_MARGIN_S)
            job = _Job(row.id, row.incident_id, receiver, row.event, row.attempts,
                       row.created_at)
            try:
                job.message = _render_row(session, row, receiver, config)
            except Exception as err:  # a rendering bug must not wedge the queue: it is retried
                log.exception("cannot render notification %s", row.id)
                job.error = f"cannot render: {type(err).__name__}: {err}"
            jobs.append(job)
    return jobs


def _render_row(session: Session, row: Notification, receiver: Receiver,
                config: OpsConfig) -> Rendered:
    incident = session.get_one(Incident, row.incident_id)
    events = session.scalars(select(IncidentEvent)
                             .where(IncidentEvent.incident_id == row.incident_id,
                                    IncidentEvent.id <= row.event_id)
                             .order_by(IncidentEvent.id)).all()
    # The notified event last: its id and time make the message (Message-ID, Date).
    timeline = [e for e in events if e.kind not in BOOKKEEPING_EVENTS or e.id == row.event_id]
    return render(incident, timeline, row.event, receiver, config.ops.language,
                  config.ops.public_url)


def _send_all(jobs: list[_Job], send: Sender) -> None:
    by_receiver: dict[str, list[_Job]] = {}
    for job in jobs:
        by_receiver.setdefault(job.receiver.name, []).append(job)
    # One thread per receiver: a receiver that hangs delays only its own rows.
    with ThreadPoolExecutor(max_workers=len(by_receiver),
                            thread_name_prefix="notify") as pool:
        for future in [pool.submit(_send_in_order, group, send)
                       for group in by_receiver.values()]:
            future.result()


def _send_in_order(jobs: list[_Job], send: Sender) -> None:
    failed = False
    for job in jobs:
        if failed:
            job.deferred = True
            continue
        if job.error is None:
            assert job.message is not None
            try:
                send(job.receiver, job.message)
            except Exception as err:  # any sender failure is a failed attempt, recorded
                job.error = (str(err) if isinstance(err, DeliveryError)
                             else f"{type(err).__name__}: {err}")
        if job.error is not None:
            log.warning("notification %s to %s failed (attempt %d): %s", job.id,
                        job.receiver.name, job.attempt, job.error)
            failed = True


def _mark(sessions: sessionmaker[Session], config: OpsConfig, now: dt.datetime,
          jobs: list[_Job], stats: DispatchStats) -> None:
    retry_at: dict[str, dt.datetime] = {}
    with transaction(sessions) as session:
        for job in jobs:
            row = session.get(Notification, job.id, with_for_update=True)
            if row is None or row.state != "pending" or row.attempts != job.attempt:
                continue  # our lease ran out and another instance took the row over
            if job.deferred:
                row.attempts -= 1
                row.next_attempt_at = retry_at.get(job.receiver.name, now)
                stats.deferred += 1
            elif job.error is None:
                _sent(session, row, job, now, stats)
            else:
                _failed_attempt(session, row, job, config, now, stats)
                # The receiver's deferred rows follow its failed one (or, given up, now).
                retry_at[job.receiver.name] = (row.next_attempt_at if row.state == "pending"
                                               else now)


def _sent(session: Session, row: Notification, job: _Job, now: dt.datetime,
          stats: DispatchStats) -> None:
    row.state, row.sent_at, row.last_error = "sent", now, None
    session.add(IncidentEvent(incident_id=row.incident_id, at=now, kind="notified",
                              detail={"receiver": row.receiver, "event": row.event,
                                      "attempt": row.attempts, "notification": row.id}))
    add_counter(session, f"notifications_sent_total:{row.receiver}")
    stats.sent += 1


def _failed_attempt(session: Session, row: Notification, job: _Job, config: OpsConfig,
                    now: dt.datetime, stats: DispatchStats) -> None:
    assert job.error is not None
    add_counter(session, f"notifications_errors_total:{row.receiver}")
    give_up_at = row.created_at + dt.timedelta(seconds=config.notify.give_up_after_s)
    if now >= give_up_at:
        _give_up(session, row, now, job.error, stats)
        return
    row.last_error = job.error[:500]
    row.next_attempt_at = min(now + backoff(config, row.attempts), give_up_at)
    session.add(IncidentEvent(incident_id=row.incident_id, at=now, kind="notify_failed",
                              detail={"receiver": row.receiver, "event": row.event,
                                      "error": row.last_error, "attempt": row.attempts,
                                      "final": False, "notification": row.id}))
    stats.retrying += 1


def _give_up(session: Session, row: Notification, now: dt.datetime, error: str,
             stats: DispatchStats) -> None:
    row.state, row.last_error = "failed", error[:500]
    session.add(IncidentEvent(incident_id=row.incident_id, at=now, kind="notify_failed",
                              detail={"receiver": row.receiver, "event": row.event,
                                      "error": row.last_error, "attempt": row.attempts,
                                      "final": True, "notification": row.id}))
    add_counter(session, f"notifications_failed_total:{row.receiver}")
    stats.failed += 1


def backoff(config: OpsConfig, attempts: int) -> dt.timedelta:
    """The wait after the ``attempts``-th failure: retry_first_s, doubling, at most
    retry_max_s."""
    first, most = config.notify.retry_first_s, config.notify.retry_max_s
    return dt.timedelta(seconds=min(first * 2 ** min(max(attempts - 1, 0), 40), most))


# --------------------------------------------------------------------------- alertmanager


def refresh_alerts(sessions: sessionmaker[Session], config: OpsConfig, *,
                   send: Sender | None = None) -> int:
    """Re-post every announced, unresolved incident to each Alertmanager receiver.

    Alertmanager resolves an alert without ``endsAt`` by itself once it has not been posted
    for its ``resolve_timeout`` (default 5 min), as Prometheus re-sends firing alerts; call this
    from the sweep (more often than resolve_timeout).  Best effort: a failure is logged and
    counted (``notifications_errors_total:<receiver>``), the next sweep posts again.
    Returns the number of alerts Alertmanager accepted."""
    send = send or deliver
    managers = [r for r in config.receivers if r.kind == "alertmanager"]
    if not managers:
        return 0
    posts: list[tuple[Receiver, Rendered]] = []
    with transaction(sessions) as session:
        for receiver in managers:
            announced = exists().where(Notification.incident_id == Incident.id,
                                       Notification.receiver == receiver.name,
                                       Notification.event == "open",
                                       Notification.state == "sent")
            for incident in session.scalars(select(Incident).where(
                    Incident.resolved_at.is_(None), announced).order_by(Incident.id)):
                posts.append((receiver, render(incident, [], "update", receiver,
                                               config.ops.language, config.ops.public_url)))
    accepted, errors = 0, dict[str, int]()
    for receiver, message in posts:
        try:
            send(receiver, message)
            accepted += 1
        except Exception as err:  # best effort by design: the next sweep re-posts
            log.warning("alert refresh to %s failed: %s", receiver.name, err)
            errors[receiver.name] = errors.get(receiver.name, 0) + 1
    if errors:
        with transaction(sessions) as session:
            for name, count in errors.items():
                add_counter(session, f"notifications_errors_total:{name}", count)
    return accepted
