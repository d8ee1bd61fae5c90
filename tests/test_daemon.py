"""`probe run` end to end: SIPp hotline → the probe's process → a real mosquitto → a subscriber."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from probe.config.model import Target
from probe.daemon.schedule import Slot, plan, replan, reschedule
from probe.dial.runner import next_boot_count, prune_audio
from probe.results.document import validate_result
from probe.sim import probe_config
from probe.sim.broker import LocalBroker, Subscriber
from probe.sim.hotline import HotlineBehaviour, SippHotline
from tests.test_readme import readme_status_keys, status_keys
from tests.waiting import wait_until


def write_config(tmp_path: Path, broker: LocalBroker, uri: str, *, hold_s: float = 1,
                 interval_s: int = 30) -> Path:
    return probe_config.write_config(
        tmp_path, probe_id="p-17", site="Test branch",
        mqtt=probe_config.broker_section(broker, keepalive_s=5),
        targets=[probe_config.sip_target("support", uri, interval_s=interval_s, hold_s=hold_s)])


def start_probe(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "probe", "run", "-c", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def statuses(sub: Subscriber) -> list[dict]:
    return [m.json() for m in sub.messages if m.topic == "hotline-probe/v1/p-17/status"]


@pytest.mark.slow
def test_run_once_publishes_result_and_status(tmp_path: Path, broker: LocalBroker) -> None:
    with SippHotline(HotlineBehaviour(pdd_ms=200, ring_ms=500), calls=2) as hotline, \
            Subscriber(broker.host, broker.port, "hotline-probe/v1/#") as sub:
        config = write_config(tmp_path, broker, hotline.uri)
        for boot in (1, 2):
            proc = start_probe(config, "--once")
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            assert "Assertion" not in err
            sub.wait_for(lambda msgs, b=boot: sum(
                m.topic.endswith("/result") for m in msgs) == b, timeout=5)
            sub.wait_for(lambda msgs, b=boot: {"state": "offline", "boot": b,
                                                "reason": "stopped"} in statuses(sub), timeout=5)
        assert hotline.wait(5) == 0

    results = [m for m in sub.messages if m.topic.endswith("/result")]
    for message in results:
        assert not message.retain
        doc = message.json()
        validate_result(doc)
        assert (doc["probe_id"], doc["site"], doc["target"]) == ("p-17", "Test branch", "support")
        assert doc["outcome"] == "answered"
    assert len({m.json()["id"] for m in results}) == 2
    # Answered as expected, verdict ok: nothing for ops to hear.
    assert not [m for m in sub.messages if m.topic.endswith("/recording")]
    online = [s for s in statuses(sub) if s["state"] == "online"]
    assert sorted({s["boot"] for s in online}) == [1, 2]
    # The retained status carries the verdict per target and the probe's own health, apart.
    last_online = online[-1]
    assert last_online["targets"]["support"]["verdict"] == "ok"
    assert last_online["probe"] == {"ok": True, "faults": [], "reasons": {}}
    # ... and exactly what the README shows it to hold
    assert status_keys(last_online) == readme_status_keys()

    # The broker keeps the last status for whoever subscribes later.
    with Subscriber(broker.host, broker.port, "hotline-probe/v1/p-17/status") as late:
        late.wait_for(lambda msgs: len(msgs) == 1, timeout=5)
        assert late.messages[0].retain
        assert late.messages[0].json() == {"state": "offline", "boot": 2, "reason": "stopped"}


@pytest.mark.slow
def test_last_will_when_the_probe_is_killed_mid_call(tmp_path: Path, broker: LocalBroker) -> None:
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=100)) as hotline, \
            Subscriber(broker.host, broker.port, "hotline-probe/v1/p-17/status") as sub:
        proc = start_probe(write_config(tmp_path, broker, hotline.uri, hold_s=30))
        try:
            sub.wait_for(lambda msgs: any(m.json()["state"] == "online" for m in msgs), 15)
            wav_dir = tmp_path / "state" / "audio"
            # Kill while the call is up: the recording has started.
            wait_until(lambda: any(wav_dir.glob("*.wav")), 10)
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        finally:
            proc.kill()
            proc.communicate()
        sub.wait_for(lambda msgs: msgs[-1].json()["state"] == "offline", timeout=10)
        last = sub.messages[-1]
        assert last.retain
        assert last.json() == {"state": "offline", "boot": 1, "reason": "connection lost"}


@pytest.mark.slow
def test_sigterm_between_calls_stops_cleanly(tmp_path: Path, broker: LocalBroker) -> None:
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=100)) as hotline, \
            Subscriber(broker.host, broker.port, "hotline-probe/v1/#") as sub:
        proc = start_probe(write_config(tmp_path, broker, hotline.uri, hold_s=0.5))
        sub.wait_for(lambda msgs: any(m.topic.endswith("/result") for m in msgs), timeout=20)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        sub.wait_for(lambda msgs: {"state": "offline", "boot": 1, "reason": "stopped"}
                     in statuses(sub), timeout=5)


def test_missed_slots_are_skipped_not_piled_up() -> None:
    target = Target("t", "sip:a@b", None, ("sip",), interval_s=60)
    slot = Slot(target, "sip", grid=1000.0)
    reschedule(slot, now=1010.0)  # the call took 10 s: next slot on the grid
    assert slot.due == 1060.0
    reschedule(slot, now=1310.0)  # busy for minutes: skip the missed slots, keep the grid
    assert slot.due == 1360.0
    reschedule(slot, now=1360.0)  # a slot due exactly now is still in the past once taken
    assert slot.due == 1420.0


def test_plan_covers_every_target_and_channel() -> None:
    a = Target("a", "sip:a@b", "+331", ("sip", "gsm"))
    b = Target("b", "sip:b@b", None, ("sip",))
    assert [(s.target.name, s.channel) for s in plan((a, b), 5.0)] == [
        ("a", "sip"), ("a", "gsm"), ("b", "sip")]


def test_a_reload_keeps_unchanged_targets_on_their_grid() -> None:
    """SIGHUP with the same targets is not a reason to call every hotline again at once."""
    a = Target("a", "sip:a@b", None, ("sip",), interval_s=600)
    b = Target("b", "sip:b@b", None, ("sip",), interval_s=600)
    slots = plan((a, b), now=1000.0)
    for slot in slots:
        reschedule(slot, now=1001.0)  # both called at 1000: next at 1600
    changed = dataclasses.replace(b, interval_s=300)
    new = Target("c", "sip:c@b", None, ("sip",))
    after = replan(slots, (a, changed, new), now=1200.0)
    assert [(s.target.name, s.due) for s in after] == [("a", 1600.0), ("b", 1200.0),
                                                       ("c", 1200.0)]
    assert after[1].target.interval_s == 300


def test_boot_counter_survives_restarts(tmp_path: Path) -> None:
    assert [next_boot_count(tmp_path) for _ in range(3)] == [1, 2, 3]
    (tmp_path / "boot_count").write_text("garbage")
    assert next_boot_count(tmp_path) == 1


def test_prune_audio_keeps_the_newest(tmp_path: Path) -> None:
    import os

    for i in range(5):
        wav = tmp_path / f"{i}.wav"
        wav.write_bytes(b"RIFF")
        os.utime(wav, (1000 + i, 1000 + i))
    assert prune_audio(tmp_path, keep=2) == 3
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["3.wav", "4.wav"]


def test_run_reports_a_bad_config_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[probe]\nid = "p"\nsite = "s"\n[[targets]]\nname = "t"\nchannels = ["sip"]\n'
                   'sip_uri = "sip:a@b"\ninterval_s = "often"\n')
    proc = subprocess.run([sys.executable, "-m", "probe", "run", "-c", str(bad)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "targets[0].interval_s" in proc.stderr
    assert "targets[0].sip_uri" not in proc.stderr
    assert "sip: missing" in proc.stderr  # a sip channel needs a [sip] account


@pytest.mark.slow
def test_sigterm_mid_call_hangs_up_records_and_publishes(tmp_path: Path,
                                                         broker: LocalBroker) -> None:
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=100)) as hotline, \
            Subscriber(broker.host, broker.port, "hotline-probe/v1/#") as sub:
        proc = start_probe(write_config(tmp_path, broker, hotline.uri, hold_s=30))
        # the call is up
        wait_until(lambda: any((tmp_path / "state" / "audio").glob("*.wav")), 15)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        sub.wait_for(lambda msgs: any(m.topic.endswith("/result") for m in msgs), timeout=5)
        result = next(m.json() for m in sub.messages if m.topic.endswith("/result"))
        # The hotline did answer (that stays true); the probe cut the call short, and says so.
        assert result["outcome"] == "answered"
        assert result["sip"]["hangup_reason"] == "aborted"
        assert result["sip"]["ended_by"] == "probe"
        assert result["timings_ms"]["talk_duration"] < 30_000
        assert hotline.wait(5) == 0  # the hotline saw a clean BYE
        assert statuses(sub)[-1] == {"state": "offline", "boot": 1, "reason": "stopped"}


@pytest.mark.slow
def test_run_once_with_the_broker_away_keeps_the_result_and_stops(tmp_path: Path) -> None:
    import sqlite3

    from probe.sim.hotline import free_port

    away = LocalBroker()
    away.port = free_port(kind=1)  # nothing listens there
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=100)) as hotline:
        proc = start_probe(write_config(tmp_path, away, hotline.uri, hold_s=0.5), "--once")
        _, err = proc.communicate(timeout=90)  # a bounded wait for the broker, then it stops
    assert proc.returncode == 0, err
    with sqlite3.connect(tmp_path / "state" / "outbox.sqlite3") as db:
        (waiting,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
    assert waiting == 1  # delivered by the next run that reaches the broker


# --------------------------------------------------------------------------- the board at fault


def _board_config(tmp_path: Path, broker: LocalBroker, uri: str) -> Path:
    """A probe with the whole board configured ([indicator] and [line]) and one SIP target;
    the line's faults settle quickly, so the first result already sees them."""
    return probe_config.write_config(
        tmp_path, probe_id="p-17", site="Test branch",
        mqtt=probe_config.broker_section(broker, keepalive_s=5),
        indicator={"led": "rgb"}, line={"fault_settle_s": 0.2, "settle_s": 0.2},
        targets=[probe_config.sip_target("support", uri, hold_s=1)])


