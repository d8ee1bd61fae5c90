"""The ops console in a real browser: uvicorn on 127.0.0.1 serving the API app with the console
router, a seeded SQLite database (results stored through ingest's own parse and store, so votes
and paths are what ingest makes of real result documents), and headless Debian chromium driven
by Selenium.  Screenshots of every page land in the test's temporary directory."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
import math
import re
import struct
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from probe.ops import auth
from probe.ops.api import create_app
from probe.ops.config import OpsConfig, parse_ops_config
from probe.ops.console import console_router
from probe.ops.console.details import health_facts
from probe.ops.console.texts import RU
from probe.ops.db import (
    AuditLog,
    Command,
    HealthSample,
    Incident,
    IncidentEvent,
    Maintenance,
    PresenceEvent,
    Probe,
    Result,
    make_engine,
    session_factory,
    transaction,
    upgrade,
    utcnow,
)
from probe.ops.messages import ResultIn, parse_message
from probe.ops.store import Stored, health_sample, store
from tests.ops.conftest import served
from tests.ops.fleet import aligned, result_doc

PASSWORD = "correct horse battery"
ROUND_S = 60
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--window-size=1400,1000")


# --------------------------------------------------------------------------- the fleet


@dataclass
class Seeded:
    base: str = ""
    sessions: Any = None
    shots: Path = Path()
    votes: dict[str, str] = field(default_factory=dict)  # result id -> expected vote
    ids: dict[str, str] = field(default_factory=dict)  # name -> result id
    incident_id: int = 0


def degraded_doc(probe_id: str, started_at: dt.datetime) -> dict[str, Any]:
    """An answered call whose audio was poor: met, but degraded by a path cause."""
    doc = result_doc("sip-answered", probe_id=probe_id, started_at=started_at,
                     site="Office South")
    doc["diagnosis"] = copy.deepcopy(doc["diagnosis"]) | {
        "verdict": "degraded",
        "summary": "Poor audio quality: MOS 3.1 (itu-t-g107/delay-assumed).",
        "remedy": "Check the network path for loss and jitter, and the codec in use.",
        "causes": [{"actor": "network", "category": "quality", "channels": ["sip"],
                    "code": "quality.low_mos", "scope": "path", "severity": "degraded",
                    "evidence": {"mos": 3.1, "method": "itu-t-g107/delay-assumed"},
                    "summary": "Poor audio quality: MOS 3.1 (itu-t-g107/delay-assumed).",
                    "remedy": "Check the network path for loss and jitter, and the codec "
                              "in use."}]}
    return doc


def ingest(session: Session, doc: dict[str, Any], now: dt.datetime) -> ResultIn:
    """Through ingest's own parser (schema, vote, path) and store."""
    item = parse_message(f"hotline-probe/v1/{doc['probe_id']}/result", json.dumps(doc).encode())
    assert isinstance(item, ResultIn), item
    store(session, item, now, Stored())
    return item


def tone_wav(seconds: float = 2.0, rate: int = 8000, hz: float = 1000.0) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * i / rate)))
            for i in range(int(seconds * rate))))
    return buf.getvalue()


HEALTH = {"probe_id": "p1", "site": "Office North", "at": "2025-03-03T12:00:00Z", "boot": 3,
          "uptime_s": 93784, "clock_synced": True,
          "outbox": {"count": 0, "bytes": 0, "dropped": 0, "in_flight": 0, "refused": 0},
          "channels": {"sip": {"state": "idle", "error": None, "last_call": "2025-03-03T11:59Z",
                               "last_success": "2025-03-03T11:59Z",
                               "registration": {"registered": True, "code": 200}}},
          "line": None, "status": {"ok": True, "faults": []},
          "versions": {"probe": "0.1.0", "python": "3.11.7", "pjproject": "2.15.1"}}


def seed(sessions: sessionmaker[Session], s: Seeded) -> None:
    now = utcnow()
    base = aligned(ROUND_S, now)

    def at(k: int) -> dt.datetime:  # k rounds before the current one, 5 s in
        return base - dt.timedelta(seconds=k * ROUND_S - 5)

    plan = [  # (name, probe, site, template, round)
        *[(f"p1-{k}", "p1", "Office North", "sip-503" if k == 2 else "sip-answered", k)
          for k in range(1, 6)],
        *[(f"p2-gsm-{k}", "p2", "Office South",
           "gsm-not-registered" if k == 3 else "gsm-answered", k) for k in range(1, 6)],
        ("p3-4", "p3", "Office East", "sip-busy", 4),
    ]
    with transaction(sessions) as session:
        for name, probe, site, kind, k in plan:
            doc = result_doc(kind, probe_id=probe, started_at=at(k), site=site)
            item = ingest(session, doc, now)
            s.ids[name], s.votes[item.id] = item.id, item.vote
        item = ingest(session, degraded_doc("p2", at(1)), now)
        s.ids["p2-sip-1"], s.votes[item.id] = item.id, item.vote
        recording = parse_message("hotline-probe/v1/p1/recording", tone_wav(),
                                  {"content_type": "audio/wav",
                                   "user_properties": [("result_id", s.ids["p1-1"])]})
        store(session, recording, now, Stored())
    _health_history(sessions, now)
    with transaction(sessions) as session:
        _presence(session, now)
        s.incident_id = _incident(session, s, now)
        # p1's failure in round 2 was planned work: the SLA must not count it.
        session.add(Maintenance(target="support", probe_id="p1", starts_at=at(2) -
                                dt.timedelta(seconds=5), ends_at=at(2) + dt.timedelta(seconds=50),
                                repeat="none", reason="router swap", created_by="olga"))
        auth.create_user(session, "olga", PASSWORD, "operator")
        auth.create_user(session, "viktor", PASSWORD, "viewer")
    assert s.votes[s.ids["p1-2"]] == "fail" and s.votes[s.ids["p2-gsm-3"]] == "local"
    assert s.votes[s.ids["p2-sip-1"]] == "degraded" and s.votes[s.ids["p1-1"]] == "ok"


