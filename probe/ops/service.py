"""The ops service: one process, a few threads, no state of its own.

::

    paho network thread ─► ingest worker ─► database (commit, then PUBACK)
                                 │ which targets and probes changed
                                 ▼
                           evaluator ─► incidents (under the target's lock) ─► notification rows
    sweeper (every presence.sweep_s): silence, presence, maintenance, retention (one instance)
    notifier: the notification queue ─► webhook / email / Alertmanager (never holds a lock)
    HTTP (uvicorn): API, /metrics, console

Any number of instances may run against one database and one broker (the share group splits
the results between them); every decision is taken in a transaction, so they agree.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from probe.ops.config import OpsConfig
from probe.ops.db import (
    HealthSample,
    Incident,
    Lease,
    LoginAttempt,
    Probe,
    Quarantine,
    Recording,
    Result,
    insert_for,
    make_engine,
    session_factory,
    transaction,
    upgrade,
    utcnow,
)
from probe.ops.incidents import Change, evaluate_probe, evaluate_target, mark_silent
from probe.ops.ingest import Ingest
from probe.ops.store import Stored

log = logging.getLogger("probe.ops.service")
STALE_S = 120  # a thread silent this long stops the systemd watchdog pings


@dataclass(frozen=True)
class Timing:
    """How often the background loops run (tests shorten them)."""

    evaluate_s: float = 0.2
    #: A target is judged again at most this often: with a thousand probes reporting, every
    #: batch would otherwise reload the target's whole window (incident latency stays ~1 s).
    target_every_s: float = 1.0
    notify_s: float = 1.0
    alert_refresh_s: float = 60.0
    retention_s: float = 3600.0


@dataclass
class Dirty:
    """Targets and probes whose judgements must be looked at again (thread-safe)."""

    targets: set[str] = field(default_factory=set)
    probes: set[str] = field(default_factory=set)
    seen_probes: set[str] = field(default_factory=set)  # new results: only if an incident is open
    lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)
    last_judged: dict[str, float] = field(default_factory=dict)

    def add(self, stored: Stored) -> None:
        with self.lock:
            self.targets |= stored.targets
            self.probes |= stored.probes
            self.seen_probes |= stored.seen_probes
        if stored.targets or stored.probes:
            self.wake.set()

    def take(self, every_s: float = 0.0,
             clock: Callable[[], float] = time.monotonic) -> tuple[set[str], set[str], set[str]]:
        """The targets due (not judged in the last ``every_s``; the others stay for later),
        the probes with news, the probes that merely sent results."""
        now = clock()
        with self.lock:
            due = {t for t in self.targets if now - self.last_judged.get(t, -1e18) >= every_s}
            self.targets -= due
            for target in due:
                self.last_judged[target] = now
            probes, seen = self.probes, self.seen_probes
            self.probes, self.seen_probes = set(), set()
            if not self.targets:
                self.wake.clear()
        return due, probes, seen

    @property
    def idle(self) -> bool:
        with self.lock:
            return not (self.targets or self.probes or self.seen_probes)


def _deleted(result: Any) -> int:
    """Rows a DELETE removed (a CursorResult's rowcount: reliable for DELETE on both
    backends)."""
    return int(result.rowcount)


class OpsService:
    def __init__(self, config: OpsConfig, *, timing: Timing = Timing(),
                 on_change: Callable[[list[Change]], None] | None = None) -> None:
        self.config = config
        self.timing = timing
        self.on_change = on_change
        config.ops.state_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(config.database_url, password=config.database.password,
                                  pool_size=config.database.pool_size)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.dirty = Dirty()
        self.ingest = Ingest(config, self.sessions, on_stored=self.dirty.add)
        self._stop = threading.Event()
        self._notify_wake = threading.Event()
        self.beats: dict[str, float] = {}
        self._threads: list[threading.Thread] = []
        self.http: Any = None
        self.http_port: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, *, http: bool = True) -> OpsService:
        upgrade(self.engine)
        self.ingest.start()
        for name, loop in (("ops-evaluator", self._evaluate_loop),
                           ("ops-sweeper", self._sweep_loop),
                           ("ops-notifier", self._notify_loop)):
            thread = threading.Thread(target=self._guard(name, loop), name=name, daemon=True)
            self.beats[name] = time.monotonic()
            thread.start()
            self._threads.append(thread)
        if http:
            self._start_http()
        log.info("ops instance %s started (database %s)", self.config.ops.instance,
                 self.engine.url.render_as_string(hide_password=True))
        return self

    def stop(self) -> None:
        self._stop.set()
        self.dirty.wake.set()
        self._notify_wake.set()
        if self.http is not None:
            self.http.should_exit = True
        self.ingest.stop()
        for thread in self._threads:
            thread.join(10)
        self.engine.dispose()

    def alive(self) -> bool:
        now = time.monotonic()
        beats = [*self.beats.values(), self.ingest.last_beat]
        return all(now - b < STALE_S for b in beats)

    def serve_forever(self) -> int:
        """Run until SIGTERM / SIGINT, pinging systemd's watchdog while every thread lives."""
        from probe.daemon.systemd import Notifier

        notifier = Notifier.from_environment()
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        notifier.ready(f"ops instance {self.config.ops.instance}")
        while not stop.wait(5):
            if self.alive():
                notifier.watchdog()
            else:
                log.error("a thread is stuck: watchdog pings stop")
        notifier.stopping()
        self.stop()
        return 0

    # -- loops ----------------------------------------------------------------------------------
    def _guard(self, name: str, loop: Callable[[], None]) -> Callable[[], None]:
        """A loop that hits an unexpected error logs it and goes on after a pause: a dead
        evaluator would leave ops believing the fleet is fine."""
        def run() -> None:
            while not self._stop.is_set():
                try:
                    loop()
                except Exception:
                    log.exception("%s failed; going on in 2 s", name)
                    self._stop.wait(2)
        return run

    def _evaluate_loop(self) -> None:
        while not self._stop.is_set():
            self.beats["ops-evaluator"] = time.monotonic()
            self.dirty.wake.wait(self.timing.evaluate_s)
            targets, probes, seen = self.dirty.take(self.timing.target_every_s)
            self.evaluate(targets, probes | self._with_open_probe_incidents(seen))
            if self.dirty.targets:  # not yet due: sleep until the evaluate_s tick, not busy
                self._stop.wait(self.timing.evaluate_s)

    def _with_open_probe_incidents(self, probes: set[str]) -> set[str]:
        """Of these probes, the ones whose own incident is open: a new, good result may
        resolve it.  (Others sent nothing that could change their probe-local judgement.)"""
        if not probes:
            return set()
        with self.sessions() as session:
            return set(session.scalars(select(Incident.subject).where(
                Incident.scope == "probe", Incident.resolved_at.is_(None),
                Incident.subject.in_(sorted(probes)))))

    def evaluate(self, targets: set[str], probes: set[str],
                 now: dt.datetime | None = None) -> list[Change]:
        changes: list[Change] = []
        for target in sorted(targets):
            with transaction(self.sessions) as session:
                changes += evaluate_target(session, self.config, target, now or utcnow())
        for probe_id in sorted(probes):
            with transaction(self.sessions) as session:
                changes += evaluate_probe(session, self.config, probe_id, now or utcnow())
        if changes:
            self._notify_wake.set()
            if self.on_change is not None:
                self.on_change(changes)
        return changes

    def _sweep_loop(self) -> None:
        last_retention = 0.0
        while not self._stop.wait(self.config.presence.sweep_s):
            self.beats["ops-sweeper"] = time.monotonic()
            self.sweep()
            if time.monotonic() - last_retention > self.timing.retention_s:
                last_retention = time.monotonic()
                if self._lease("retention", self.timing.retention_s):
                    self.purge()

    def sweep(self, now: dt.datetime | None = None) -> list[Change]:
        """Judgements the clock changes without a new result: silence, presence, maintenance."""
        now = now or utcnow()
        with transaction(self.sessions) as session:
            mark_silent(session, self.config, now)
            probes = set(session.scalars(select(Probe.id)))
            horizon = now - dt.timedelta(days=1)
            targets = set(session.scalars(select(Result.target).where(
                Result.started_at >= horizon).distinct()))
        return self.evaluate(targets, probes, now)

    def _notify_loop(self) -> None:
        from probe.ops.notify import dispatch_due, refresh_alerts

        last_refresh = time.monotonic()
        while not self._stop.is_set():
            self.beats["ops-notifier"] = time.monotonic()
            self._notify_wake.wait(self.timing.notify_s)
            self._notify_wake.clear()
            dispatch_due(self.sessions, self.config)
            # Alertmanager resolves an alert by itself after resolve_timeout (5 min) unless the
            # sender posts it again, as Prometheus does: re-post the open ones every minute.
            if time.monotonic() - last_refresh >= self.timing.alert_refresh_s:
                last_refresh = time.monotonic()
                refresh_alerts(self.sessions, self.config)

    def _lease(self, name: str, seconds: float) -> bool:
        """Take the named lease if it is free or expired: one instance runs that job."""
        now = utcnow()
        me = self.config.ops.instance
        until = now + dt.timedelta(seconds=seconds)
        with transaction(self.sessions) as session:
            session.execute(insert_for(session, Lease).values(
                name=name, holder="", until=now - dt.timedelta(seconds=1)
            ).on_conflict_do_nothing(index_elements=["name"]))
            taken = session.execute(update(Lease).where(
                Lease.name == name, (Lease.until < now) | (Lease.holder == me)
            ).values(holder=me, until=until).returning(Lease.name)).first()
            return taken is not None

    def purge(self, now: dt.datetime | None = None) -> dict[str, int]:
        """Retention: results, recordings, quarantine and health samples older than
        configured."""
        now = now or utcnow()
        r = self.config.retention
        days = dt.timedelta(days=1)
        tables = (("results", Result, Result.started_at, r.results_days),
                  ("recordings", Recording, Recording.received_at, r.recordings_days),
                  ("quarantine", Quarantine, Quarantine.received_at, r.quarantine_days),
                  ("health_samples", HealthSample, HealthSample.at, r.health_days),
                  ("login_attempts", LoginAttempt, LoginAttempt.at, 1))
        with transaction(self.sessions) as session:
            counts = {name: _deleted(session.execute(delete(model).where(
                column < now - keep * days))) for name, model, column, keep in tables}
        log.info("retention: removed %s", counts)
        return counts

    # -- HTTP -----------------------------------------------------------------------------------
    def _start_http(self) -> None:
        import uvicorn

        from probe.ops.api import create_app

        h = self.config.http
        app = create_app(self.config, self.sessions, commander=self.ingest)
        server = uvicorn.Server(uvicorn.Config(
            app, host=h.listen, port=h.port, log_config=None, access_log=False,
            ssl_certfile=str(h.tls_cert_file) if h.tls_cert_file else None,
            ssl_keyfile=str(h.tls_key_file) if h.tls_key_file else None,
            proxy_headers=False))  # forwarded headers: only from http.trusted_proxies (api)
        self.http = server
        thread = threading.Thread(target=server.run, name="ops-http", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            raise RuntimeError(f"the HTTP server did not start on {h.listen}:{h.port}")
        self.http_port = server.servers[0].sockets[0].getsockname()[1]
        self._threads.append(thread)
