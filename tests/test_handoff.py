"""``probe call`` while the daemon runs: the call is handed to the daemon over its control
socket (probe/daemon/control.py) and placed on the daemon's own line; without a daemon, a port
held by another process is named with the fix instead of pjsip's "Address already in use".

Real parts only: the daemon as a process, a SIPp hotline, a real mosquitto, the GSM emulator.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from probe.exitcodes import EXIT_OK, EXIT_UNJUDGED, EXIT_USAGE
from probe.sim import probe_config
from probe.sim.broker import LocalBroker, Subscriber
from probe.sim.hotline import HotlineBehaviour, SippHotline
from probe.sim.modem import ModemEmulator
from probe.sim.ports import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


def probe(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_probe_call_goes_through_the_running_daemon(tmp_path: Path,
                                                    broker: LocalBroker) -> None:
    """The daemon holds the SIP port and is calling already (its first scheduled call): the
    handed-over call waits for the line, runs on the daemon's endpoint, is published like every
    result, and `probe call` prints the same document and exit code a local call would."""
    with SippHotline(HotlineBehaviour(pdd_ms=50, ring_ms=200), calls=2) as hotline, \
            Subscriber(broker.host, broker.port, "hotline-probe/v1/#") as sub:
        config = probe_config.write_config(
            tmp_path, probe_id="p-hand", probe={"max_jitter_s": 0},
            mqtt=probe_config.broker_section(broker),
            sip={"local_port": free_port()},  # a fixed port, as deployed: the daemon's
            targets=[probe_config.sip_target("support", hotline.uri, interval_s=3600,
                                             hold_s=3, max_ring_s=3)])
        daemon = subprocess.Popen([sys.executable, "-m", "probe", "run", "-c", str(config),
                                   "--log-format", "text"], cwd=ROOT, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        control = tmp_path / "state" / "control.sock"
        try:
            wait_until(control.exists, 30, "the daemon's control socket")
            mode = os.stat(control).st_mode
            call = probe("call", "support", "-c", str(config), "--json", "--progress")
            second = probe("run", "--once", "-c", str(config))
            sub.wait_for(lambda msgs: sum(m.topic.endswith("/result") for m in msgs) >= 2, 15)
        finally:
            daemon.send_signal(signal.SIGTERM)
            log, _ = daemon.communicate(timeout=60)
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660, oct(mode)
    assert call.returncode == EXIT_OK, call.stderr[-3000:] + log[-3000:]
    doc = json.loads(call.stdout)
    published = [m.json() for m in sub.messages if m.topic.endswith("/result")]
    assert doc["id"] in [r["id"] for r in published], "the daemon published the handed call"
    assert doc == next(r for r in published if r["id"] == doc["id"])
    assert re.search(r"probe\.uplink\.commands: command run \{\"target\": \"support\", "
                     r"\"channel\": \"sip\"\} \(control socket\)", log), log[-3000:]
    # It waited behind the scheduled call, then streamed the call's steps as they happened.
    steps = call.stderr.splitlines()
    assert steps[0] == "waiting for the sip line: a call is in progress", call.stderr
    assert re.fullmatch(r"ringing after 0\.\d\d s \(180 Ringing\)", steps[2]), call.stderr
    assert "Address already in use" not in call.stderr and "pjsip" not in call.stderr
    assert "in use by" not in call.stderr  # the port was the daemon's, and that was fine
    # A second daemon on the same configuration is refused (exit 2), the first one unharmed.
    assert second.returncode == EXIT_USAGE, second.stderr[-2000:]
    assert "a probe daemon is running already" in second.stderr
    assert not control.exists(), "the daemon removes its socket when it stops"


def test_a_sip_port_held_by_another_process_is_named_with_the_fix(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = probe_config.write_config(
            tmp_path, sip={"local_port": port},
            targets=[probe_config.sip_target("support", "sip:hotline@127.0.0.1:9")])
        call = probe("call", "support", "-c", str(config))
    assert call.returncode == EXIT_UNJUDGED, call.stderr
    assert (f"probe: could not place the call: the SIP port udp 127.0.0.1:{port} "
            f"(sip.local_port) is in use by pid {os.getpid()} (") in call.stderr, call.stderr
    assert (f"no probe daemon answered on {tmp_path / 'state' / 'control.sock'} to take the "
            "call") in call.stderr
    assert "stop it (sudo systemctl stop hotline-probe)" in call.stderr
    assert "Address already in use" not in call.stderr and "pjsip" not in call.stderr


def test_a_locked_modem_port_is_named_with_the_fix(tmp_path: Path) -> None:
    """pyserial's exclusive lock (flock), held here as the daemon's open port holds it."""
    with ModemEmulator("sim7600") as modem:
        config = probe_config.write_config(
            tmp_path, modems={"gsm": {"port": modem.url}},
            targets=[{"name": "support", "number": "+33472000390", "channels": ["gsm"]}])
        fd = os.open(modem.url, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            call = probe("call", "support", "-c", str(config))
        finally:
            os.close(fd)
    assert call.returncode == EXIT_UNJUDGED, call.stderr
    assert (f"the modem port {modem.url} (modems.gsm.port) is in use by pid {os.getpid()} ("
            in call.stderr), call.stderr
    assert "no probe daemon answered on" in call.stderr


def test_the_control_socket_defaults_to_the_state_dir_and_must_fit_a_socket_address(
        tmp_path: Path) -> None:
    from probe.config.model import parse_config
    from probe.errors import ConfigError

    def probe_section(**extra: str) -> dict[str, object]:
        return {"probe": {"id": "p1", "site": "lab", "state_dir": "state", **extra},
                "modems": {"gsm": {"port": "loop://"}},
                "targets": [{"name": "t", "number": "+331", "channels": ["gsm"]}]}

    config = parse_config(probe_section(), base_dir=tmp_path)
    assert config.probe.control_path == tmp_path / "state" / "control.sock"
    config = parse_config(probe_section(control_socket="ctl.sock"), base_dir=tmp_path)
    assert config.probe.control_path == tmp_path / "ctl.sock"
    with pytest.raises(ConfigError) as error:
        parse_config(probe_section(control_socket="/run/" + "x" * 120), base_dir=tmp_path)
    ((key, reason),) = error.value.problems
    assert key == "probe.control_socket" and "at most 107 bytes" in reason, reason