def health_report(minute: int) -> dict[str, Any]:
    """p2's health ``minute`` minutes into its last hour: the line drops out for minutes
    20-29, the modem moves from Orange to SFR at minute 40, a backlog builds up at 20-35."""
    doc = copy.deepcopy(HEALTH) | {"probe_id": "p2", "site": "Office South"}
    dead = 20 <= minute < 30
    doc["line"] = {"state": "no_voltage" if dead else "idle", "dc_volts": 0.4 if dead else 48.1,
                   "fault": dead}
    doc["outbox"] = doc["outbox"] | {"count": max(0, min(minute - 19, 36 - minute)) * 3}
    doc["channels"] = {"gsm": {"state": "idle", "modem": {
        "operator": "Orange" if minute < 40 else "SFR", "access_technology": "LTE",
        "signal_dbm": -71 - minute % 7, "state": "registered"}}}
    return doc


def _health_history(sessions: sessionmaker[Session], now: dt.datetime) -> None:
    """An hour of p2's health reports, a minute apart, each through ingest's parse and store
    in its own transaction (as ingest commits them); plus a repeat 10 s after one (skipped: one
    sample per 30 s) and a report whose fields are all odd (stored, as nothing)."""
    def deliver(doc: Any, at: dt.datetime) -> None:
        item = parse_message("hotline-probe/v1/p2/health", json.dumps(doc).encode())
        with transaction(sessions) as session:
            store(session, item, at, Stored())

    start = now - dt.timedelta(minutes=62)
    for minute in range(60):
        at = start + dt.timedelta(minutes=minute)
        deliver(health_report(minute), at)
        if minute == 5:
            deliver(health_report(minute), at + dt.timedelta(seconds=10))
    deliver({"outbox": "lots", "line": [1], "channels": {"gsm": {"modem": {"signal_dbm": "x"}}},
             "clock_synced": "yes"}, start + dt.timedelta(minutes=61))


def _presence(session: Session, now: dt.datetime) -> None:
    for probe_id, state, reason in (("p1", "online", None), ("p2", "online", None),
                                    ("p3", "offline", "connection lost")):
        probe = session.get(Probe, probe_id)
        assert probe is not None
        probe.state, probe.boot, probe.status_reason, probe.status_at = state, 3, reason, now
        session.add(PresenceEvent(probe_id=probe_id, at=now - dt.timedelta(hours=1),
                                  state="online", boot=3))
        if state == "offline":
            session.add(PresenceEvent(probe_id=probe_id, at=now, state="offline", boot=3,
                                      reason=reason))
    p1 = session.get(Probe, "p1")
    assert p1 is not None
    p1.health, p1.health_at = HEALTH, now


def _incident(session: Session, s: Seeded, now: dt.datetime) -> int:
    incident = Incident(key="hotline:support", target="support", scope="hotline", subject="*",
                        state="open", cause="hotline.busy", severity="down", opened_at=now,
                        updated_at=now, sites=["Office East", "Office North"],
                        evidence=[s.ids["p3-4"], s.ids["p1-2"]], detail={}, last_round=1)
    session.add(incident)
    session.flush()
    session.add(IncidentEvent(incident_id=incident.id, at=now, kind="opened",
                              detail={"cause": "hotline.busy", "severity": "down"}))
    past = Incident(key="site:support:p2", target="support", scope="site", subject="p2",
                    state="resolved", cause="site.local_failure", severity="down",
                    opened_at=now - dt.timedelta(days=1), updated_at=now,
                    resolved_at=now - dt.timedelta(hours=20), resolved_by="auto",
                    sites=["Office South"], evidence=[], detail={"site": "Office South"},
                    last_round=1)
    session.add(past)
    return incident.id


