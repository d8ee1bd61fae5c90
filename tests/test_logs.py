"""probe.daemon.logs: journald priorities (the ``<N>`` prefix under systemd) and a failure that
repeats (the broker away for hours) said once at warning, then counted quietly."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.daemon.logs import Recurring, configure_logging, journal_stream
from probe.sim.broker import LocalBroker
from probe.sim.ports import free_port
from probe.uplink.mqtt import Publisher


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def stream_env(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def log_every_level(name: str) -> None:
    log = logging.getLogger(name)
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")


@pytest.mark.usefixtures("restore_logging")
def test_under_systemd_every_json_line_carries_its_priority(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "stdout"
    with out.open("w") as stream:
        # What systemd does for a unit whose stdout is the journal: it names that stream.
        monkeypatch.setenv("JOURNAL_STREAM", stream_env(out))
        configure_logging("json", verbose=True, stream=stream)
        log_every_level("probe.test")
    lines = out.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    docs = [json.loads(line[3:]) for line in lines]  # journald strips the prefix
    assert [d["level"] for d in docs] == ["debug", "info", "warning", "error", "critical"]


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_are_prefixed_each_a_traceback_too(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "stdout"
    with out.open("w") as stream:
        monkeypatch.setenv("JOURNAL_STREAM", stream_env(out))
        configure_logging("text", stream=stream)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("probe.test").exception("it broke")
    lines = out.read_text().splitlines()
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)


@pytest.mark.usefixtures("restore_logging")
def test_no_prefix_off_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.write_text("")
    out = tmp_path / "stdout"
    with out.open("w") as stream:
        # Inherited by a process whose stdout was redirected: not the journal's stream.
        monkeypatch.setenv("JOURNAL_STREAM", stream_env(other))
        assert not journal_stream(stream)
        configure_logging("json", stream=stream)
        logging.getLogger("probe.test").warning("w")
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not journal_stream(stream)
    assert json.loads(out.read_text())["level"] == "warning"


def test_a_recurring_failure_warns_once_then_counts_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="probe.test")
    now = [0.0]
    failures = Recurring(logging.getLogger("probe.test"), every_s=600.0, clock=lambda: now[0])
    for _ in range(60):  # half an hour of retries every 30 s
        failures.failed("cannot reach %s", "broker")
        now[0] += 30.0
    levels = [r.levelno for r in caplog.records]
    assert levels.count(logging.WARNING) == 1 and levels[0] == logging.WARNING
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["cannot reach broker (still failing: 21 attempts in 600 s)",
                     "cannot reach broker (still failing: 41 attempts in 1200 s)"]
    assert levels.count(logging.DEBUG) == 57
    assert caplog.records[-1].attempt == 60  # type: ignore[attr-defined]
    assert failures.ended() == (60, 1800.0)
    failures.failed("cannot reach %s", "broker")  # a new episode warns again
    assert caplog.records[-1].levelno == logging.WARNING


def test_the_broker_away_is_one_warning_then_the_count_when_it_is_back(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="probe.uplink.mqtt")
    port = free_port(kind=1)  # nothing listens there yet
    pub = Publisher(probe_id="p1", host="127.0.0.1", port=port, reconnect_delay_s=(0.05, 0.1))
    try:
        deadline = time.monotonic() + 10
        while sum("cannot reach MQTT broker" in r.getMessage() for r in caplog.records) < 5:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        with LocalBroker(port=port):
            assert pub.wait_connected(10)
    finally:
        pub.close()
    tries = [r for r in caplog.records if "cannot reach MQTT broker" in r.getMessage()]
    assert [r.levelno for r in tries].count(logging.WARNING) == 1
    assert all(r.levelno == logging.DEBUG for r in tries[1:])
    [back] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connected")]
    assert f"after {len(tries)} failed attempts in" in back
