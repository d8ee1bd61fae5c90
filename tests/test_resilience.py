"""Nothing lost, nothing stops: broker outages, kill -9, a SIP server that is down.

Real processes throughout: the probe daemon (`probe run`) as a subprocess, SIPp hotlines and a
mosquitto whose sessions persist across its restart (so the test's subscriber misses nothing
while the broker is away).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from probe.sim import probe_config
from probe.sim.broker import LocalBroker, Subscriber
from probe.sim.hotline import HotlineBehaviour, SippHotline, free_port
from tests.waiting import wait_until

PROBE = "p-res"


def target(i: int, uri: str, *, hold_s: float = 0.3, max_ring_s: float = 3) -> dict[str, Any]:
    return probe_config.sip_target(f"t{i}", uri, hold_s=hold_s, max_ring_s=max_ring_s,
                                   max_post_dial_delay_ms=1000)


def write_config(tmp_path: Path, broker: LocalBroker, targets: list[dict[str, Any]], *,
                 sip: dict[str, Any] | None = None, **mqtt: Any) -> Path:
    return probe_config.write_config(
        tmp_path, probe_id=PROBE, site="Resilience lab", probe={"max_jitter_s": 0},
        targets=targets, sip=sip,
        mqtt=probe_config.broker_section(broker, **{"keepalive_s": 5, "drain_rate_per_s": 50,
                                                    **mqtt}))


class Daemon:
    """`probe run` as a child process, its JSON log lines collected."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "probe", "run", "-c", str(config), "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self, sig: int = signal.SIGTERM) -> list[dict]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=40)
        lines = []
        for line in out.splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"msg": line})
        return lines


def result_ids(log: list[dict]) -> list[str]:
    return [line["msg"].rsplit("id=", 1)[1] for line in log if " id=" in line.get("msg", "")]


def received(sub: Subscriber) -> list[dict]:
    return [m.json() for m in sub.messages if m.topic.endswith("/result")]


@pytest.mark.slow
def test_broker_down_for_30_s_loses_nothing(tmp_path: Path) -> None:
    broker = LocalBroker(persistent=True).start()
    hotline = SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50), calls=1000).start()
    try:
        config = write_config(tmp_path, broker, [target(i, hotline.uri) for i in range(4)])
        with Subscriber(broker.host, broker.port, f"hotline-probe/v1/{PROBE}/result",
                        client_id="ops-consumer", session_expiry_s=3600) as sub:
            daemon = Daemon(config)
            sub.wait_for(lambda msgs: len(msgs) >= 2, timeout=30)
            broker.stop()  # SIGTERM: mosquitto saves the consumer's session
            outage_started = time.monotonic()
            time.sleep(30)
            broker.start()
            # The next cycle (30 s after the first) ran during the outage.
            log_ids_so_far = 8
            sub.wait_for(lambda msgs: len({m.json()["id"] for m in msgs}) >= log_ids_so_far,
                         timeout=60)
            log = daemon.stop()
        made = result_ids(log)
        got = received(sub)
        unique = list(dict.fromkeys(doc["id"] for doc in got))
        assert unique == made  # every result, in the order it was made
        assert len(made) >= 8
        assert time.monotonic() - outage_started >= 30
    finally:
        hotline.stop()
        broker.close()


