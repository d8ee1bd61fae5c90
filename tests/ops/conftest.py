"""Fixtures for the ops tests: a real PostgreSQL (one throw-away cluster per test session, a
fresh database per test), SQLite files, a real mosquitto (``broker`` from tests/conftest.py) and
ops services started against them."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from probe.ops.api import server_config
from probe.ops.config import OpsConfig, parse_ops_config
from probe.ops.service import OpsService, Timing
from probe.sim.broker import LocalBroker
from probe.sim.ports import free_port
from probe.sim.postgres import LocalPostgres

FAST = Timing(evaluate_s=0.05, target_every_s=0.1, notify_s=0.2, retention_s=3600)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One PostgreSQL cluster for the whole session (started in about a second)."""
    with LocalPostgres() as pg:
        yield pg


def fresh_database(pg: LocalPostgres) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg.psql(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that asks runs twice: on the embedded SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ops.sqlite3"
    return fresh_database(request.getfixturevalue("postgres"))


def make_config(tmp_path: Path, broker: LocalBroker, database_url: str, *,
                instance: str = "ops-test", **sections: Any) -> OpsConfig:
    data: dict[str, Any] = {
        "ops": {"instance": instance, "state_dir": str(tmp_path / instance)},
        "database": {"url": database_url},
        "mqtt": {"host": broker.host, "port": broker.port, "batch_wait_ms": 5},
        "http": {"port": 0},
        "correlation": {"round_s": 10, "min_sites": 2, "rounds_required": 2,
                        "rounds_window": 3, "recover_rounds": 2},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_ops_config(data)


@pytest.fixture
def start_ops() -> Iterator[Callable[..., OpsService]]:
    """Start ops services (stopped after the test): ``start_ops(config, http=False)``."""
    started: list[OpsService] = []

    def start(config: OpsConfig, *, http: bool = False) -> OpsService:
        service = OpsService(config, timing=FAST).start(http=http)
        started.append(service)
        if not service.ingest.connected.wait(10):
            raise TimeoutError("ops did not connect to the broker")
        return service

    yield start
    for service in started:
        service.stop()


@contextmanager
def served(app: FastAPI, cfg: OpsConfig) -> Iterator[str]:
    """``app`` on a real uvicorn at 127.0.0.1 (a free port; another one if it was taken)."""
    for _attempt in range(5):
        port = free_port(kind=socket.SOCK_STREAM)
        server = uvicorn.Server(server_config(app, cfg, host="127.0.0.1", port=port,
                                              log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            time.sleep(0.02)
        if server.started:
            break
        thread.join()
    else:
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
