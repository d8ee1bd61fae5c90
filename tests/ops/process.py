"""``probe ops serve`` as a real subprocess, for the fault tests and the ingest benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from probe.sim.broker import LocalBroker
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


class OpsProcess:
    """``probe ops serve -c <tmp>/<name>.toml`` as a subprocess; its JSON log in a file."""

    def __init__(self, tmp_path: Path, name: str, broker: LocalBroker, url: str, *,
                 client_id: str | None = None, round_s: float = 10,
                 **mqtt: str | int) -> None:
        self.name = name
        self.client_id = client_id or f"ops-fault-{name}"  # fixed: a restart resumes it
        self.broker = broker
        self.config = tmp_path / f"{name}.toml"
        self.log_path = tmp_path / f"{name}.log"
        self.config.write_text("\n".join([
            "[ops]", f"instance = {json.dumps(name)}",
            f"state_dir = {json.dumps(str(tmp_path / name))}",
            "[database]", f"url = {json.dumps(url)}",
            "[mqtt]", f"host = {json.dumps(broker.host)}", f"port = {broker.port}",
            f"client_id = {json.dumps(self.client_id)}",
            *(f"{key} = {json.dumps(value)}" for key, value in mqtt.items()),
            "[http]", "port = 0",
            "[correlation]", f"round_s = {round_s}", ""]))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60) -> OpsProcess:
        """Start, and return once the broker has acknowledged its subscriptions."""
        subacks = self._subacks()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "probe", "ops", "serve", "-c", str(self.config),
                 "--log-format", "json"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1
        wait_until(lambda: self._exited() or self._subacks() > subacks, timeout,
                   f"{self.name} subscribed")
        assert not self._exited(), f"{self.name} exited:\n{self.log_text()[-3000:]}"
        return self

    def _subacks(self) -> int:
        return self.broker.log_text().count(f"Sending SUBACK to {self.client_id}")

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no clean disconnect, nothing flushed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def assert_ingest_never_died(self) -> None:
        text = self.log_text()
        assert "Exception in thread ops-ingest" not in text, text[-3000:]
        assert not [r for r in self.records() if r.get("thread") == "ops-ingest"
                    and r.get("level") in ("error", "critical")], text[-3000:]