@pytest.mark.slow
def test_kill_9_mid_call_loses_no_committed_result(tmp_path: Path) -> None:
    """Results made while the broker is away wait in the outbox; the daemon is killed -9 during
    a later call; after a restart they all arrive."""
    broker = LocalBroker(persistent=True).start()
    quick = SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50), calls=10).start()
    slow = SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50), calls=10).start()
    try:
        # Targets run in order: three quick calls, then one that holds the line for 30 s.
        config = write_config(tmp_path, broker, [target(i, quick.uri) for i in range(3)]
                              + [target(3, slow.uri, hold_s=30)])
        with Subscriber(broker.host, broker.port, f"hotline-probe/v1/{PROBE}/result",
                        client_id="ops-consumer", session_expiry_s=3600) as sub:
            broker.stop()
            daemon = Daemon(config)
            outbox = tmp_path / "state" / "outbox.sqlite3"
            wait_until(lambda: _outbox_count(outbox) >= 3, 30)
            time.sleep(1.0)  # the fourth call is up now
            log = daemon.stop(signal.SIGKILL)
            made = result_ids(log)
            assert len(made) == 3
            broker.start()
            daemon = Daemon(config)
            sub.wait_for(lambda msgs: {m.json()["id"] for m in msgs} >= set(made), timeout=30)
            daemon.stop()
        ids = [doc["id"] for doc in received(sub)]
        assert ids[:3] == made
    finally:
        quick.stop()
        slow.stop()
        broker.close()


@pytest.mark.slow
def test_daemon_survives_a_dead_sip_server_and_an_absent_broker(tmp_path: Path) -> None:
    """Broker unreachable at boot and the hotline's SIP server down: the daemon keeps running,
    keeps every result, and reports both once the broker is back."""
    broker = LocalBroker()
    broker.port = free_port(kind=1)  # TCP port nothing listens on yet
    dead_sip = f"sip:hotline@127.0.0.1:{free_port()}"
    config = write_config(tmp_path, broker, [target(0, dead_sip, max_ring_s=1)])
    daemon = Daemon(config)
    try:
        # A dead server answers nothing: the call ends at the probe's own limits (~2 s) plus
        # the SIP stack's grace for a CANCEL that nobody acknowledges.
        wait_until(lambda: _outbox_count(tmp_path / "state" / "outbox.sqlite3") >= 1, 60)
        assert daemon.proc.poll() is None  # still running, nothing published yet
        broker.start()
        with Subscriber(broker.host, broker.port, f"hotline-probe/v1/{PROBE}/#") as sub:
            sub.wait_for(lambda msgs: any(m.topic.endswith("/result") for m in msgs), 40)
            sub.wait_for(lambda msgs: any(m.topic.endswith("/health") for m in msgs), 10)
            result = received(sub)[0]
            assert result["outcome"] == "unreachable"
            health = [m.json() for m in sub.messages if m.topic.endswith("/health")][-1]
            assert health["channels"]["sip"]["last_call"]["outcome"] == "unreachable"
            assert health["channels"]["sip"]["last_success"] is None
        log = daemon.stop()
        assert daemon.proc.returncode == 0
        assert any("cannot reach MQTT broker" in line.get("msg", "") for line in log)
    finally:
        daemon.stop(signal.SIGKILL)
        broker.close()


def _outbox_count(path: Path) -> int:
    import sqlite3

    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_kill_9_mid_publish_then_restart_delivers_every_result(tmp_path: Path) -> None:
    """A 1500-result backlog drains at 300/s; the daemon is killed -9 halfway; the restarted
    daemon delivers the rest.  Consumers may see a result twice (at least once), never zero."""
    from probe.uplink.outbox import Outbox

    broker = LocalBroker(persistent=True).start()
    hotline = SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=50), calls=10).start()
    try:
        config = write_config(tmp_path, broker, [target(0, hotline.uri)], drain_rate_per_s=300)
        backlog = Outbox(tmp_path / "state" / "outbox.sqlite3")
        ids = [f"backlog-{i:05d}" for i in range(1500)]
        for result_id in ids:
            backlog.put("result", json.dumps({"id": result_id}).encode())
        backlog.close()
        with Subscriber(broker.host, broker.port, f"hotline-probe/v1/{PROBE}/result",
                        client_id="ops-consumer", session_expiry_s=3600) as sub:
            daemon = Daemon(config)
            sub.wait_for(lambda msgs: len(msgs) >= 300, timeout=30)
            daemon.stop(signal.SIGKILL)
            assert len(sub.messages) < len(ids)  # killed mid-publish
            daemon = Daemon(config)
            sub.wait_for(lambda msgs: {m.json()["id"] for m in msgs} >= set(ids), timeout=60)
            daemon.stop()
        seen = [m.json()["id"] for m in sub.messages if m.json()["id"].startswith("backlog-")]
        assert list(dict.fromkeys(seen)) == ids  # in order, after de-duplication
    finally:
        hotline.stop()
        broker.close()