@dataclass
class ReplyingCommander:
    """Answers a command as the probe and ingest would: appended to its row, a moment later."""

    sessions: sessionmaker[Session]

    def send(self, probe_id: str, name: str, payload: dict[str, Any],
             correlation_id: str) -> None:
        threading.Thread(target=self._answer, args=(correlation_id, payload),
                         daemon=True).start()

    def _answer(self, correlation_id: str, payload: dict[str, Any]) -> None:
        for reply in ({"command": "run", "ok": True, "accepted": True},
                      {"command": "run", "ok": True, "result": {"outcome": "answered",
                                                                "target": payload["target"]}}):
            time.sleep(0.2)
            with transaction(self.sessions) as session:
                row = session.get(Command, correlation_id)
                assert row is not None
                row.replies = [*row.replies, reply]
                row.last_reply_at = utcnow()


def make_app(config: OpsConfig, sessions: sessionmaker[Session]) -> FastAPI:
    app = create_app(config, sessions, commander=ReplyingCommander(sessions))
    if not any(getattr(r, "path", None) == "/login" for r in app.routes):
        app.include_router(console_router(config, sessions))  # the lead has not mounted it yet
    return app


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    tmp = tmp_path_factory.mktemp("console")
    engine = make_engine(f"sqlite:///{tmp}/ops.sqlite3")
    upgrade(engine)
    sessions = session_factory(engine)
    config = parse_ops_config({"ops": {"instance": "console-test", "state_dir": str(tmp)},
                               "correlation": {"round_s": ROUND_S}})
    seeded = Seeded(sessions=sessions, shots=tmp / "screenshots")
    seeded.shots.mkdir()
    seed(sessions, seeded)
    with served(make_app(config, sessions), config) as base:
        seeded.base = base
        yield seeded
    engine.dispose()


@pytest.fixture(scope="module")
def browser(fleet: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless chromium for the module (torn down before the server: it holds the SSE
    stream open)."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"),
                              options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def login(driver: WebDriver, fleet: Seeded, name: str, then: str = "/") -> None:
    driver.delete_all_cookies()
    driver.get(f"{fleet.base}{then}")
    assert "/login" in driver.current_url  # no session: the page sends us to the form
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, lambda d: "/login" not in d.current_url, "leaving the login form")


def wait(driver: WebDriver, condition: Any, what: str, timeout: float = 15) -> Any:
    # While a form's POST navigates, chromedriver may answer a lookup with a transient
    # "node does not belong to the document": ask again, up to the timeout.
    return WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,)).until(
        condition, message=what)


def shot(driver: WebDriver, fleet: Seeded, name: str) -> Path:
    path = fleet.shots / f"{name}.png"
    # The whole page, not just the window: the report pages are long.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(int(height) + 40, 600), 4000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def post_from_page(driver: WebDriver, path: str, form: dict[str, str]) -> int:
    """A POST made by the page's own script (the cookie goes with it): its status."""
    return driver.execute_async_script(
        "const done = arguments[2];"
        "fetch(arguments[0], {method: 'POST', credentials: 'same-origin', redirect: 'manual',"
        " body: new URLSearchParams(arguments[1])}).then(r => done(r.status),"
        " e => done(String(e)));", path, form)


def fetch_text(driver: WebDriver, path: str) -> str:
    return driver.execute_async_script(
        "const done = arguments[1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(done);",
        path)


# --------------------------------------------------------------------------- tests


def test_every_template_label_has_its_russian() -> None:
    root = resources.files("probe.ops.console") / "templates"
    labels = set()
    for node in root.iterdir():
        labels |= set(re.findall(r"""_\(\s*["']([^"']+)["']\s*\)""", node.read_text()))
    labels |= {f.label for f in health_facts(HEALTH)}
    missing = sorted(label for label in labels if label not in RU)
    assert not missing, missing


def test_health_sample_takes_what_it_can_and_never_fails() -> None:
    full = health_sample(health_report(25))
    assert full == {"outbox_count": 18, "outbox_dropped": 0, "line_state": "no_voltage",
                    "line_volts": 0.4, "signal_dbm": -75.0, "operator": "Orange",
                    "access_technology": "LTE", "clock_synced": True, "ok": True}
    nothing = dict.fromkeys(full)
    for odd in (None, [], "health", {}, {"outbox": [], "line": "idle", "channels": [1]},
                {"outbox": {"count": True, "dropped": 1e300}, "status": {"ok": "yes"},
                 "line": {"state": 7, "dc_volts": float("nan")},
                 "channels": {"gsm": None, 3: {"modem": {"signal_dbm": -80}}}}):
        assert health_sample(odd) == nothing, odd
    # No gsm channel: the first modem that reports a signal (by channel name).
    other = {"channels": {"analog": {"modem": {"state": "idle"}},
                          "mobile": {"modem": {"signal_dbm": -90.5, "operator": "Free"}}}}
    assert health_sample(other)["signal_dbm"] == -90.5
    assert health_sample(other)["operator"] == "Free"


