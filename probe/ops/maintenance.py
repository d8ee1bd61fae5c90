"""Maintenance windows: is a (target, probe) at a moment inside one?  Pure, plus one query.

A window covers a target (``None``: every target) and a probe (``None``: every probe).  A
question about a whole target (``probe_id=None``, e.g. a hotline-wide incident) is covered only
by windows for every probe: one branch office's maintenance does not hide a hotline outage.

``repeat`` is ``none`` (the span once), ``daily`` or ``weekly``: the same span every 24 h / 7 d
after ``starts_at`` **in UTC** (so a window follows UTC, not a local wall clock across a DST
change), the last repetition being the one that starts at or before ``until`` (``None``: for
ever).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from probe.ops.db import Maintenance

REPEATS = ("none", "daily", "weekly")
PERIODS = {"daily": dt.timedelta(days=1), "weekly": dt.timedelta(days=7)}


class Window(Protocol):
    """What :func:`in_maintenance` reads: a :class:`~probe.ops.db.Maintenance` row, or any
    object with these attributes."""

    target: str | None
    probe_id: str | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    repeat: str
    until: dt.datetime | None


def in_maintenance(windows: Iterable[Window], target: str | None, probe_id: str | None,
                   at: dt.datetime) -> bool:
    """True when some window covering ``target`` and ``probe_id`` is in force at ``at``."""
    return any(_covers(w, target, probe_id) and _active(w, at) for w in windows)


def _covers(w: Window, target: str | None, probe_id: str | None) -> bool:
    return (w.target is None or w.target == target) and (
        w.probe_id is None or w.probe_id == probe_id)


def _active(w: Window, at: dt.datetime) -> bool:
    if at < w.starts_at:
        return False
    span = w.ends_at - w.starts_at
    period = PERIODS.get(w.repeat)
    if period is None:
        return at < w.ends_at
    latest = (at - w.starts_at) // period
    # A span longer than the period overlaps the next repetitions: look back far enough.
    for k in range(latest, max(-1, latest - math.ceil(span / period) - 1), -1):
        start = w.starts_at + k * period
        if start + span <= at:
            return False  # earlier repetitions ended earlier still
        if w.until is None or start <= w.until:
            return True
    return False


def last_end(w: Window) -> dt.datetime | None:
    """When the window's last repetition ends (``None``: it repeats for ever)."""
    period = PERIODS.get(w.repeat)
    if period is None:
        return w.ends_at
    if w.until is None:
        return None
    if w.until < w.starts_at:
        return w.ends_at
    return w.starts_at + ((w.until - w.starts_at) // period) * period + (w.ends_at - w.starts_at)


def windows_between(session: Session, start: dt.datetime, end: dt.datetime,
                    target: str | None = None) -> list[Maintenance]:
    """The windows that may be in force somewhere in [start, end) for ``target`` (every target
    when ``None``): a superset, to be asked with :func:`in_maintenance`."""
    stmt = select(Maintenance).where(
        Maintenance.starts_at < end,
        or_(Maintenance.repeat != "none", Maintenance.ends_at > start),
    )
    if target is not None:
        stmt = stmt.where(or_(Maintenance.target.is_(None), Maintenance.target == target))
    return list(session.scalars(stmt))
