"""Values as words for human output: never Python's ``None``, ``True`` or ``False``."""

from __future__ import annotations

from typing import Any

NOT_MEASURED = "not measured"


def show(value: Any, unit: str = "", *, missing: str = NOT_MEASURED) -> str:
    """``value`` with its unit, ``missing`` for None, yes/no for booleans.

    >>> show(None, "dBm"), show(-71, "dBm"), show(True), show(0.25)
    ('not measured', '-71 dBm', 'yes', '0.25')
    """
    if value is None:
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{value} {unit}" if unit else str(value)


def words(value: Any) -> str:
    """A short cell: ``-`` for None, yes/no for booleans, anything else as text."""
    return show(value, missing="-")