def test_probe_page_charts_line_signal_and_outbox_over_time(fleet: Seeded,
                                                            browser: WebDriver) -> None:
    with transaction(fleet.sessions) as session:
        samples = list(session.scalars(select(HealthSample).where(
            HealthSample.probe_id == "p2").order_by(HealthSample.at)))
    assert len(samples) == 61  # the repeat 10 s later was skipped; the odd one kept, empty
    assert samples[-1].line_volts is None and samples[-1].outbox_count is None
    login(browser, fleet, "viktor", "/probes/p2")
    assert browser.find_element(By.CSS_SELECTOR, "#history-spans a.on").text == "24h"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#history figure.chart")) == 3
    # Six hours: a bucket per minute, so each report of the last hour is a point.
    browser.get(f"{fleet.base}/probes/p2?history=6h")
    assert browser.find_element(By.CSS_SELECTOR, "#history-spans a.on").text == "6h"
    line = browser.find_element(By.ID, "chart-line")
    states = [b.get_attribute("data-state")
              for b in line.find_elements(By.CSS_SELECTOR, "rect.state-band")]
    assert states == ["idle", "no_voltage", "idle"]
    widths = [float(b.get_attribute("width"))
              for b in line.find_elements(By.CSS_SELECTOR, "rect.state-band")]
    assert widths[0] > widths[1] > 0  # 20 minutes idle, then 10 without voltage
    path = line.find_element(By.CSS_SELECTOR, "path.s-volts").get_attribute("d")
    assert path.startswith("M") and path.count("L") >= 50
    signal = browser.find_element(By.ID, "chart-signal")
    assert [g.get_attribute("data-label") for g in signal.find_elements(
        By.CSS_SELECTOR, "g.run-label")] == ["Orange · LTE", "SFR · LTE"]
    assert "dBm" in signal.text
    outbox = browser.find_element(By.ID, "chart-outbox")
    ys = [float(p.split(",")[1]) for p in outbox.find_element(
        By.CSS_SELECTOR, "path.s-outbox").get_attribute("d")[1:].split(" L")]
    assert min(ys) < max(ys)  # the backlog rises and falls
    # The charts are drawn, not just present: the browser laid them out at their size.
    box = browser.execute_script(
        "const r = document.querySelector('#chart-line svg').getBoundingClientRect();"
        "return [r.width, r.height];")
    assert box[0] > 600 and box[1] > 150
    shot(browser, fleet, "probe-history")
    browser.get(f"{fleet.base}/probes/p3")  # no health reports at all
    assert browser.find_element(By.ID, "no-history")


