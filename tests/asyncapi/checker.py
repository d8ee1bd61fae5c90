"""The official AsyncAPI parser (@asyncapi/parser, from the npm registry) run by Node.js.

``diagnostics(*paths)`` parses the documents at ``paths`` with ``validate.mjs`` (in one run:
starting node and the parser costs seconds) and returns the parser's diagnostics for each
(``severity``, ``code``, ``message``, ``path``, ``line``).  The parser's
node modules are installed on first use with ``npm ci`` from the committed lock file (exact
versions, integrity hashes, no registry addresses: see ``.npmrc``) into ``node_modules`` here,
and again whenever the lock file changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODULES = HERE / "node_modules"
#: The lock file's hash as of the last successful install: a changed lock installs again.
STAMP = MODULES / ".hotline-probe-lock.sha256"
INSTALL_TIMEOUT_S = 600
PARSE_TIMEOUT_S = 120


class CheckerUnavailable(RuntimeError):
    """Node.js or npm is missing, or the parser could not be installed or run."""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        # make test installs them (Makefile APT_PACKAGES): a missing one is a broken machine.
        raise CheckerUnavailable(f"{name} not found on PATH (apt-get install nodejs npm)")
    return found


def ensure_installed() -> None:
    """``npm ci`` unless the node modules match the lock file; safe against parallel runs."""
    want = hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == want:
        return
    npm = _tool("npm")
    with open(HERE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test process waits for the first install
        if STAMP.is_file() and STAMP.read_text().strip() == want:
            return
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise CheckerUnavailable(f"npm ci failed ({done.returncode}):\n{done.stderr[-3000:]}")
        STAMP.write_text(want + "\n")


def diagnostics(*paths: Path) -> list[list[dict[str, Any]]]:
    """Every diagnostic the parser gives for each document in ``paths``, in their order."""
    ensure_installed()
    done = subprocess.run(
        [_tool("node"), str(HERE / "validate.mjs"), *map(str, paths)],
        cwd=HERE, capture_output=True, text=True, timeout=PARSE_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise CheckerUnavailable(f"validate.mjs failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout)
    assert len(found) == len(paths), done.stdout[:2000]
    return found


def errors(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in found if d["severity"] == "error"]
