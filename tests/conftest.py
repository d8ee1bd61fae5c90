"""Fixtures shared by the test suite.  One fixture per concern, each with a docstring."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from probe.sim.broker import LocalBroker


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    """A real mosquitto on 127.0.0.1 (free port, anonymous, no persistence), stopped afterwards.

    ``broker.stop()`` / ``broker.start()`` inside a test simulate an outage (same port)."""
    with LocalBroker() as local:
        yield local