def test_login_redirects_back_and_refuses_a_wrong_password(fleet: Seeded,
                                                           browser: WebDriver) -> None:
    browser.delete_all_cookies()
    browser.get(f"{fleet.base}/incidents")
    assert browser.current_url.endswith("/login?next=%2Fincidents")
    browser.find_element(By.ID, "name").send_keys("olga")
    browser.find_element(By.ID, "password").send_keys("not the password")
    browser.find_element(By.ID, "login-submit").click()
    error = wait(browser, lambda d: d.find_elements(By.ID, "login-error"), "the refusal")
    assert "Wrong name or password" in error[0].text
    shot(browser, fleet, "login")
    login(browser, fleet, "olga", "/incidents")
    assert browser.current_url == f"{fleet.base}/incidents"
    cookie = browser.get_cookie("hp_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_fleet_grid_colours_badges_and_live_update(fleet: Seeded, browser: WebDriver) -> None:
    login(browser, fleet, "viktor")
    for result_id, vote in fleet.votes.items():
        seg = browser.find_element(By.CSS_SELECTOR, f'a.seg[data-result="{result_id}"]')
        assert f"vote-{vote}" in seg.get_attribute("class").split(), (result_id, vote)
        assert vote in seg.get_attribute("title")
    p2 = browser.find_element(By.CSS_SELECTOR, 'tr[data-probe="p2"][data-target="support"]')
    boxes = p2.find_elements(By.CSS_SELECTOR, "span.box")
    assert len(boxes) == 24
    mixed = [b for b in boxes if len(b.find_elements(By.CSS_SELECTOR, "a.seg")) == 2]
    assert len(mixed) == 1  # round 1: gsm ok and sip degraded -> the box is degraded
    assert "vote-degraded" in mixed[0].get_attribute("class")
    assert [s.text for s in mixed[0].find_elements(By.CSS_SELECTOR, "a.seg")] == ["G", "S"]
    assert len(p2.find_elements(By.CSS_SELECTOR, "span.box.empty")) == 24 - 5
    p3 = browser.find_element(By.CSS_SELECTOR, 'tr[data-probe="p3"]')
    assert p3.find_element(By.CSS_SELECTOR, ".badge-offline").text == "offline"
    assert not browser.find_elements(By.CSS_SELECTOR, 'tr[data-probe="p1"] .badge')
    shot(browser, fleet, "fleet")

    # A filter is a query parameter: only the gsm stripes remain.
    browser.get(f"{fleet.base}/?channel=gsm")
    channels = {s.get_attribute("data-channel")
                for s in browser.find_elements(By.CSS_SELECTOR, "a.seg")}
    assert channels == {"gsm"}

    browser.get(f"{fleet.base}/")
    wait(browser, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "live",
         "the event stream")
    browser.execute_script("window.notReloaded = true;")
    with transaction(fleet.sessions) as session:
        doc = result_doc("sip-no-answer", probe_id="p1", site="Office North",
                         started_at=utcnow() - dt.timedelta(seconds=1))
        fresh = ingest(session, doc, utcnow())
    seg = wait(browser, lambda d: d.find_elements(
        By.CSS_SELECTOR, f'a.seg[data-result="{fresh.id}"]'), "the new result", timeout=20)
    assert "vote-fail" in seg[0].get_attribute("class")
    assert browser.execute_script("return window.notReloaded === true")


def test_incident_in_russian_and_a_viewer_cannot_change_it(fleet: Seeded,
                                                           browser: WebDriver) -> None:
    login(browser, fleet, "viktor", f"/incidents/{fleet.incident_id}?lang=ru")
    remedy = browser.find_element(By.ID, "remedy").text
    assert "Добавьте операторов или линии" in remedy
    assert "Открыт" in browser.page_source  # the page's own labels are Russian too
    links = browser.find_elements(By.CSS_SELECTOR, "#evidence a[data-result]")
    assert {a.get_attribute("href").rsplit("/", 1)[1] for a in links} == {
        fleet.ids["p3-4"], fleet.ids["p1-2"]}
    assert not browser.find_elements(By.ID, "ack-button")
    assert not browser.find_elements(By.ID, "maintenance-form")
    shot(browser, fleet, "incident-ru-viewer")
    csrf = browser.find_element(By.CSS_SELECTOR, "form[action='/logout'] input[name=csrf]")
    forged = post_from_page(browser, f"/incidents/{fleet.incident_id}/ack",
                            {"csrf": csrf.get_attribute("value")})
    assert forged == 403
    assert post_from_page(browser, f"/incidents/{fleet.incident_id}/ack", {}) == 403
    with transaction(fleet.sessions) as session:
        incident = session.get(Incident, fleet.incident_id)
        assert incident is not None and incident.state == "open"
    browser.get(f"{fleet.base}/incidents?lang=en")  # and back to English for the others
    assert browser.find_element(By.CSS_SELECTOR, f'#open-incidents tr[data-incident='
                                                 f'"{fleet.incident_id}"]')
    assert browser.find_elements(By.CSS_SELECTOR, "#past-incidents tr[data-incident]")


def test_operator_acknowledges_comments_and_schedules_maintenance(fleet: Seeded,
                                                                  browser: WebDriver) -> None:
    login(browser, fleet, "olga", f"/incidents/{fleet.incident_id}")
    assert post_from_page(browser, f"/incidents/{fleet.incident_id}/ack", {}) == 403  # no CSRF
    browser.find_element(By.ID, "ack-button").click()
    wait(browser, lambda d: d.find_element(By.ID, "incident-state").text == "acknowledged",
         "the acknowledged state")
    row = browser.find_element(By.CSS_SELECTOR, '#timeline tr[data-kind="acknowledged"]')
    assert "olga" in row.text
    browser.find_element(By.ID, "comment-text").send_keys("Called the contact centre.")
    browser.find_element(By.ID, "comment-button").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#timeline tr[data-kind="comment"]'),
         "the comment")
    assert "Called the contact centre." in browser.find_element(By.ID, "timeline").text
    later = (utcnow() + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    end = (utcnow() + dt.timedelta(days=2, hours=1)).strftime("%Y-%m-%dT%H:%M")
    browser.execute_script(
        "const f = document.getElementById('maintenance-form');"
        "f.starts_at.value = arguments[0]; f.ends_at.value = arguments[1];"
        "f.reason.value = 'carrier works';", later, end)
    shot(browser, fleet, "incident-operator")
    browser.execute_script("window.beforePost = true;")
    browser.find_element(By.ID, "maintenance-button").click()
    # The form posts and comes back to the same URL: wait for a new page, not a new URL.
    wait(browser, lambda d: d.execute_script("return window.beforePost === undefined"),
         "the posted form")
    assert browser.current_url.endswith(f"/incidents/{fleet.incident_id}")
    with transaction(fleet.sessions) as session:
        actions = [a.action for a in session.scalars(
            select(AuditLog).where(AuditLog.user_name == "olga").order_by(AuditLog.id))]
        windows = session.scalars(select(Maintenance).where(
            Maintenance.reason == "carrier works")).all()
    assert actions[-4:] == ["login", "incident.acknowledged", "incident.comment",
                            "maintenance.create"]
    assert len(windows) == 1 and windows[0].target == "support" and windows[0].probe_id is None


def test_call_page_ladder_recording_and_values(fleet: Seeded, browser: WebDriver) -> None:
    login(browser, fleet, "viktor", f"/calls/{fleet.ids['p1-1']}")
    arrows = browser.find_elements(By.CSS_SELECTOR, "#ladder g.arrow")
    assert [a.get_attribute("data-event") for a in arrows] == [
        "dial", "progress", "answer", "media_start", "hangup", "end"]
    wait(browser, lambda d: d.find_element(By.ID, "audio-view").get_attribute("data-state")
         in ("drawn", "failed"), "the decoded recording")
    assert browser.find_element(By.ID, "audio-view").get_attribute("data-state") == "drawn"
    painted = browser.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;",
        "waveform")
    assert painted > 900 * 20  # a steady 1 kHz tone fills the waveform's band
    bright = browser.execute_script(
        "const c = document.getElementById('spectrogram');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i+1] + d[i+2] > 600) n++;"
        "return n;")
    assert bright > 0  # the tone's line
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bands g.band.speech")) == 1
    rtt = browser.find_element(By.CSS_SELECTOR,
                               'tr[data-section="rtp"][data-name="rtt_mean_ms"] td.value')
    assert rtt.text == "not measured"
    pdd = browser.find_element(By.CSS_SELECTOR,
                               'tr[data-section="timings_ms"][data-name="post_dial_delay"]')
    assert "399 ms" in pdd.text and "RFC 6076" in pdd.text
    shot(browser, fleet, "call")

    browser.get(f"{fleet.base}/calls/{fleet.ids['p1-2']}")  # SIP 503: no analysis, no audio
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ladder g.arrow")) == 3
    assert browser.find_element(By.ID, "no-recording")
    absent = browser.find_element(By.CSS_SELECTOR, 'tr[data-section="analysis"] td.value')
    assert absent.text == "not measured"
    browser.get(f"{fleet.base}/calls/{fleet.ids['p2-gsm-3']}")  # not registered: nothing sent
    assert not browser.find_elements(By.CSS_SELECTOR, "#ladder g.arrow")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ladder g.note")) == 1


