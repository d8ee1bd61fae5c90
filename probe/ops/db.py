"""The ops database: SQLAlchemy 2 models, the engine, and transactions that several instances share.

Every ops instance is stateless: what it knows lives here, and every decision is made inside a
transaction (on PostgreSQL under an advisory lock per target, on SQLite under SQLite's single
writer lock taken at ``BEGIN IMMEDIATE``), so any number of instances agree.  The schema is
created and upgraded only by the Alembic migrations in ``probe/ops/migrations/``
(:func:`upgrade`); a test checks that the models and the migrations describe the same tables.

Times are stored as UTC and always come back timezone-aware (:class:`UtcDateTime`), on SQLite too.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from probe.config.secrets import Secret

#: JSON documents: JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
Json = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone: we add it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the ops database stores UTC only")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


class Probe(Base):
    """One probe as ops knows it: presence from its retained status, its latest health."""

    __tablename__ = "probes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="unknown")  # online/offline/unknown
    boot: Mapped[int | None] = mapped_column(Integer)
    status_reason: Mapped[str | None] = mapped_column(String(200))
    status_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    health: Mapped[dict[str, Any] | None] = mapped_column(Json)
    health_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    first_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_result_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    silent: Mapped[bool] = mapped_column(Boolean, default=False)


class HealthSample(Base):
    """A few numbers of one health report, kept over time for the probe page's charts (the
    latest full report stays in :attr:`Probe.health`).  Filled by ingest at most once per
    ``store.HEALTH_SAMPLE_S`` per probe; removed by retention (``retention.health_days``)."""

    __tablename__ = "health_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    probe_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)  # when ops received it
    outbox_count: Mapped[int | None] = mapped_column(Integer)
    outbox_dropped: Mapped[int | None] = mapped_column(Integer)
    line_state: Mapped[str | None] = mapped_column(String(24))
    line_volts: Mapped[float | None] = mapped_column(Float)
    signal_dbm: Mapped[float | None] = mapped_column(Float)
    operator: Mapped[str | None] = mapped_column(String(64))
    access_technology: Mapped[str | None] = mapped_column(String(24))
    clock_synced: Mapped[bool | None] = mapped_column(Boolean)
    ok: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (
        Index("ix_health_samples_probe_at", "probe_id", "at"),  # a probe's chart, throttling
        Index("ix_health_samples_at", "at"),  # retention
    )


class PresenceEvent(Base):
    __tablename__ = "presence_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    probe_id: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(16))  # online / offline / silent / back
    boot: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(200))


class Result(Base):
    """One call result as the probe published it, with the columns correlation filters on."""

    __tablename__ = "results"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the probe's UUID: de-dup
    probe_id: Mapped[str] = mapped_column(String(64))
    site: Mapped[str | None] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(80))  # sip, analog, gsm:<operator>
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(24))
    met: Mapped[bool] = mapped_column(Boolean)
    vote: Mapped[str] = mapped_column(String(12))  # ok / fail / degraded / local (see ingest)
    cause: Mapped[str | None] = mapped_column(String(64))  # the probe's leading cause code
    verdict: Mapped[str | None] = mapped_column(String(12))
    final: Mapped[str | None] = mapped_column(String(80))
    cause_detail: Mapped[dict[str, Any] | None] = mapped_column(Json)
    pdd_ms: Mapped[int | None] = mapped_column(Integer)
    answer_ms: Mapped[int | None] = mapped_column(Integer)
    mos: Mapped[float | None] = mapped_column(Float)
    document: Mapped[dict[str, Any]] = mapped_column(Json)

    __table_args__ = (
        Index("ix_results_target_started", "target", "started_at"),
        Index("ix_results_probe_started", "probe_id", "started_at"),
        Index("ix_results_started", "started_at"),  # fleet-wide windows (metrics, retention)
        Index("ix_results_received", "received_at"),  # ingest lag, live updates
    )


class Quarantine(Base):
    """A message ingest refused, with the reason: kept for a look, counted in metrics."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    topic: Mapped[str] = mapped_column(String(300))
    probe_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(500))
    size: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # the first bytes only


class Incident(Base):
    """A judgement that lasts: open -> acknowledged -> resolved, its history in IncidentEvent.

    ``key`` names what it is about (``hotline:support``, ``path:support:gsm:Orange``,
    ``site:support:branch-017``, ``probe:branch-017``); at most one unresolved incident per key
    (a partial unique index), so instances racing to open the same one cannot both succeed."""

    __tablename__ = "incidents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(300))
    target: Mapped[str | None] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(String(16))  # hotline / path / site / probe
    subject: Mapped[str] = mapped_column(String(200))  # *, gsm:Orange, sip, branch-017
    state: Mapped[str] = mapped_column(String(16), default="open")
    cause: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(12))  # down / degraded
    opened_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    sites: Mapped[list[str]] = mapped_column(Json, default=list)
    evidence: Mapped[list[str]] = mapped_column(Json, default=list)
    detail: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    last_round: Mapped[int] = mapped_column(Integer)
    good_rounds: Mapped[int] = mapped_column(Integer, default=0)
    flapping: Mapped[bool] = mapped_column(Boolean, default=False)
    suppressed: Mapped[str | None] = mapped_column(String(32))  # maintenance / probe_offline

    __table_args__ = (
        Index("uq_incidents_open_key", "key", unique=True,
              postgresql_where=text("resolved_at IS NULL"),
              sqlite_where=text("resolved_at IS NULL")),
        Index("ix_incidents_state", "state"),
    )