def _run_once_on_the_board(tmp_path: Path, broker: LocalBroker, **env: str
                           ) -> tuple[str, dict, dict, dict]:
    """``probe run --once`` with the board configured: (its log, the result, the last online
    status, the last health record)."""
    import os

    clean = {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=100)) as hotline, \
            Subscriber(broker.host, broker.port, "hotline-probe/v1/#") as sub:
        proc = subprocess.run(
            [sys.executable, "-m", "probe", "run", "-c",
             str(_board_config(tmp_path, broker, hotline.uri)), "--once"],
            capture_output=True, text=True, timeout=60, env={**clean, **env})
        assert proc.returncode == 0, proc.stderr  # not a crash loop under systemd
        sub.wait_for(lambda msgs: any(m.topic.endswith("/result") for m in msgs), timeout=5)
    result = next(m.json() for m in sub.messages if m.topic.endswith("/result"))
    online = [s for s in statuses(sub) if s["state"] == "online"]
    health = [m.json() for m in sub.messages if m.topic.endswith("/health")]
    return proc.stdout + proc.stderr, result, online[-1], health[-1]


def _board_fault(result: dict) -> dict:
    return next(c for c in result["diagnosis"]["causes"] if c["code"] == "probe.board_fault")


@pytest.mark.slow
def test_without_a_pin_library_the_probe_calls_on_and_names_the_board_fault(
        tmp_path: Path, broker: LocalBroker) -> None:
    # This machine has no Pi GPIO and no pin library: gpiozero itself refuses every pin.
    log, result, status, health = _run_once_on_the_board(tmp_path, broker)
    validate_result(result)
    assert result["outcome"] == "answered"  # the call was made all the same
    assert result["line"] is None
    assert _board_fault(result)["evidence"]["reason"].startswith("no pin library")
    assert "lgpio" in _board_fault(result)["evidence"]["reason"]
    assert result["diagnosis"]["verdict"] == "ok"  # a probe fault is never the hotline's
    for probe_health in (status["probe"], health["status"]):
        assert "probe.board_fault" in probe_health["faults"]
        reason = probe_health["reasons"]["probe.board_fault"]
        assert "indicator: no pin library" in reason and "line: no pin library" in reason
    assert health["line"] is None
    # The LED's statuses went to the log instead: the line's board is at fault.
    assert "indicator: status fault_line: probe fault: the local phone line" in log
    assert "BadPinFactory" not in log and "PinFactoryFallback" not in log  # reasons, not noise


