"""Hand-built call timelines for the pure tests (measure, result)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from probe.results.timeline import CallRecord


def add_events(record: CallRecord, events: tuple[tuple[Any, ...], ...],
               at: Callable[[float], int]) -> CallRecord:
    """Add ``(ms, kind[, code[, reason[, detail]]])`` events; ``at`` turns ms into a stamp."""
    for ms, kind, *rest in events:
        code = rest[0] if len(rest) > 0 else None
        reason = rest[1] if len(rest) > 1 else None
        detail = rest[2] if len(rest) > 2 else {}
        record.add(kind, at(ms), code, reason, **detail)
    return record
