"""``make demo`` (``python -m probe demo``) end to end, as a person and as CI run it.

At a terminal (a pseudo-terminal here) the demo ends with the console on its own data: the
printed URL and one-time ``demo`` password log in, the fleet page shows the demo's offices, and
Ctrl-C (SIGINT) stops it cleanly with the demo's exit code.  Without a terminal it must return
by itself — nobody would be there to press Ctrl-C.  Each run is a whole demo (~50 s).
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_TIMEOUT_S = 150
CONSOLE = re.compile(r"the console, on the demo's data: (http://127\.0\.0\.1:\d+/)\s+"
                     r"log in as demo, password (\S+)")
SITES = ("Lyon", "Lille", "Nantes")


class PtyReader:
    """Everything the child writes to the pseudo-terminal, read as it comes (a child whose
    terminal is not drained blocks on its next write)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed its side (it exited)
                return
            if not chunk:
                return
            with self.lock:
                self.text += chunk.decode("utf-8", "replace")

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = pattern.search(self.text)
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no {pattern.pattern!r} in the demo's output:\n{self.text[-3000:]}")


def console_login(base: str, name: str, password: str) -> str:
    """The login form as a browser posts it (its CSRF field and double-submit cookie); the
    page it lands on (the fleet)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(f"{base}login", timeout=10) as response:
        form = response.read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf, form
    body = urllib.parse.urlencode({"name": name, "password": password, "csrf": csrf[1],
                                   "next": "/"}).encode()
    with opener.open(f"{base}login", data=body, timeout=10) as response:  # 303 -> /
        assert response.status == 200 and response.url == base, response.url
        return response.read().decode()


@pytest.mark.slow
def test_demo_at_a_terminal_serves_the_console_until_ctrl_c() -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "probe", "demo"], cwd=ROOT,
                            stdin=secondary, stdout=secondary, stderr=secondary,
                            close_fds=True)
    os.close(secondary)  # the child holds it: EOF on ours when it exits
    reader = PtyReader(primary)
    try:
        found = reader.wait_for(CONSOLE, DEMO_TIMEOUT_S)
        base, password = found[1], found[2]
        assert proc.poll() is None  # still serving
        fleet = console_login(base, "demo", password)
        for site in SITES:
            assert site in fleet, site
        assert 'id="fleet-grid"' in fleet
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, reader.text[-3000:]
        reader.thread.join(5)
        assert "everything the demo started is stopped." in reader.text
        with pytest.raises(OSError):  # the service went with it
            urllib.request.urlopen(f"{base}healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(primary)


def development_only_modules() -> set[str]:
    """Top-level modules of the packages only the dev extra brings (requirements/dev.txt less
    requirements/ops.txt): what make demo's lighter venv does not have."""
    import importlib.metadata

    def names(lock: str) -> set[str]:
        text = (ROOT / "requirements" / lock).read_text()
        return {re.sub(r"[-_.]+", "-", name.lower())
                for name in re.findall(r"(?m)^([A-Za-z0-9_.-]+)==", text)}

    owners = importlib.metadata.packages_distributions()
    dev_only = names("dev.txt") - names("ops.txt")
    return {module for module, dists in owners.items()
            if {re.sub(r"[-_.]+", "-", d.lower()) for d in dists} <= dev_only}


BLOCKER = """
import importlib.abc, os, sys
_blocked = set(os.environ["DEMO_BLOCKED_MODULES"].split(","))
class _DevelopmentOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _blocked:
            raise ModuleNotFoundError(f"{name} is a development tool: not in make demo's venv")
sys.meta_path.insert(0, _DevelopmentOnly())
"""


@pytest.mark.slow
def test_demo_without_a_terminal_exits_by_itself(tmp_path: Path) -> None:
    """... and needs nothing from the dev extra: its venv (.venv-demo) has only the probe and
    the ops extra, so here, in the full venv, every dev-only module is made unimportable for
    the demo and every process it starts (a sitecustomize on PYTHONPATH)."""
    blocked = development_only_modules()
    assert {"selenium", "hypothesis", "ansible", "pytest"} <= blocked
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DEMO_BLOCKED_MODULES": ",".join(blocked)}
    probe = subprocess.run([sys.executable, "-c", "import hypothesis"], env=env, check=False,
                           capture_output=True, text=True)
    assert "development tool" in probe.stderr  # the block holds in a child process
    done = subprocess.run([sys.executable, "-m", "probe", "demo"], cwd=ROOT,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=DEMO_TIMEOUT_S,
                          check=False, env=env)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "development tool" not in done.stdout
    assert "demo finished in" in done.stdout
    assert "the console, on the demo's data" not in done.stdout
    assert "everything the demo started is stopped." in done.stdout
    # The board shows what the daemon's own status said: a busy line and a first unanswered
    # call are degraded (one failure is not yet an outage), never down with alarm beeps.
    assert re.search(r"the daemon's verdicts \(.*sales degraded.*\) show as degraded",
                     done.stdout), done.stdout[-3000:]
    assert "alarm: 3 long beeps for down" not in done.stdout


@pytest.mark.slow
def test_the_board_shows_the_daemon_s_verdicts_by_the_daemon_s_rule() -> None:
    from probe.demo.board import run_board_demo

    verdicts = {"support": {"verdict": "ok", "causes": []},
                "sales": {"verdict": "degraded", "causes": ["hotline.busy"]},
                "after-hours": {"verdict": "degraded",
                                "causes": ["hotline.no_answer", "diagnosis.transient"]}}
    said: list[str] = []
    assert run_board_demo(said.append, verdicts)
    text = "\n".join(said)
    assert "show as degraded" in text
    assert "indicator: status degraded" in text and "status down" not in text
    assert "indicator: status fault_line" in text  # the pulled cable, by the same rule
    assert "long beeps" not in text
