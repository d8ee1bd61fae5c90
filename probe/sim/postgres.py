"""A real, throw-away PostgreSQL cluster for tests, benchmarks and ``make demo --postgres``.

Debian's ``postgresql`` server binaries (``/usr/lib/postgresql/<major>/bin``) run a fresh cluster
in a temp dir on a free loopback port, trust authentication, user ``ops``, database ``ops``::

    with LocalPostgres() as pg:
        engine = make_engine(pg.url)

``initdb`` refuses to run as root, so when we are root the cluster belongs to the ``postgres``
system user (the package creates it) and every server command runs through ``runuser``.
``restart()`` and ``kill()`` are for fault tests (a restart mid-ingest; ``kill -9`` of the server).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

from probe.errors import ProbeError
from probe.sim.ports import free_port


class PostgresError(ProbeError, RuntimeError):
    """The local PostgreSQL could not be found or would not start."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` with ``initdb`` (apt-get install postgresql)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise PostgresError("PostgreSQL server not found under /usr/lib/postgresql "
                            "(apt-get install postgresql)")
    return Path(found[-1]).parent


class LocalPostgres:
    """A cluster on 127.0.0.1:``port``; connect as ``ops`` to database ``ops`` (:attr:`url`)."""

    def __init__(self, *, database: str = "ops", user: str = "ops") -> None:
        self.bindir = find_bindir()
        self.user = user
        self.database = database
        self.port = free_port(kind=1)  # SOCK_STREAM
        self._tmp = tempfile.TemporaryDirectory(prefix="probe-pg-")
        self.dir = Path(self._tmp.name)
        self.data = self.dir / "data"
        self._runas: list[str] = []
        if os.geteuid() == 0:
            self._runas = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres", "postgres")
        self._finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        return (f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}")

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self._runas, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise PostgresError(f"{Path(args[0]).name} failed ({done.returncode}): "
                                f"{(done.stderr or done.stdout).strip()[-800:]}")
        return done

    def start(self) -> LocalPostgres:
        first = not self.data.exists()
        if first:
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust",
                      "-U", self.user, "-E", "UTF8", "--no-sync")
        options = (f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200 -c fsync=on")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.dir / "log"), "-w", "-t", "60", "start")
        if first:
            self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                      "-U", self.user, self.database)
        if self._finalizer is None:
            self._finalizer = weakref.finalize(self, _stop_quietly, [*self._runas],
                                               str(self.bindir / "pg_ctl"), str(self.data))
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                      "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash); ``start()`` recovers from the WAL."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            (self.data / "postmaster.pid").unlink(missing_ok=True)

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def psql(self, sql: str) -> str:
        return self._run(str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", self.user, "-d", self.database, "-At", "-c", sql).stdout

    def close(self) -> None:
        self.stop("immediate")
        if self._finalizer is not None:
            self._finalizer.detach()
        self._tmp.cleanup()

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop_quietly(runas: list[str], pg_ctl: str, data: str) -> None:
    subprocess.run([*runas, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"],
                   capture_output=True, check=False, timeout=60)
