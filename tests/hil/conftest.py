"""tests/hil/ runs on a real Pi only, when ``PROBE_HIL=1`` is set (docs/field-checklist.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MODEL = Path("/proc/device-tree/model")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil: needs a real Raspberry Pi with the probe board "
                            "(PROBE_HIL=1; docs/field-checklist.md)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PROBE_HIL") == "1":
        return
    skip = pytest.mark.skip(reason="hardware in the loop: set PROBE_HIL=1 on a real Pi with "
                                   "the board, the line and a modem (docs/field-checklist.md)")
    for item in items:
        if "hil" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pi_model() -> str:
    """The Pi's model; asked for PROBE_HIL=1 on anything else, the run fails rather than skip."""
    model = MODEL.read_text(errors="replace").rstrip("\0") if MODEL.exists() else ""
    if "Raspberry Pi" not in model:
        pytest.fail(f"PROBE_HIL=1 but this is not a Raspberry Pi ({model or 'no device tree'})")
    return model


@pytest.fixture(scope="session")
def config_path(pi_model: str) -> Path:
    return Path(os.environ.get("PROBE_HIL_CONFIG", "/etc/hotline-probe/probe.toml"))