def test_target_report_and_sla(fleet: Seeded, browser: WebDriver) -> None:
    # Counted (24 h, maintenance out): p1 4 of 4 (its 503 was in maintenance), p2 gsm 4 of 5,
    # p2 sip 1 of 1, p3 0 of 1: 9 met of 11, and of 12 once the live test's no-answer is in.
    with transaction(fleet.sessions) as session:
        extra = len(session.scalars(select(Result.id).where(Result.outcome == "no_answer")).all())
    counted = 11 + extra
    login(browser, fleet, "viktor", "/targets/support?period=24h")
    assert f"{900 / counted:.2f} %" in browser.find_element(By.ID, "availability").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart-svg")) == 3
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart-svg path.s-pdd50")
    assert "Office North" in browser.find_element(By.ID, "outcomes").text
    shot(browser, fleet, "target")
    rows = list(csv.DictReader(io.StringIO(fetch_text(browser,
                                                      "/targets/support/sla.csv?period=24h"))))
    period = rows[0]
    assert period["row"] == "period" and period["results"] == str(counted)
    assert period["met"] == "9" and period["availability_percent"] == f"{900 / counted:.3f}"
    assert period["excluded_maintenance"] == "1"
    assert {r["channel"] for r in rows if r["row"] == "channel"} == {"gsm", "sip"}
    assert sum(int(r["results"]) for r in rows if r["row"] == "hour") == counted
    browser.get(f"{fleet.base}/targets/support/sla?period=24h")
    assert f"{900 / counted:.3f}" in browser.find_element(By.ID, "sla-summary").text
    shot(browser, fleet, "sla")


def test_probe_page_health_presence_and_run_now(fleet: Seeded, browser: WebDriver) -> None:
    login(browser, fleet, "viktor", "/probes/p1")
    assert not browser.find_elements(By.ID, "run-now")  # a viewer has no button
    login(browser, fleet, "olga", "/probes/p1")
    health = browser.find_element(By.ID, "health").text
    assert "count 0" in health and "probe 0.1.0" in health and "1 d 2 h 3 min" in health
    assert "idle" in browser.find_element(By.ID, "channels").text
    assert browser.find_elements(By.CSS_SELECTOR, "#presence tbody tr")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")) >= 5
    browser.find_element(By.ID, "run-support").click()
    reply = wait(browser, lambda d: (e := d.find_element(By.ID, "reply-support")).get_attribute(
        "data-status") and e, "the command's reply")
    assert reply.get_attribute("data-status") == "200"
    assert '"outcome": "answered"' in reply.text
    shot(browser, fleet, "probe")
    browser.get(f"{fleet.base}/probes/p3")
    assert browser.find_element(By.ID, "probe-state").text == "offline"
    assert "connection lost" in browser.find_element(By.ID, "presence").text
    shot(browser, fleet, "probe-offline")
    print(SimpleNamespace(screenshots=str(fleet.shots)))


