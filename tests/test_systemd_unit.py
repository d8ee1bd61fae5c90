"""deploy/systemd/hotline-probe.service: hardened (systemd-analyze security), yet the probe
still has what it needs - its devices, its network, its system calls (the real probe run in
the unit's own seccomp filter, tests/sandbox.py) - and it never waits for NTP to start.

Needs ``systemd-analyze`` (Debian's ``systemd``, 252 or later for ``--offline``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probe.clock import TIMESYNC_FLAG
from probe.sim import probe_config
from probe.sim.broker import LocalBroker, Subscriber
from probe.sim.hotline import HotlineBehaviour, SippHotline
from tests import sandbox

UNIT = sandbox.UNIT
MAX_EXPOSURE = 3.0

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="needs systemd-analyze (Debian package systemd)")


def unit_lines(section: str) -> list[str]:
    lines, current = [], None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = line
        elif current == section and line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_exposure_is_at_most_3() -> None:
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(UNIT)], capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, proc.stdout  # it was 7.1


def test_the_unit_is_valid(tmp_path: Path) -> None:
    # The probe is not installed here: point ExecStart= at a binary that exists.
    unit = tmp_path / UNIT.name
    unit.write_text(re.sub(r"ExecStart=\S+", "ExecStart=/bin/true", UNIT.read_text()))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert UNIT.name not in proc.stderr + proc.stdout, proc.stderr


def test_the_hardening_leaves_the_probe_its_devices_and_network() -> None:
    service = unit_lines("[Service]")
    allowed = {line.split("=", 1)[1] for line in service if line.startswith("DeviceAllow=")}
    assert {"char-ttyUSB rw", "char-ttyACM rw", "/dev/ttyAMA0 rw", "char-gpiochip rw",
            "char-spidev rw", "/dev/gpiomem rw", "char-alsa rw"} <= allowed  # modems, board, sound
    assert "DevicePolicy=closed" in service
    settings = sandbox.unit_settings()
    assert set(" ".join(settings["RestrictAddressFamilies"]).split()) == {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert set(settings["SupplementaryGroups"][0].split()) >= {"dialout", "gpio", "spi", "audio"}
    # Each of these would take away something the probe needs (the unit's comments say what).
    for key in ("PrivateDevices", "PrivateUsers", "PrivateNetwork", "ProcSubset",
                "IPAddressDeny", "MemoryDenyWriteExecute", "DynamicUser"):
        assert key not in settings, key
    assert settings["ReadWritePaths"] == ["/var/lib/hotline-probe"]


def test_the_probe_never_waits_for_time_sync_to_start() -> None:
    unit = unit_lines("[Unit]")
    assert not [line for line in unit if "time-sync" in line or "time-wait-sync" in line]
    assert "After=network-online.target" in unit  # which times out by itself


def test_in_the_units_filter_the_clock_state_comes_from_timesyncd(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    code = f"""if True:
        import socket
        from pathlib import Path
        from probe import clock
        print(clock.kernel_says_synced())  # adjtimex is refused with the calls that set time
        clock.TIMESYNC_FLAG = Path({str(flag)!r})
        print(clock.clock_synced())
        clock.TIMESYNC_FLAG.touch()  # what systemd-timesyncd does on each synchronisation
        print(clock.clock_synced())
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        except PermissionError:
            print("refused")
        """
    proc = subprocess.run(sandbox.command(sys.executable, "-c", code), capture_output=True,
                          text=True, timeout=60, cwd=sandbox.REPO)
    assert proc.stdout.split() == ["None", "False", "True", "refused"], proc.stderr


@pytest.mark.slow
def test_the_probe_runs_in_the_units_system_call_filter(tmp_path: Path,
                                                        broker: LocalBroker) -> None:
    """The real probe, inside the unit's seccomp filter: two SIP calls answered (their audio
    analysed), one of them too slow (its recording encoded by sox, a child process), the board
    on gpiozero's mock pins, results over MQTT, and the clock's state read where adjtimex is
    refused."""
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    with SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=100), calls=2) as hotline, \
            Subscriber(broker.host, broker.port, "hotline-probe/v1/#") as sub:
        config = probe_config.write_config(
            tmp_path, probe_id="p-sandbox", mqtt=probe_config.broker_section(broker),
            indicator={"led": "rgb"}, line={},
            targets=[probe_config.sip_target("support", hotline.uri, hold_s=1),
                     probe_config.sip_target("sales", hotline.uri, hold_s=1,
                                             max_post_dial_delay_ms=1)])
        proc = subprocess.run(sandbox.command(sys.executable, "-m", "probe", "run", "-c",
                                              str(config), "--once"),
                              capture_output=True, text=True, timeout=120, env=env,
                              cwd=sandbox.REPO)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 1, log  # sales too slow, as meant: not a crash
        sub.wait_for(lambda msgs: sum(m.topic.endswith("/result") for m in msgs) == 2
                     and any(m.topic.endswith("/recording") for m in msgs), timeout=10)
    results = {m.json()["target"]: m.json() for m in sub.messages if m.topic.endswith("/result")}
    assert results["support"]["outcome"] == "answered"
    assert results["support"]["analysis"] is not None  # numpy, scipy, the models ran
    assert results["sales"]["outcome"] == "answered"
    assert results["sales"]["expectations"]["met"] is False
    [recording] = [m for m in sub.messages if m.topic.endswith("/recording")]
    assert recording.properties.ContentType == "audio/flac"  # sox ran, in the sandbox
    # adjtimex is refused there (ProtectClock=): the flag file of systemd-timesyncd decides.
    assert results["support"]["clock_synced"] is TIMESYNC_FLAG.exists()
    assert "Traceback" not in log
