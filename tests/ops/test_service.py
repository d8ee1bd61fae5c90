"""The ops service as a process: systemd notify and a clean stop, HTTPS when given a
certificate, retention."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from probe.ops.db import HealthSample, Quarantine, Recording, Result, transaction, utcnow
from probe.ops.service import OpsService
from probe.sim.broker import LocalBroker
from tests.ops.conftest import make_config
from tests.ops.fleet import result_doc
from tests.pki import TestCA


def test_serve_tells_systemd_it_is_ready_and_stops_cleanly_on_sigterm(
        tmp_path: Path, broker: LocalBroker) -> None:
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(60)
    config = tmp_path / "ops.toml"
    config.write_text(f'[ops]\ninstance = "unit"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
                      '[http]\nport = 0\n')
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "60000000",
           "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, "-m", "probe", "ops", "serve", "-c",
                                str(config)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        messages = [listener.recv(4096).decode()]
        assert messages[0].startswith("READY=1"), messages
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        while True:  # whatever else it said before it stopped
            listener.settimeout(0.5)
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                break
    finally:
        if process.poll() is None:
            process.kill()
        listener.close()
    assert process.returncode == 0, output[-2000:]
    assert any(m.startswith("STOPPING=1") for m in messages), messages
    assert (tmp_path / "state" / "ops.sqlite3").exists()


def test_https_when_given_a_certificate(tmp_path: Path, broker: LocalBroker,
                                        start_ops: Callable[..., OpsService]) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("localhost", server=True)
    config = make_config(tmp_path, broker, f"sqlite:///{tmp_path}/ops.sqlite3",
                         http={"tls_cert_file": str(server.cert),
                               "tls_key_file": str(server.key)})
    ops = start_ops(config, http=True)
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    with urllib.request.urlopen(f"https://127.0.0.1:{ops.http_port}/healthz",
                                context=context, timeout=10) as response:
        assert response.status == 200
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{ops.http_port}/healthz", timeout=5)


def test_retention_removes_only_what_is_older_than_configured(
        tmp_path: Path, broker: LocalBroker, start_ops: Callable[..., OpsService]) -> None:
    config = make_config(tmp_path, broker, f"sqlite:///{tmp_path}/ops.sqlite3",
                         retention={"results_days": 30, "recordings_days": 7,
                                    "quarantine_days": 7, "health_days": 7})
    ops = start_ops(config)
    now = utcnow()
    old, recent = now - dt.timedelta(days=31), now - dt.timedelta(days=1)
    with transaction(ops.sessions) as s:
        for i, at in enumerate((old, recent)):
            doc = result_doc("sip-answered", probe_id="p1", started_at=at)
            s.add(Result(id=doc["id"], probe_id="p1", target="support", channel="sip",
                         path="sip", started_at=at, received_at=at, outcome="answered",
                         met=True, vote="ok", document=doc))
            s.add(Recording(result_id=doc["id"], probe_id="p1", content_type="audio/wav",
                            size=1, data=b"x",
                            received_at=old if i == 0 else now - dt.timedelta(days=6)))
            s.add(Quarantine(topic="t", reason="r", size=0, payload=b"", received_at=at))
        for days in (8, 6):
            s.add(HealthSample(probe_id="p1", at=now - dt.timedelta(days=days), outbox_count=0))
    counts = ops.purge(now)
    assert counts == {"results": 1, "recordings": 1, "quarantine": 1, "health_samples": 1,
                      "login_attempts": 0}
    with ops.sessions() as s:
        assert s.scalar(select(func.count()).select_from(HealthSample)) == 1
        assert s.scalar(select(func.count()).select_from(Result)) == 1
        assert s.scalar(select(func.count()).select_from(Recording)) == 1