def test_fleet_grid_comes_a_page_at_a_time(fleet: Seeded, browser: WebDriver,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import probe.ops.console.fleet as fleet_module

    monkeypatch.setattr(fleet_module, "ROWS_PER_PAGE", 2)  # the server runs in this process
    login(browser, fleet, "viktor", "/?channel=sip")
    pager = browser.find_element(By.ID, "grid-pager")
    assert "Rows 1\u20132 of 3" in pager.text and pager.get_attribute("data-pages") == "2"
    first = [r.get_attribute("data-probe") for r in browser.find_elements(
        By.CSS_SELECTOR, "tr.fleet-row")]
    assert first == ["p1", "p2"]
    browser.find_element(By.ID, "page-next").click()
    wait(browser, lambda d: d.find_element(By.ID, "grid-pager").get_attribute("data-page")
         == "2", "the second page")
    assert "channel=sip" in browser.current_url  # the filters stay
    assert [r.get_attribute("data-probe") for r in browser.find_elements(
        By.CSS_SELECTOR, "tr.fleet-row")] == ["p3"]
    # The live fragment asks for the page it shows.
    assert "page=2" in browser.find_element(By.ID, "grid").get_attribute("data-fragment")
    assert not browser.find_elements(By.ID, "page-next")
    browser.get(f"{fleet.base}/?channel=sip&page=99")  # past the end: the last page
    assert browser.find_element(By.ID, "grid-pager").get_attribute("data-page") == "2"
    assert not browser.find_elements(By.CSS_SELECTOR, "ul.quiet li")  # all have rows


# --------------------------------------------------------------------------- phone and keyboard

PHONE = (390, 844)
DESKTOP = (1400, 1000)


def page_width(driver: WebDriver) -> dict[str, Any]:
    """The page's width against the window's, and (to say why) what sticks out of it that is
    not inside a box of its own that scrolls."""
    return driver.execute_script(
        "const inner = window.innerWidth;"
        "const wide = [...document.querySelectorAll('body *')].filter(e =>"
        "  e.getBoundingClientRect().right > inner + 1 && !e.closest('.scroll'))"
        "  .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.getAttribute('class'));"
        "return {scroll: document.documentElement.scrollWidth, inner: inner, wide: wide};")


def test_every_page_fits_a_phone(fleet: Seeded, browser: WebDriver) -> None:
    pages = {"fleet": "/", "incidents": "/incidents",
             "incident": f"/incidents/{fleet.incident_id}", "target": "/targets/support",
             "sla": "/targets/support/sla", "probe": "/probes/p1", "probe-history": "/probes/p2",
             "call": f"/calls/{fleet.ids['p1-1']}", "call-503": f"/calls/{fleet.ids['p1-2']}"}
    login(browser, fleet, "olga")  # an operator: the incident and probe pages show their forms
    browser.set_window_size(*PHONE)
    try:
        for name, path in [*pages.items(), ("login", "/login")]:
            if name == "login":
                browser.delete_all_cookies()
            browser.get(f"{fleet.base}{path}")
            if name == "call":
                wait(browser, lambda d: d.find_element(By.ID, "audio-view").get_attribute(
                    "data-state") == "drawn", "the decoded recording")
            width = page_width(browser)
            assert 360 <= width["inner"] <= PHONE[0], width  # the window really is a phone's
            assert width["scroll"] <= width["inner"] + 1, (name, width)
            if name in ("fleet", "call", "login"):
                browser.save_screenshot(str(fleet.shots / f"{name}-phone.png"))
            if name == "fleet":
                # The grid is wider than the phone: it scrolls in its own box.
                box = browser.execute_script(
                    "const s = document.getElementById('fleet-grid-scroll');"
                    "return [s.scrollWidth, s.clientWidth, getComputedStyle(s).overflowX];")
                assert box[0] > box[1] and box[2] == "auto", box
                at_end = browser.execute_script(  # the newest rounds, at the right, in view
                    "const s = document.getElementById('fleet-grid-scroll');"
                    "return s.scrollWidth - s.clientWidth - s.scrollLeft;")
                assert at_end <= 1
                header = browser.find_element(By.CSS_SELECTOR, "header.top").size
                assert header["width"] <= width["inner"] and header["height"] > 40  # wrapped
            if name == "call":
                # The ladder, the canvases and the bands shrink to the width, keeping their shape.
                sizes = browser.execute_script(
                    "return ['ladder', 'waveform', 'spectrogram', 'bands'].map(id => {"
                    "  const e = document.getElementById(id), r = e.getBoundingClientRect();"
                    "  return [id, r.right, r.width, r.height]; });")
                for element, right, w, h in sizes:
                    assert right <= width["inner"] and w > 200 and h > 0, (element, right, w)
                waveform = next(s for s in sizes if s[0] == "waveform")
                assert waveform[2] / waveform[3] == pytest.approx(900 / 110, rel=0.05)
                height = browser.execute_script("return document.documentElement.scrollHeight")
                browser.execute_script("document.getElementById('ladder').scrollIntoView()")
                browser.save_screenshot(str(fleet.shots / "call-phone-ladder.png"))
                browser.execute_script("document.getElementById('audio-view').scrollIntoView()")
                browser.save_screenshot(str(fleet.shots / "call-phone-audio.png"))
                browser.set_window_size(PHONE[0], min(int(height) + 100, 5000))
                browser.save_screenshot(str(fleet.shots / "call-phone-full.png"))
                browser.set_window_size(*PHONE)
    finally:
        browser.set_window_size(*DESKTOP)


def tab(driver: WebDriver, back: bool = False) -> str:
    """Press Tab (or Shift+Tab) and say where the focus went."""
    chain = ActionChains(driver)
    if back:
        chain.key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT)
    else:
        chain.send_keys(Keys.TAB)
    chain.perform()
    return focused(driver)


