"""Hardware in the loop: the probe on a real Raspberry Pi 3, 4 or 5, its board, line and modem.

These run only with ``PROBE_HIL=1`` on a Pi (elsewhere they skip, with that reason) and are
the automated part of docs/field-checklist.md.  They do not stand in for the tests that run
everywhere: those prove the software against real stand-ins (SIPp, mosquitto, the modem
emulator on a pty, gpiozero's mock pins, the unit's seccomp filter); these prove this Pi's
hardware and its wiring, which nothing else here can.  The LED, the buzzer and a power cut
during a call need a person: the checklist's sections 3 and 4.

    PROBE_HIL=1 PROBE_HIL_CONFIG=/etc/hotline-probe/probe.toml \\
        PROBE_HIL_SIP_TARGET=support PROBE_HIL_GSM_TARGET=support \\
        .venv/bin/python -m pytest -v tests/hil

The board test opens the pins itself: stop the daemon first (it holds them).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil
PROBE = [sys.executable, "-m", "probe"]
MAX_EXPOSURE = 3.0


def probe(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROBE, *args], capture_output=True, text=True, timeout=timeout)


def test_the_configuration_is_valid(config_path: Path) -> None:
    run = probe("check-config", "-c", str(config_path))
    assert run.returncode == 0, run.stderr
    assert "OK" in run.stdout


def test_the_board_opens_on_lgpio_with_hardware_spi(config_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from probe.board.pins import open_board
    from probe.config.model import load_config

    config = load_config(config_path)
    if config.line is None and config.indicator is None:
        pytest.skip("this probe's configuration has no [line] or [indicator]: no board")
    with caplog.at_level(logging.INFO, logger="probe.board"):
        board = open_board(config.indicator, config.line)
    assert board.faults == {}, board.faults
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "pin factory LGPIOFactory" in said, said
    if config.line is not None:
        assert "hardware SPI" in said, said


def test_the_idle_line_reads_idle_through_the_board(config_path: Path) -> None:
    run = probe("line", "-c", str(config_path), "--json")
    if run.returncode == 2 and "no [line] section" in run.stderr:
        pytest.skip("this probe's configuration has no [line]")
    assert run.returncode == 0, run.stdout + run.stderr  # usable: not cut, low or reversed
    assert json.loads(run.stdout)["state"] == "idle", run.stdout  # with nobody on the line


def test_the_installed_unit_is_hardened(pi_model: str) -> None:
    run = subprocess.run(["systemd-analyze", "security", "--no-pager", "hotline-probe"],
                         capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    assert found, run.stdout + run.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, run.stdout


@pytest.mark.parametrize("channel", ["sip", "gsm"])
def test_a_real_call_is_answered(config_path: Path, channel: str) -> None:
    target = os.environ.get(f"PROBE_HIL_{channel.upper()}_TARGET")
    if not target:
        pytest.skip(f"PROBE_HIL_{channel.upper()}_TARGET names no target to call over "
                    f"{channel}")
    run = probe("call", target, "--channel", channel, "-c", str(config_path), "--json",
                timeout=300)
    doc = json.loads(run.stdout)
    assert doc["outcome"] == "answered", run.stdout + run.stderr
    assert doc["analysis"] is not None  # heard: the audio path works on this Pi