class IncidentEvent(Base):
    __tablename__ = "incident_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class Notification(Base):
    """The durable notification queue: one row per (incident event, receiver)."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("incident_events.id"))
    receiver: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(16))  # open / escalate / update / resolve
    state: Mapped[str] = mapped_column(String(12), default="pending")  # pending/sent/failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        UniqueConstraint("event_id", "receiver", name="uq_notifications_event_receiver"),
        Index("ix_notifications_due", "state", "next_attempt_at"),
    )


class Maintenance(Base):
    """A maintenance window: incidents in it are marked and not notified.  ``repeat``:
    ``none`` (one-off), ``daily`` or ``weekly`` (the same span every day / week after)."""

    __tablename__ = "maintenance"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target: Mapped[str | None] = mapped_column(String(64))  # None: every target
    probe_id: Mapped[str | None] = mapped_column(String(64))  # None: every site
    starts_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    repeat: Mapped[str] = mapped_column(String(8), default="none")
    until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)  # last repetition
    reason: Mapped[str] = mapped_column(String(500), default="")
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(12))  # viewer / operator / admin
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    kind: Mapped[str] = mapped_column(String(8), default="api")  # api / session
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginAttempt(Base):
    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    name: Mapped[str] = mapped_column(String(100))
    remote_addr: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    user_name: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    remote_addr: Mapped[str | None] = mapped_column(String(64))


class Command(Base):
    """A command sent to a probe; any instance stores the reply (matched by correlation id)."""

    __tablename__ = "commands"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # MQTT correlation data
    probe_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    requested_by: Mapped[str] = mapped_column(String(100))
    sent_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    replies: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    last_reply_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class Recording(Base):
    """What the caller heard on a failed or degraded call (the probe uploads it separately)."""

    __tablename__ = "recordings"
    result_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    probe_id: Mapped[str] = mapped_column(String(64), index=True)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Lease(Base):
    """A named job that one instance at a time runs (the sweeps): held until ``until``."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    until: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class Counter(Base):
    """Fleet-wide counters every instance adds to (quarantined by reason, ...), for /metrics."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


# --------------------------------------------------------------------------- engine


def make_engine(url: str, *, password: Secret | None = None, pool_size: int = 5) -> Engine:
    """An engine for ``url``: SQLite in WAL with full sync and serialised writers, or
    PostgreSQL through psycopg 3 with a pool."""
    parsed = make_url(url)
    if password is not None:
        parsed = parsed.set(password=password.reveal())
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 60, "check_same_thread": False},
                               pool_size=pool_size, max_overflow=10)
        _sqlite_pragmas(engine)
        return engine
    return create_engine(parsed, pool_size=pool_size, max_overflow=pool_size,
                         pool_pre_ping=True)


def _sqlite_pragmas(engine: Engine) -> None:
    # WAL lets the console read while ingest writes; synchronous=FULL makes a commit survive a
    # power cut (the PUBACK follows it).  pysqlite's own transaction handling is switched off and
    # every transaction starts with BEGIN IMMEDIATE (the SQLAlchemy-documented recipe), so two
    # writers queue on the lock instead of one failing with "database is locked" mid-way.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on an exception."""
    with sessions() as session, session.begin():
        yield session


def lock_key(session: Session, key: str) -> None:
    """Serialise decisions about ``key`` across instances until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock.  SQLite: the transaction already holds the
    database's single write lock (BEGIN IMMEDIATE), which serialises everything."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(zlib.crc32(key.encode()))))


def insert_for(session: Session, model: type[Base]) -> Any:
    """The backend's INSERT with ``on_conflict_do_nothing`` / ``on_conflict_do_update``: the
    unique constraint, not a cache, decides what is a duplicate.  (SQLAlchemy ships both; the
    two dialects' insert constructs have the same interface.)"""
    from sqlalchemy.dialects import postgresql, sqlite

    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def add_counter(session: Session, name: str, by: int = 1) -> None:
    """Add to a fleet-wide counter (created at zero) inside the caller's transaction."""
    stmt = insert_for(session, Counter).values(name=name, value=by)
    session.execute(stmt.on_conflict_do_update(index_elements=["name"],
                                               set_={"value": Counter.value + by}))


def counters(session: Session) -> dict[str, int]:
    return {c.name: c.value for c in session.scalars(select(Counter))}


# --------------------------------------------------------------------------- migrations


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location",
                           str(resources.files("probe.ops") / "migrations"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision`` (idempotent; safe with several instances on
    PostgreSQL: the migration runs under an advisory lock)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