@pytest.mark.slow
def test_an_absent_line_board_is_a_board_fault_not_a_line_reading(
        tmp_path: Path, broker: LocalBroker) -> None:
    # gpiozero's mock pins: the pins open, but no MCP3008 answers on the SPI bus (every
    # channel reads 0), so the reference channel is wrong from the first window.
    log, result, status, health = _run_once_on_the_board(tmp_path, broker,
                                                         GPIOZERO_PIN_FACTORY="mock")
    assert result["outcome"] == "answered"
    assert result["line"] is None  # -247 V "reversed" would be a lie
    reason = _board_fault(result)["evidence"]["reason"]
    assert reason.startswith("the reference channel reads 0 instead of 512")
    assert status["probe"]["reasons"]["probe.board_fault"] == f"line: {reason}"
    assert health["line"]["state"] == "interface_fault"  # health keeps what was read
    assert "indicator" not in status["probe"]["reasons"]["probe.board_fault"]  # it opened
    assert "board: pin factory MockFactory, MCP3008 on software SPI" in log


def test_a_modem_whose_power_pin_is_taken_is_retried_not_the_worker_s_end() -> None:
    from gpiozero import DigitalOutputDevice
    from gpiozero.pins.mock import MockFactory

    from probe.config.model import ModemConfig
    from probe.daemon.run import ChannelWorker
    from probe.dial.modem import ModemDialer

    factory = MockFactory()
    squatter = DigitalOutputDevice(5, pin_factory=factory)  # the power key's GPIO, held
    config = ModemConfig(kind="gsm", port="loop://", power_pin=5)
    worker = ChannelWorker("gsm", lambda: ModemDialer(config, pin_factory=factory),
                           place_call=lambda job, dialer: {}, on_result=lambda job, doc: None)
    worker.start()
    try:
        wait_until(lambda: worker.state.state == "error", 5)
        assert "GPIO5 is already in use" in (worker.state.error or "")
        assert worker.thread.is_alive()  # a modem fault in health, not a dead thread
    finally:
        worker.stop()
        worker.join(5)
        squatter.close()
