"""The whole chain with nothing stood in for: a real probe daemon calling a SIPp hotline, a real
mosquitto, the ops service with its HTTP API — an engineer asks ops to run a test call now, the
command travels over MQTT 5 with correlation data, the probe calls, and ops returns the probe's
reply to the engineer, stores the result and keeps the recording of the failed call."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from probe.ops.auth import create_token, create_user
from probe.ops.db import Probe, Recording, Result, transaction
from probe.ops.service import OpsService
from probe.sim.broker import LocalBroker
from probe.sim.hotline import HotlineBehaviour, SippHotline
from probe.sim.probe_config import broker_section, sip_target, write_config
from tests.ops.conftest import make_config
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def api(ops: OpsService, method: str, path: str, token: str, body: dict | None = None,
        timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{ops.http_port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read() or b"null")


def test_run_now_from_ops_reaches_the_probe_and_its_result_comes_back(
        tmp_path: Path, broker: LocalBroker, start_ops: Callable[..., OpsService]) -> None:
    ops = start_ops(make_config(tmp_path, broker, f"sqlite:///{tmp_path}/ops.sqlite3"),
                    http=True)
    with transaction(ops.sessions) as session:
        token = create_token(session, create_user(session, "olga", "correct horse battery",
                                                  "operator"), "test")
    # Answers, but after a post-dial delay over the target's limit: a failed call with audio.
    slow = HotlineBehaviour(pdd_ms=700, ring_ms=300)
    with SippHotline(slow, calls=3) as hotline:
        (tmp_path / "probe").mkdir()
        config = write_config(tmp_path / "probe", probe_id="branch-9", site="Brest",
                              targets=[sip_target("support", hotline.uri, interval_s=3600,
                                                  max_post_dial_delay_ms=300, hold_s=2)],
                              mqtt=broker_section(broker))
        daemon = subprocess.Popen([sys.executable, "-m", "probe", "run", "-c", str(config),
                                   "--log-format", "text"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: _probe_state(ops, "branch-9") == "online", timeout=30,
                       what="the probe online in ops")
            status, command = api(ops, "POST", "/api/v1/probes/branch-9/commands/run?wait_s=45",
                                  token, {"target": "support"})
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=30)
    assert status == 200, command
    replies = command["replies"]
    assert replies[0] == {"command": "run", "ok": True, "accepted": True}
    final = replies[-1]
    assert final["ok"] is True and final["result"]["target"] == "support"
    result_id = final["result"]["id"]
    # The result itself travelled the other way, outbox -> broker -> ops, and its recording.
    stored = wait_until(lambda: _result(ops, result_id), timeout=30, what="result in ops")
    assert (stored.probe_id, stored.site, stored.met) == ("branch-9", "Brest", False)
    recording = wait_until(lambda: _recording(ops, result_id), timeout=30,
                           what="recording in ops")
    assert recording.content_type == "audio/flac" and recording.data[:4] == b"fLaC"
    request = urllib.request.Request(
        f"http://127.0.0.1:{ops.http_port}/api/v1/results/{result_id}/recording",
        headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"] == "audio/flac"
        assert response.read() == recording.data
    # The planned stop is seen as such.
    wait_until(lambda: _probe_state(ops, "branch-9") == "offline", timeout=15,
               what="offline after SIGTERM")
    with ops.sessions() as s:
        probe = s.get(Probe, "branch-9")
        assert probe is not None and probe.status_reason == "stopped"
        assert probe.health is not None and probe.health["probe_id"] == "branch-9"
    assert daemon.returncode == 0, stderr[-2000:]


def _probe_state(ops: OpsService, probe_id: str) -> str | None:
    with ops.sessions() as s:
        probe = s.get(Probe, probe_id)
        return probe.state if probe is not None else None


def _result(ops: OpsService, result_id: str) -> Result | None:
    with ops.sessions() as s:
        return s.get(Result, result_id)


def _recording(ops: OpsService, result_id: str) -> Recording | None:
    with ops.sessions() as s:
        return s.scalars(select(Recording).where(Recording.result_id == result_id)).first()


