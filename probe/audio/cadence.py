"""Cadence matching: does a measured run of tone bursts follow an on/off pattern?

A pattern is the repeating list ``on, off, on, off, ...`` (seconds).  The measured run is the
bursts' durations and the gaps between them.  Every rotation of the pattern is tried (the
recording can start anywhere in a cycle).  Each measured duration must be within
``10 % + 40 ms`` of the pattern's (SpanDSP's super-tone receiver uses +-10 % +-30 ms; 10 ms more
absorbs the frame edge) except:

* the first burst, when it starts with the recording (it may have begun earlier): it may be
  shorter, never longer;
* the last burst: a ringback is cut short by the answer, a busy tone by our hang-up: it may be
  shorter, never longer.

The result is the mean normalised error (0 = exact, 1 = at the tolerance) and the number of
durations actually checked, the evidence behind the match (0 for a lone burst cut short: it fits,
and proves nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

REL_TOL = 0.10
ABS_TOL = 0.04
CONTINUOUS_MIN_S = 2.6  # longer than any cadenced burst (NANP ringback: 2 s + tolerance)


def tolerance(expected: float) -> float:
    return REL_TOL * expected + ABS_TOL


@dataclass(frozen=True)
class CadenceMatch:
    error: float  # mean |measured - expected| / tolerance over checked durations
    checked: int  # durations compared exactly (truncated bursts are not counted)
    phase: int  # index of the pattern's on-element the first burst matched


def match(ons: list[float], offs: list[float], pattern: tuple[float, ...], *,
          first_truncated: bool) -> CadenceMatch | None:
    """Match bursts ``ons`` separated by ``offs`` (len(ons) - 1) against ``pattern``."""
    n = len(ons)
    if n == 0:
        return None
    if not pattern:  # continuous: one burst longer than any cadenced one
        if n == 1 and ons[0] >= CONTINUOUS_MIN_S:
            return CadenceMatch(0.0, 1, 0)
        return None
    p_on, p_off = pattern[0::2], pattern[1::2]
    k = len(p_on)
    best: CadenceMatch | None = None
    for r in range(k):
        errors: list[float] = []
        ok = True
        for i in range(n):
            exp_on = p_on[(r + i) % k]
            tol = tolerance(exp_on)
            truncatable = (i == 0 and first_truncated) or i == n - 1
            if truncatable and ons[i] < exp_on - tol:
                pass  # cut short: says nothing against the pattern
            elif abs(ons[i] - exp_on) <= tol:
                errors.append(abs(ons[i] - exp_on) / tol)
            else:
                ok = False
                break
            if i < n - 1:
                exp_off = p_off[(r + i) % k]
                if abs(offs[i] - exp_off) > tolerance(exp_off):
                    ok = False
                    break
                errors.append(abs(offs[i] - exp_off) / tolerance(exp_off))
        if ok:  # a lone cut burst fits with nothing checked: the run may still grow from it
            m = CadenceMatch(sum(errors) / len(errors) if errors else 0.0, len(errors), r)
            if best is None or _order(m) < _order(best):
                best = m
    return best


def _order(m: CadenceMatch) -> tuple[bool, float, int]:
    return m.checked == 0, m.error, -m.checked


def partial_likelihood(ons: list[float], offs: list[float], pattern: tuple[float, ...], *,
                       first_cut: bool, last_cut: bool) -> float:
    """How likely ``pattern`` is to show this excerpt, when it holds too little to be matched
    (less than one cycle): 0 when it cannot, else a relative likelihood for a recording that
    starts at a random point of the cycle.

    Bursts cut by the recording's edges (``first_cut``, ``last_cut``) are only upper-bounded;
    every other duration must fit as in :func:`match`.  The likelihood, for one rotation that
    fits: a burst seen whole or cut once places the recording's start in the cycle to within
    the tolerance, which happens with density 1 / cycle; one burst cut at both ends (a window
    inside a burst) happens with probability (on - seen) / cycle, and always for a continuous
    tone.  Rotations that fit add up."""
    n = len(ons)
    if n == 0:
        return 0.0
    if not pattern:
        return 1.0 if n == 1 and first_cut and last_cut else 0.0
    p_on, p_off = pattern[0::2], pattern[1::2]
    k, cycle = len(p_on), sum(pattern)
    total = 0.0
    for r in range(k):
        fits = True
        for i in range(n):
            exp_on = p_on[(r + i) % k]
            cut = (i == 0 and first_cut) or (i == n - 1 and last_cut)
            if ons[i] > exp_on + tolerance(exp_on) or (
                    not cut and ons[i] < exp_on - tolerance(exp_on)):
                fits = False
                break
            if i < n - 1 and abs(offs[i] - p_off[(r + i) % k]) > tolerance(p_off[(r + i) % k]):
                fits = False
                break
        if not fits:
            continue
        if n == 1 and first_cut and last_cut:
            total += max(0.0, p_on[r] + tolerance(p_on[r]) - ons[0]) / cycle
        else:
            total += 1.0 / cycle
    return total
