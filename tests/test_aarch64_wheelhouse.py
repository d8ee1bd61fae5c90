"""scripts/aarch64-wheelhouse: every pinned runtime dependency of a probe resolves for a Pi
(aarch64, Debian bookworm's CPython 3.11) — a wheel that runs there, or for the few with none,
the source archive the Ansible pjsua2-wheel playbook builds on an aarch64 machine.

It asks the package index, so it needs the network: without it the test skips (the index
cannot be reached: an environmental skip, not a pass).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType

import pytest
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "aarch64-wheelhouse"
# No aarch64 wheel on the index: built from source on the Pi (ansible/README.md)
SOURCE_ONLY = {"libsvm-official", "spidev"}


def script() -> ModuleType:
    """The script as a module (its name has no .py)."""
    loader = SourceFileLoader("aarch64_wheelhouse", str(SCRIPT))
    module = module_from_spec(spec_from_loader(loader.name, loader))  # type: ignore[arg-type]
    sys.modules[loader.name] = module  # its dataclass looks its module up there
    loader.exec_module(module)
    return module


def test_the_pi_s_markers_are_the_pi_s_not_this_machine_s() -> None:
    names = {canonicalize_name(r.name) for r in script().pinned_for_the_pi()}
    assert {"lgpio", "spidev", "numpy", "scipy"} <= names  # aarch64-only pins are in
    assert not names & {"pjsua2-python", "colorama"}  # x86_64-only, Windows-only are not
    versions = {str(canonicalize_name(r.name)): str(r.specifier)
                for r in script().pinned_for_the_pi()}
    assert versions["numpy"].startswith("==2.4.")  # python_full_version < '3.12': bookworm's


@pytest.mark.slow
def test_every_pinned_runtime_dependency_resolves_for_aarch64(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--dest", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    report = {str(canonicalize_name(f["name"])): f for f in json.loads(run.stdout)}
    if report["attrs"]["kind"] == "missing":  # a pure-Python wheel every index has
        pytest.skip(f"the package index cannot be reached: {report['attrs']['reason']}")
    assert run.returncode == 0, run.stderr
    assert set(report) == {canonicalize_name(r.name) for r in script().pinned_for_the_pi()}
    assert {n for n, f in report.items() if f["kind"] == "source"} == SOURCE_ONLY
    pi = script()
    runs_on_pi = {*cpython_tags((3, 11), abis=["cp311", "abi3", "none"], platforms=pi.PLATFORMS),
                  *compatible_tags((3, 11), "cp311", platforms=pi.PLATFORMS)}
    for name, fetched in report.items():
        [file] = fetched["files"]
        assert (tmp_path / file).is_file()
        if fetched["kind"] == "wheel":
            wheel_name, version, _, tags = parse_wheel_filename(file)
            assert (wheel_name, str(version)) == (name, fetched["version"])
            assert tags & runs_on_pi, f"{file} does not run on bookworm aarch64"
