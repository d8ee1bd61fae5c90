"""``probe --version`` stays quick: it loads no probe module beyond the parser's own.

The figures (wall and CPU time before and after) are in tests/benchmarks/bench_footprint.py;
here only what is loaded, which decides them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from probe.cli import main

ROOT = Path(__file__).resolve().parents[1]
# Half of --version's time before they were imported where used: the configuration model, the
# SIP dialer and the diagnosis rules it pulls in, the call progress steps, logging.
NOT_FOR_VERSION = {"probe.config.model", "probe.dial.sip", "probe.diagnosis.rules",
                   "probe.dial.progress", "probe.results.timeline", "logging"}


def test_probe_version_loads_only_the_parser_and_pjsua2() -> None:
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "probe", "--version"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("hotline-probe ") and "(pjproject 2." in run.stdout
    loaded = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()}
    assert {"probe.cli", "pjsua2"} <= loaded  # the import log is read
    assert not loaded & NOT_FOR_VERSION, sorted(loaded & NOT_FOR_VERSION)


def test_version_in_a_process_with_the_sip_module_uses_its_locked_copy(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Where probe.dial.sip is loaded a SIP endpoint may run (pjsua2 allows one per process):
    main() then asks that module, which reads the version under its lock, once."""
    from probe.dial import sip

    assert main(["--version"]) == 0
    assert f"(pjproject {sip.pjproject_version()}, Python " in capsys.readouterr().out