def test_secrets_never_reach_the_logs(tmp_path: Path) -> None:
    broker = LocalBroker()
    broker.port = free_port(kind=1)  # nobody listens: the probe logs its reconnect attempts
    config = write_config(tmp_path, broker, [target(0, "sip:hotline@127.0.0.1:9",
                                                    max_ring_s=0.5)],
                          sip={"username": "probe", "password_env": "SIP_PW"},
                          username="p", password="mqtt-S3CRET-pw")
    proc = subprocess.Popen([sys.executable, "-m", "probe", "-v", "run", "-c", str(config),
                             "--log-format", "json"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**__import__("os").environ, "SIP_PW": "sip-S3CRET-pw"})
    time.sleep(6)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert '"level": "debug"' in out  # verbose: everything that could leak was logged
    assert "S3CRET" not in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)


def gsm_config(tmp_path: Path, broker: LocalBroker, modem_url: str, *, hold_s: float) -> Path:
    mobile = {"name": "mobile", "number": "+33100000000", "channels": ["gsm"],
              "interval_s": 30, "expect": {"hold_s": hold_s, "max_ring_s": 3}}
    return probe_config.write_config(
        tmp_path, probe_id=PROBE, site="Resilience lab", name="gsm.toml",
        probe={"max_jitter_s": 0}, targets=[mobile],
        mqtt=probe_config.broker_section(broker, keepalive_s=5),
        modems={"gsm": {"port": modem_url, "model": "sim7600"}})


@pytest.mark.slow
def test_kill_9_mid_gsm_call_then_restart_leaves_the_modem_idle(tmp_path: Path,
                                                                broker: LocalBroker) -> None:
    from probe.sim.modem import SCENARIOS, ModemEmulator

    with ModemEmulator("sim7600", SCENARIOS["answered"]) as modem:
        config = gsm_config(tmp_path, broker, modem.url, hold_s=30)
        daemon = Daemon(config)
        wait_until(lambda: modem.call == "active", 20)
        daemon.stop(signal.SIGKILL)
        assert modem.call == "active"  # the network still holds the call the probe left
        killed_at = len(modem.received)
        daemon = Daemon(config)
        try:
            # The restarted probe ends the leftover call before it dials again.
            wait_until(lambda: sum(line.startswith("ATD") for line in modem.received) >= 2, 30)
            after = modem.received[killed_at:]
            second_dial = next(i for i, line in enumerate(after) if line.startswith("ATD"))
            assert any(line in ("AT+CHUP", "ATH") for line in after[:second_dial]), after
        finally:
            daemon.stop()
        assert modem.idle  # and hangs up its own call when stopped


@pytest.mark.slow
def test_modem_that_stops_answering_is_reported_and_the_daemon_keeps_running(
        tmp_path: Path, broker: LocalBroker) -> None:
    from probe.sim.modem import SCENARIOS, ModemEmulator

    with ModemEmulator("sim7600", SCENARIOS["unresponsive"]) as modem, \
            Subscriber(broker.host, broker.port, f"hotline-probe/v1/{PROBE}/#") as sub:
        daemon = Daemon(gsm_config(tmp_path, broker, modem.url, hold_s=1))
        try:
            sub.wait_for(lambda msgs: any(m.topic.endswith("/result") for m in msgs), 90)
            result = received(sub)[0]
            assert result["outcome"] == "modem_error"
            codes = [c["code"] for c in result["diagnosis"]["causes"]]
            assert codes == ["modem.unresponsive"]
            assert result["diagnosis"]["verdict"] == "unknown"  # the probe's fault, not the hotline
            assert daemon.proc.poll() is None
        finally:
            log = daemon.stop()
        assert daemon.proc.returncode == 0, log[-5:]
