"""requirements/*.txt: the pinned versions agree with pyproject.toml and with each other.

scripts/lock writes them; the Ansible roles install with them as pip constraints (every probe
of a fleet runs the same versions), ``make demo`` and ``make test`` build their venvs with them.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: the lock file of each set of requirements, and the extras it covers
SETS = {"probe.txt": (), "ops.txt": ("ops",), "dev.txt": ("ops", "dev")}
#: Debian bookworm's CPython on the probe's and the CI's machines
ENVIRONMENTS = [{"python_full_version": "3.11.2", "python_version": "3.11",
                 "platform_machine": machine, "sys_platform": "linux",
                 "platform_system": "Linux", "implementation_name": "cpython"}
                for machine in ("x86_64", "aarch64")]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: str, environment: dict[str, str]) -> dict[str, str]:
    """Package -> the version ``lock`` pins for ``environment``."""
    out = {}
    for line in (LOCKS / lock).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(environment):
            (spec,) = req.specifier
            assert spec.operator == "==", line
            assert canonical(req.name) not in out, f"{lock}: {req.name} pinned twice"
            out[canonical(req.name)] = spec.version
    return out


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    optional = PROJECT["optional-dependencies"]
    return [Requirement(r) for r in
            [*PROJECT["dependencies"], *(r for extra in extras for r in optional[extra])]]


@pytest.mark.parametrize("environment", ENVIRONMENTS, ids=lambda e: e["platform_machine"])
@pytest.mark.parametrize("lock", SETS)
def test_every_requirement_is_pinned_within_its_range(lock: str,
                                                      environment: dict[str, str]) -> None:
    pinned = pins(lock, environment)
    for req in requirements(SETS[lock]):
        if req.marker is not None and not req.marker.evaluate(environment):
            continue
        version = pinned.get(canonical(req.name))
        assert version is not None, f"{lock} does not pin {req.name}: run scripts/lock"
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock} pins {req.name}=={version}, outside {req}: run scripts/lock")


@pytest.mark.parametrize("environment", ENVIRONMENTS, ids=lambda e: e["platform_machine"])
def test_the_sets_agree_where_they_overlap(environment: dict[str, str]) -> None:
    """A probe runs exactly what the ops host and the tests run, so one wheelhouse serves all."""
    probe, ops, dev = (pins(lock, environment) for lock in SETS)
    assert probe.items() <= ops.items() <= dev.items()


@pytest.mark.parametrize("lock", SETS)
def test_a_pi_gets_gpiozero_s_pin_libraries(lock: str) -> None:
    """lgpio (the only pin library for the Pi 5, gpiozero's first choice on all) and spidev
    (the MCP3008 on the kernel's hardware SPI): a probe without them cannot read its board."""
    pc, pi = (pins(lock, e) for e in ENVIRONMENTS)  # x86_64, aarch64
    assert {"lgpio", "spidev"} <= pi.keys()
    assert not {"lgpio", "spidev"} & pc.keys()  # nothing to drive on x86_64
    armv7l = {**ENVIRONMENTS[1], "platform_machine": "armv7l"}  # a 32-bit Raspberry Pi OS
    assert {"lgpio", "spidev"} <= pins(lock, armv7l).keys()


def test_the_locks_name_no_index_or_host() -> None:
    for lock in SETS:
        text = (LOCKS / lock).read_text()
        assert "://" not in text and "--index" not in text and "--extra-index" not in text


def test_the_test_venv_runs_the_pinned_versions() -> None:
    """make test builds its venv with requirements/dev.txt as constraints."""
    from packaging.markers import default_environment

    pinned = pins("dev.txt", default_environment())
    wrong = {}
    for name, version in pinned.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong[name] = (None, version)
            continue
        if Version(installed) != Version(version):
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs pinned: {wrong} (rebuild the venv: make clean setup)"
