"""Console: how long the fleet page takes with a big fleet, on the server and in a browser.

A database is seeded with 1,000 probes x 3 targets x 2 channels (sip, gsm): 6,000 results per
300 s round.  First the fleet grid's default window (24 rounds = 2 h, 144,000 results), then a
whole day (288 rounds, 1.7 M results: what the 24 h ``rounds=288`` view and the live page's
change poll read).  A week (2,016 rounds, 12 M results) is too slow to seed here.  The results'
``document`` is ``{}``: the pages measured never read it, and 1.7 M real ~2 kB documents would
measure the seeding, not the console.  PostgreSQL is seeded with ``COPY`` (psycopg's
``cursor.copy``), SQLite with ``executemany`` in one transaction.

Then, through a real uvicorn (the API app with the console, as ``probe ops serve`` runs it):

* server time of ``GET /`` and ``GET /fleet/grid``: median and p95 of ``--requests`` requests
  (the client is on the same host: this is the server's time plus a loopback round trip);
* the page's HTML size;
* the live page's change poll (``change_marks``, every 2 s per open page), in process;
* headless chromium (Selenium): from navigation start to the grid in the DOM
  (``domInteractive``: the grid is server-rendered into the page) and to ``readyState ==
  complete`` (``loadEventEnd``), from the Performance API's navigation entry.

Aims: server < 1 s, browser < 2 s.  Figures only, never asserted.

Run alone: ``.venv/bin/python -m tests.benchmarks.bench_console [--quick] [--no-sqlite]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, text

from probe.ops import auth
from probe.ops.api import create_app
from probe.ops.config import OpsConfig, parse_ops_config
from probe.ops.console.fleet import MAX_ROUNDS, change_marks, horizon
from probe.ops.db import Probe, make_engine, session_factory, transaction, upgrade
from probe.sim.postgres import LocalPostgres

from ._stats import percentile, table

PROBES = 1000
TARGETS = ("support", "orders", "sales")
CHANNELS = ("sip", "gsm")
OPERATORS = ("Orange", "SFR", "Bouygues")
ROUND_S = 300
WINDOW_ROUNDS = 24  # the fleet grid's default (probe.ops.console.fleet.DEFAULT_ROUNDS)
DAY_ROUNDS = 288
AIM_SERVER_S, AIM_BROWSER_S = 1.0, 2.0
#: (vote, outcome, met, cause) and their weights: mostly fine, as a real fleet is.
VOTES = ((("ok", "answered", True, None), 93), (("degraded", "answered", True,
                                                   "quality.low_mos"), 3),
         (("fail", "busy", False, "hotline.busy"), 2),
         (("local", "not_registered", False, "modem.not_registered"), 2))
COLUMNS = ("id", "probe_id", "site", "target", "channel", "path", "started_at", "received_at",
           "outcome", "met", "vote", "cause", "verdict", "final", "pdd_ms", "answer_ms",
           "document")
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--window-size=1400,1000")


@dataclass
class Measured:
    backend: str
    seeded: str
    seed_s: float
    server: dict[str, list[float]] = field(default_factory=dict)  # path -> seconds
    html_bytes: dict[str, int] = field(default_factory=dict)
    marks_s: list[float] = field(default_factory=list)
    browser: dict[str, list[float]] = field(default_factory=dict)  # mark -> seconds


# --------------------------------------------------------------------------- seeding


def site(i: int) -> str:
    return f"Office {i:04d}"


def result_rows(rounds: range, now: dt.datetime) -> Iterator[tuple[Any, ...]]:
    """Rounds ``k`` rounds back from the current one, every probe, target and channel."""
    rng = random.Random(20261202)
    choices, weights = zip(*VOTES, strict=True)
    current = int(now.timestamp()) // ROUND_S * ROUND_S
    serial = rounds.start * PROBES * len(TARGETS) * len(CHANNELS)
    for k in rounds:
        start = dt.datetime.fromtimestamp(current - k * ROUND_S, dt.UTC)
        for p in range(PROBES):
            probe_id = f"p{p:04d}"
            offset = dt.timedelta(seconds=p % 240)  # the probes spread their calls
            for t, target in enumerate(TARGETS):
                for channel in CHANNELS:
                    vote, outcome, met, cause = rng.choices(choices, weights)[0]
                    at = start + offset + dt.timedelta(seconds=20 * t)
                    path = "sip" if channel == "sip" else f"gsm:{OPERATORS[p % 3]}"
                    serial += 1
                    yield (f"00000000-0000-4000-8000-{serial:012x}", probe_id, site(p), target,
                           channel, path, at, at + dt.timedelta(seconds=2), outcome, met, vote,
                           cause, "ok" if vote == "ok" else vote, None, 400, 2000, "{}")


def seed_probes(engine: Engine, now: dt.datetime) -> str:
    """The probes and a session for the console (the plaintext token)."""
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        session.execute(insert(Probe), [
            {"id": f"p{p:04d}", "site": site(p), "state": "offline" if p % 97 == 0 else
             "online", "boot": 1, "status_at": now, "first_seen": now, "silent": False,
             "last_result_at": now} for p in range(PROBES)])
        user = auth.create_user(session, "bench", "bench-password", "viewer")
        plaintext, _row = auth.issue_token(session, user, "bench", "session",
                                           dt.timedelta(hours=4))
    return plaintext


def seed_postgres(engine: Engine, rounds: range, now: dt.datetime) -> float:
    started = time.perf_counter()
    raw = engine.raw_connection()
    try:
        connection: Any = raw.driver_connection
        with connection.cursor() as cursor, cursor.copy(
                f"COPY results ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in result_rows(rounds, now):
                copy.write_row(row)
        connection.commit()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE results")  # as autovacuum would soon: fair plans
        connection.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def seed_sqlite(engine: Engine, rounds: range, now: dt.datetime) -> float:
    started = time.perf_counter()
    names = ", ".join(COLUMNS)
    marks = ", ".join(f":{c}" for c in COLUMNS)
    batch: list[dict[str, Any]] = []
    with engine.begin() as connection:
        statement = text(f"INSERT INTO results ({names}) VALUES ({marks})")
        for row in result_rows(rounds, now):
            values = dict(zip(COLUMNS, row, strict=True))
            # SQLAlchemy's own SQLite datetime text (what UtcDateTime writes and compares)
            values["started_at"] = _sqlite_time(values["started_at"])
            values["received_at"] = _sqlite_time(values["received_at"])
            batch.append(values)
            if len(batch) == 20000:
                connection.execute(statement, batch)
                batch = []
        if batch:
            connection.execute(statement, batch)
        connection.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def _sqlite_time(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")


# --------------------------------------------------------------------------- measuring


def console_config(state_dir: Path, url: str) -> OpsConfig:
    return parse_ops_config({"ops": {"instance": "bench-console", "state_dir": str(state_dir)},
                             "database": {"url": url}, "http": {"port": 0},
                             "correlation": {"round_s": ROUND_S}})


def timed_get(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"Cookie": f"hp_session={token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - started, len(body)


def measure(m: Measured, config: OpsConfig, engine: Engine, token: str, requests: int,
            browser_loads: int) -> None:
    from tests.ops.conftest import served

    sessions = session_factory(engine)
    app = create_app(config, sessions)
    with served(app, config) as base:
        for path in ("/", "/fleet/grid"):
            timed_get(base + path, token)  # warm: templates compiled, pool filled
            times = []
            for _ in range(requests):
                seconds, size = timed_get(base + path, token)
                times.append(seconds)
            m.server[path], m.html_bytes[path] = times, size
        since = dt.datetime.now(dt.UTC) - horizon(config, MAX_ROUNDS)
        for _ in range(requests):
            started = time.perf_counter()
            with transaction(sessions) as session:
                change_marks(session, since)
            m.marks_s.append(time.perf_counter() - started)
        if browser_loads:
            m.browser = browser_timing(base, token, browser_loads)


def browser_timing(base: str, token: str, loads: int) -> dict[str, list[float]]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    out: dict[str, list[float]] = {"grid in the DOM": [], "readyState complete": []}
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"),
                                  options=options)
        try:
            driver.set_page_load_timeout(300)
            driver.get(f"{base}/login")  # a page of the site, to set its cookie on
            driver.add_cookie({"name": "hp_session", "value": token, "path": "/",
                               "httpOnly": True})
            driver.get(f"{base}/")  # warm: the static files cached, as for a regular user
            for _ in range(loads):
                driver.get(f"{base}/")  # returns at the load event
                nav = driver.execute_script(
                    "const n = performance.getEntriesByType('navigation')[0];"
                    "return {grid: document.getElementById('grid') !== null,"
                    " ready: document.readyState, interactive: n.domInteractive,"
                    " complete: n.loadEventEnd};")
                if not nav["grid"] or nav["ready"] != "complete":
                    raise RuntimeError(f"the fleet page did not load: {nav}")
                out["grid in the DOM"].append(nav["interactive"] / 1000)
                out["readyState complete"].append(nav["complete"] / 1000)
        finally:
            driver.quit()
    return out


# --------------------------------------------------------------------------- the runs


def scenarios(quick: bool) -> list[tuple[str, range]]:
    """(what is seeded by then, the rounds to add): the window, then the rest of the day."""
    day = WINDOW_ROUNDS * 3 if quick else DAY_ROUNDS
    n = PROBES * len(TARGETS) * len(CHANNELS)
    return [(f"{WINDOW_ROUNDS} rounds ({WINDOW_ROUNDS * n:,} results)", range(WINDOW_ROUNDS)),
            (f"{day} rounds ({day * n:,} results)", range(WINDOW_ROUNDS, day))]


def run(*, quick: bool = False, sqlite: bool = True, requests: int = 10,
        browser_loads: int = 5) -> list[Measured]:
    out: list[Measured] = []
    now = dt.datetime.now(dt.UTC)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-console-")))
        pg = stack.enter_context(LocalPostgres())
        backends: list[tuple[str, str, Any]] = [("postgresql", pg.url, seed_postgres)]
        if sqlite:
            backends.append(("sqlite", f"sqlite:///{work}/ops.sqlite3", seed_sqlite))
        for backend, url, seed in backends:
            engine = make_engine(url)
            upgrade(engine)
            token = seed_probes(engine, now)
            config = console_config(work / backend, url)
            seeded_s = 0.0
            for label, rounds in scenarios(quick):
                seeded_s += seed(engine, rounds, now)
                print(f"  {backend}: seeded {label} in {seeded_s:.1f} s", file=sys.stderr,
                      flush=True)
                m = Measured(backend, label, seeded_s)
                measure(m, config, engine, token, requests, browser_loads)
                out.append(m)
            engine.dispose()
    return out


def _median_p95(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    return f"{statistics.median(ordered):.3f} / {percentile(ordered, 95):.3f}"


def report(results: Sequence[Measured]) -> str:
    rows: list[list[str]] = []
    for m in results:
        first = True
        figures = [(f"server GET {path}  (median / p95 s)", _median_p95(times),
                    f"< {AIM_SERVER_S:g} s") for path, times in m.server.items()]
        figures += [(f"HTML size {path}", f"{size / 1024:,.0f} KiB", "")
                    for path, size in m.html_bytes.items()]
        figures.append(("change poll, every 2 s per page (s)", _median_p95(m.marks_s), ""))
        figures += [(f"browser: {mark} (median / p95 s)", _median_p95(times),
                     f"< {AIM_BROWSER_S:g} s") for mark, times in m.browser.items()]
        for figure, value, aim in figures:
            rows.append([m.backend if first else "", m.seeded if first else "", figure, value,
                         aim])
            first = False
    return ("Console: fleet page, 1,000 probes x 3 targets x 2 channels, 300 s rounds "
            "(documents {}; seeding time is cumulative per backend)\n"
            + table(["backend", "seeded", "figure", "value", "aim"], rows, left=3) + "\n"
            + "\n".join(f"  seeding {m.backend}, {m.seeded}: {m.seed_s:.1f} s (cumulative)"
                        for m in results))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_console",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true",
                   help=f"seed {WINDOW_ROUNDS * 3} rounds instead of a day")
    p.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    p.add_argument("--requests", type=int, default=10, help="timed requests per page")
    p.add_argument("--browser-loads", type=int, default=5,
                   help="timed page loads in chromium (0: none)")
    args = p.parse_args(argv)
    print(report(run(quick=args.quick, sqlite=not args.no_sqlite, requests=args.requests,
                     browser_loads=args.browser_loads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
