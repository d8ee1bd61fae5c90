"""SIM PIN, waiting for a searching modem, and the dialer's health record, over a real pty."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from probe.at.errors import CommandFailed, ModemTimeout, redact
from probe.config.model import Expectations, ModemConfig, ProbeIdentity
from probe.config.secrets import Secret
from probe.dial.modem import ModemDialer
from probe.results.document import build_result, validate_result
from probe.results.measure import classify
from probe.results.timeline import CallRecord
from probe.sim.modem import SCENARIOS, ModemEmulator, scenario

EXPECT = Expectations(max_post_dial_delay_ms=1000, max_ring_s=0.5, hold_s=0.3,
                      require_media=False)
PROBE = ProbeIdentity("test-probe", "Lab")
PIN = SCENARIOS["sim_pin"].sim_pin
WRONG_PIN = "27350168"


def dialer(modem: ModemEmulator, **config: object) -> ModemDialer:
    cfg = ModemConfig(kind="gsm", port=modem.url, **config)  # type: ignore[arg-type]
    return ModemDialer(cfg, reopen_wait_s=0.5, sync_timeout_s=0.15, sim_wait_s=3.0)


def place(d: ModemDialer, tmp_path: Path) -> CallRecord:
    return d.call("+33472000390", EXPECT, target="support", audio_path=tmp_path / "c.wav")


def everything_said(record: CallRecord, caplog: pytest.LogCaptureFixture) -> str:
    doc = build_result(record, EXPECT, PROBE)
    validate_result(doc)
    return json.dumps(doc) + repr(record) + caplog.text


# -- registration -----------------------------------------------------------------------------
def test_a_searching_modem_is_waited_for(tmp_path: Path) -> None:
    sc = scenario("registers_late", register_after_ms=600)
    with ModemEmulator("sim7600", sc) as modem, dialer(modem, register_wait_s=5.0) as d:
        record = place(d, tmp_path)
        registered_ms = (modem.marks["registered"] - record.mono_ns) / 1e6
    facts = record.facts["modem"]
    assert classify(record) == "answered"
    assert "AT+CREG=2" in modem.received  # URCs on: the +CREG: 1 ends the wait at once
    assert facts["registration_state"] == "home" and facts["operator"] == "Orange F"
    # woken by the URC, not by the 1 s re-read: the wait ends right after registration
    wait_end_ms = (record.events[0].t_ns - record.mono_ns) / 1e6
    assert 0 <= wait_end_ms - registered_ms < 250, (wait_end_ms, registered_ms)
    assert 400 <= facts["registration_wait_ms"] < 1000


def test_the_wait_for_registration_is_bounded(tmp_path: Path) -> None:
    sc = scenario("registers_late", register_after_ms=60_000)
    with ModemEmulator("quectel", sc) as modem, dialer(modem, register_wait_s=0.6) as d:
        started = time.monotonic()
        record = place(d, tmp_path)
        took = time.monotonic() - started
    assert classify(record) == "not_registered"
    assert record.facts["modem"]["registration_state"] == "searching"
    assert 0.6 <= took < 1.6
    assert not any(line.startswith("ATD") for line in modem.received)


def test_not_registered_and_not_searching_is_not_waited_for(tmp_path: Path) -> None:
    with ModemEmulator("sim800", SCENARIOS["not_registered"]) as modem, \
            dialer(modem, register_wait_s=30.0) as d:
        started = time.monotonic()
        record = place(d, tmp_path)
    assert classify(record) == "not_registered"
    assert time.monotonic() - started < 1.0
    assert "AT+CREG=2" not in modem.received


# -- SIM PIN ----------------------------------------------------------------------------------
def test_sim_pin_is_entered_and_never_shown(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with ModemEmulator("sim7600", SCENARIOS["sim_pin"]) as modem, \
            dialer(modem, sim_pin=Secret(PIN)) as d:
        record = place(d, tmp_path)
        assert modem.received.count(f'AT+CPIN="{PIN}"') == 1
        assert modem.sim == "READY"
    assert classify(record) == "answered"
    assert record.facts["modem"]["sim"] == "READY"
    assert PIN not in everything_said(record, caplog)


def test_wrong_sim_pin_is_no_sim_sent_once_and_never_shown(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with ModemEmulator("a76xx", SCENARIOS["sim_pin"]) as modem, \
            dialer(modem, sim_pin=Secret(WRONG_PIN)) as d:
        first = place(d, tmp_path)
        second = place(d, tmp_path)  # the next scheduled call must not burn another attempt
        sent = [line for line in modem.received if line.startswith("AT+CPIN=")]
        assert len(sent) == 1 and modem.pin_attempts == 2 and modem.sim == "SIM PIN"
        assert not any(line.startswith("ATD") for line in modem.received)
    for record in (first, second):
        assert classify(record) == "no_sim"
        assert record.facts["modem"]["error"] == "modem.sim_pin_rejected"
        assert WRONG_PIN not in everything_said(record, caplog)
    assert d.health()["error"] == "modem.sim_pin_rejected"


def test_no_pin_configured_for_a_locked_sim(tmp_path: Path) -> None:
    with ModemEmulator("huawei", SCENARIOS["sim_pin"]) as modem, dialer(modem) as d:
        record = place(d, tmp_path)
        assert not any(line.startswith("AT+CPIN=") for line in modem.received)
    assert classify(record) == "no_sim"
    assert record.facts["modem"]["error"] == "modem.sim_locked"


def test_pin_is_redacted_from_at_errors() -> None:
    command = f'AT+CPIN="{PIN}"'
    for exc in (ModemTimeout(command, 10.0), CommandFailed(command, "+CME ERROR: 16")):
        assert PIN not in str(exc) and PIN not in exc.command
    assert redact('AT+CPWD="SC","1234","5678"') == "AT+CPWD=<redacted>"
    assert redact("AT+CSQ") == "AT+CSQ"


# -- health -----------------------------------------------------------------------------------
def test_health_is_the_last_known_radio_facts_without_at_traffic(tmp_path: Path) -> None:
    with ModemEmulator("sim7600", SCENARIOS["answered"]) as modem, dialer(modem) as d:
        before = d.health()
        assert before["state"] == "unknown" and before["age_s"] is None
        place(d, tmp_path)
        sent = len(modem.received)
        got: list[dict[str, object]] = []
        reader = threading.Thread(target=lambda: got.extend(d.health() for _ in range(100)))
        started = time.monotonic()
        reader.start()
        reader.join()
        assert time.monotonic() - started < 0.5  # cheap: a copy under a lock
        assert len(modem.received) == sent  # not one AT command
        health = got[-1]
        assert health == {**health, "channel": "gsm", "state": "ready", "error": None,
                          "profile": "sim7600", "model": "SIMCOM_SIM7600E-H",
                          "firmware": "LE20B04SIM7600M22", "sim": "READY",
                          "registration": {"cs": 1, "ps": 1, "eps": 1},
                          "registration_state": "home", "registered": True,
                          "operator": "Orange F", "access_technology": "E-UTRAN",
                          "signal_dbm": -71, "imei": "35824005******0"}
        assert "358240051111110" not in json.dumps(health)
        assert 0 <= health["age_s"] < 5  # type: ignore[operator]
        # refresh_health(): the dialer's own thread, between calls, reads the radio again
        modem.with_scenario(SCENARIOS["weak_signal"])
        assert d.refresh_health()["signal_dbm"] == -107
        assert len(modem.received) > sent


def test_health_of_an_unresponsive_modem(tmp_path: Path) -> None:
    with ModemEmulator("quectel", SCENARIOS["unresponsive"]) as modem, dialer(modem) as d:
        health = d.refresh_health()
    assert health["state"] == "not_ready" and health["error"] == "modem.unresponsive"