def focused(driver: WebDriver) -> str:
    return driver.execute_script(
        "const e = document.activeElement;"
        "return e.id || (e.getAttribute('class') || '').split(' ')[0] || e.tagName;")


def press(driver: WebDriver, keys: str) -> None:
    ActionChains(driver).send_keys(keys).perform()


def ring(driver: WebDriver, of: str = "document.activeElement") -> tuple[str, float]:
    """The focus outline the browser draws: its style and width in px."""
    style, width = driver.execute_script(
        f"const s = getComputedStyle({of}); return [s.outlineStyle, s.outlineWidth];")
    return style, float(width.removesuffix("px"))


def test_keyboard_logs_in_acknowledges_and_reaches_the_grid(fleet: Seeded,
                                                            browser: WebDriver) -> None:
    now = utcnow()
    with transaction(fleet.sessions) as session:
        incident = Incident(key="hotline:keyboard", target="support", scope="hotline",
                            subject="*", state="open", cause="hotline.busy", severity="down",
                            opened_at=now, updated_at=now, sites=["Office North"], evidence=[],
                            detail={}, last_round=1)
        session.add(incident)
        session.flush()
        session.add(IncidentEvent(incident_id=incident.id, at=now, kind="opened", detail={}))
        incident_id = incident.id
    browser.delete_all_cookies()
    browser.get(f"{fleet.base}/incidents/{incident_id}")
    assert "/login" in browser.current_url
    assert focused(browser) == "name"  # autofocus: a keyboard user starts in the name field
    # Back to the top: the first stop is the skip link, which jumps past the header.
    for _ in range(10):
        if tab(browser, back=True) == "skip":
            break
    assert focused(browser) == "skip"
    assert browser.execute_script("return document.activeElement.getBoundingClientRect().top") >= 0
    assert ring(browser)[0] == "solid"
    press(browser, Keys.ENTER)
    wait(browser, lambda d: focused(d) == "main", "the skip link's jump")
    # Tab: the name field, the password, the submit button; each with a visible ring.
    assert tab(browser) == "name" and ring(browser)[0] == "solid" and ring(browser)[1] >= 2
    press(browser, "olga")
    assert tab(browser) == "password"
    press(browser, PASSWORD)
    assert tab(browser) == "login-submit"
    assert browser.execute_script("const e = document.activeElement;"
                                  "return [e.tagName, e.type]") == ["BUTTON", "submit"]
    style, width = ring(browser)
    assert style == "solid" and width >= 2
    press(browser, Keys.ENTER)
    wait(browser, lambda d: d.current_url.endswith(f"/incidents/{incident_id}"),
         "the incident, logged in")

    # The acknowledge button: reached with Tab, pressed with Enter.
    visited = [tab(browser)]
    while visited[-1] != "ack-button" and len(visited) < 40:
        visited.append(tab(browser))
    assert visited[-1] == "ack-button", visited
    assert visited[0] == "skip"
    style, width = ring(browser)
    assert style == "solid" and width >= 2
    press(browser, Keys.ENTER)
    wait(browser, lambda d: d.find_element(By.ID, "incident-state").text == "acknowledged",
         "the acknowledged state")
    row = browser.find_element(By.CSS_SELECTOR, '#timeline tr[data-kind="acknowledged"]')
    assert "olga" in row.text

    # The grid's boxes are links a keyboard reaches, and each says what it is.
    browser.get(f"{fleet.base}/")
    for _ in range(60):
        if tab(browser) == "seg":
            break
    link = browser.switch_to.active_element
    assert "seg" in link.get_attribute("class").split()
    label = link.get_attribute("aria-label")
    probe = link.find_element(By.XPATH, "ancestor::tr").get_attribute("data-probe")
    site = {"p1": "Office North", "p2": "Office South", "p3": "Office East"}[probe]
    assert label.startswith(f"{site} · support · round ") and link.get_attribute(
        "data-vote") in label, label
    assert ring(browser, "document.activeElement.parentElement")[0] == "solid"  # the box
    press(browser, Keys.ENTER)
    wait(browser, lambda d: "/calls/" in d.current_url, "the call behind the box")
