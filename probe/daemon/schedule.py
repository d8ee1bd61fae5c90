"""When each target is due, over which channel.  Plain functions and a small data class.

Every (target, channel) pair is a :class:`Slot` on its target's grid (``interval_s``).  The
channels of one target share the same due time, so the SIP, GSM and analog calls of one cycle run
side by side and their paths can be compared.  Each run is moved later by a random jitter (at most
10 % of the interval, capped at ``max_jitter_s``) so that a fleet of probes does not call the
hotline in lock step; the grid itself does not drift.  A slot missed while its channel was busy is
skipped, never piled up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from probe.config.model import Target

MAX_JITTER_S = 60.0


@dataclass
class Slot:
    target: Target
    channel: str
    grid: float  # monotonic seconds: the slot's place on its target's grid
    due: float = field(default=-1.0)  # grid + this run's jitter

    def __post_init__(self) -> None:
        if self.due < 0:
            self.due = self.grid


def jitter_for(target: Target, rng: random.Random, max_jitter_s: float = MAX_JITTER_S) -> float:
    return rng.uniform(0.0, min(0.1 * target.interval_s, max_jitter_s))


def plan(targets: tuple[Target, ...], now: float, rng: random.Random | None = None,
         max_jitter_s: float = MAX_JITTER_S) -> list[Slot]:
    """Every (target, channel) pair, first due now (plus one jitter per target when ``rng``)."""
    slots = []
    for target in targets:
        jitter = jitter_for(target, rng, max_jitter_s) if rng else 0.0
        slots += [Slot(target, channel, now, now + jitter) for channel in target.channels]
    return slots


def replan(slots: list[Slot], targets: tuple[Target, ...], now: float,
           rng: random.Random | None = None, max_jitter_s: float = MAX_JITTER_S) -> list[Slot]:
    """The slots after a reload: a (target, channel) whose target is unchanged keeps its place
    on the grid (a reload is not a reason to call every hotline again at once); a new or
    changed target is due now, as at start."""
    kept = {(s.target.name, s.channel): s for s in slots}
    fresh = {(s.target.name, s.channel): s for s in plan(targets, now, rng, max_jitter_s)}
    return [old if (old := kept.get(key)) is not None and old.target == slot.target else slot
            for key, slot in fresh.items()]


def reschedule(slot: Slot, now: float, rng: random.Random | None = None,
               max_jitter_s: float = MAX_JITTER_S) -> None:
    """Move the slot to its next grid point after ``now``; missed grid points are skipped."""
    interval = slot.target.interval_s
    slot.grid += interval
    if slot.grid <= now:
        slot.grid += (int((now - slot.grid) // interval) + 1) * interval
    slot.due = slot.grid + (jitter_for(slot.target, rng, max_jitter_s) if rng else 0.0)


def due_slots(slots: list[Slot], now: float) -> list[Slot]:
    """Slots due at ``now``, oldest first (ties keep configuration order)."""
    return sorted((s for s in slots if s.due <= now), key=lambda s: s.due)
