"""Call-progress tones: tone segments -> named events (ringback, busy, congestion, SIT...).

Method:

1. :func:`probe.audio.tones.find_tone_segments` gives steady-tone bursts with exact components;
   :func:`probe.audio.sit.find_sits` takes the SIT triples out first.
2. Each burst is scored against every tone of the candidate plans (:func:`tone_score`): each
   main frequency must be present within +-2.5 % (10 Hz at least), AM tones must show sidebands,
   no strong component may be left unexplained, and the score is the share of power explained,
   discounted by the frequency error.
3. For every candidate spec, consecutive matching bursts are grown into a run while the cadence
   still fits (:mod:`probe.audio.cadence`): **cadence, not frequency, separates busy from
   congestion**.  A run needs evidence: two checked durations, or one continuous tone of 2.6 s
   (longer than any cadenced burst), or, with a zone, one whole burst of at least 0.8 s (a call
   answered after the first ring; confidence halved).
4. Runs are claimed best-first (score = tone score x cadence fit x evidence, plus 0.02 per
   checked duration up to ten, so a run that explains more bursts wins); a burst belongs to one
   event.
5. With a zone, the candidates are that country's plan.  Without one, every plan competes; the
   event is named when the countries whose plans fit (80 % of the bursts at 80 % of the
   score) agree on the kind (or three in four of
   them do; the others are listed as ``candidates``), else its kind is ``"unknown"``.

Confidence: tone score x (1 - cadence error / 2) x evidence factor (0.7 with two checked
durations, 0.85 with three, 1 with four or more).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from probe.audio import cadence as cad
from probe.audio.plans import Tone, ToneSpec, all_specs, plan
from probe.audio.sit import Sit, find_sits
from probe.audio.tones import ToneSegment

FREQ_REL_TOL = 0.025
FREQ_MIN_TOL = 10.0
MIN_EXPLAINED = 0.5
UNEXPLAINED_MAX = 0.10
AGREE_SHARE = 0.75
SINGLE_BURST_MIN_S = 0.8


@dataclass(frozen=True)
class ToneEvent:
    kind: str  # one of plans.KINDS, "sit" or "unknown"
    start: float
    end: float
    frequencies: tuple[float, ...]  # measured main components, Hz
    cadence: tuple[float, ...]  # measured on, off, on, off... (s)
    confidence: float
    country: str | None = None  # the plan that fits best
    spec: str | None = None  # e.g. "425 Hz 1/4"
    cycles: int | None = None  # ringback: ring cycles heard
    candidates: dict[str, list[str]] = field(default_factory=dict)  # kind -> countries
    sit_code: str | None = None
    sit_meaning: str | None = None


def freq_tol(f: float) -> float:
    return max(FREQ_MIN_TOL, FREQ_REL_TOL * f)


def tone_score(seg: ToneSegment, tone: Tone) -> float | None:
    """How well the burst's components fit ``tone`` (0..1), or None when they do not."""
    used: set[int] = set()
    closeness: list[float] = []
    for f in tone.main:
        best = None
        for j, c in enumerate(seg.components):
            if j not in used and abs(c.freq - f) <= freq_tol(f) and c.share >= 0.05 and (
                    best is None or abs(c.freq - f) < abs(seg.components[best].freq - f)):
                best = j
        if best is None:
            return None
        used.add(best)
        closeness.append(abs(seg.components[best].freq - f) / freq_tol(f))
    if tone.sidebands:
        mod = tone.modulation_hz or 0.0
        side = 0.0
        for sb in tone.sidebands:
            tol = min(freq_tol(sb), mod / 2)
            for j, c in enumerate(seg.components):
                if j not in used and abs(c.freq - sb) <= tol:
                    used.add(j)
                    side += c.share
        if side < 0.02:
            return None
    explained = sum(seg.components[j].share for j in used)
    leftover = max((c.share for j, c in enumerate(seg.components) if j not in used), default=0.0)
    if explained < MIN_EXPLAINED or leftover > UNEXPLAINED_MAX:
        return None
    return explained * (1.0 - 0.5 * sum(closeness) / len(closeness))


@dataclass
class _Run:
    spec: ToneSpec
    first: int
    last: int  # inclusive segment indexes
    score: float
    match: cad.CadenceMatch


def _evidence(m: cad.CadenceMatch, spec: ToneSpec, longest: float, zoned: bool) -> float:
    if spec.continuous:
        return 1.0
    if m.checked == 1:  # one whole burst: a ring answered at once; only with a zone, >= 0.8 s
        return 0.5 if zoned and longest >= SINGLE_BURST_MIN_S else 0.0
    return {0: 0.0, 2: 0.7, 3: 0.85}.get(m.checked, 1.0)


def _runs_for(spec: ToneSpec, segs: list[ToneSegment], scores: list[float | None],
              max_gap: float, zoned: bool) -> list[_Run]:
    runs: list[_Run] = []
    i = 0
    n = len(segs)
    while i < n:
        if scores[i] is None:
            i += 1
            continue
        j = i
        best: cad.CadenceMatch | None = None
        while True:
            ons = [s.duration for s in segs[i:j + 1]]
            offs = [b.start - a.end for a, b in zip(segs[i:j], segs[i + 1:j + 1], strict=True)]
            m = cad.match(ons, offs, spec.cadence, first_truncated=segs[i].start < 0.05)
            if m is None:
                break
            best, last = m, j
            if (j + 1 < n and scores[j + 1] is not None
                    and segs[j + 1].start - segs[j].end <= max_gap):
                j += 1
            else:
                break
        longest = max((s.duration for s in segs[i:j + 1]), default=0.0)
        evidence = _evidence(best, spec, longest, zoned) if best is not None else 0.0
        if best is not None and evidence > 0:
            mean = sum(s for s in scores[i:last + 1] if s is not None) / (last - i + 1)
            runs.append(_Run(spec, i, last, mean * (1 - best.error / 2) * evidence, best))
            i = last + 1
        else:
            i += 1
    return runs


def _rank(run: _Run) -> tuple[float, int]:
    """Best first; among similar fits, the run that explains more of the tone wins (a busy
    tone's run beats the three-burst pieces of it that a longer pattern also fits)."""
    return run.score + 0.02 * min(run.match.checked, 10), -run.first


def _cycles(spec: ToneSpec, bursts: int) -> int:
    per_cycle = max(1, len(spec.ons))
    return -(-bursts // per_cycle)


def classify(segments: list[ToneSegment], zone: str | None = None) -> list[ToneEvent]:
    """Name the call-progress tones among ``segments`` (SIT included), in time order."""
    sits = find_sits(segments)
    in_sit = {id(s) for sit in sits for s in sit.segments}
    segs = [s for s in segments if id(s) not in in_sit]
    specs = plan(zone) if zone else all_specs()
    tone_cache: dict[str, list[float | None]] = {}
    runs: list[_Run] = []
    for spec in specs:
        scores = tone_cache.get(spec.tone.expr)
        if scores is None:
            scores = [tone_score(s, spec.tone) for s in segs]
            tone_cache[spec.tone.expr] = scores
        if not any(sc is not None for sc in scores):
            continue
        max_gap = (max(spec.offs) + cad.tolerance(max(spec.offs))) if spec.offs else 0.1
        runs.extend(_runs_for(spec, segs, scores, max_gap, zone is not None))

    events: list[ToneEvent] = [_sit_event(s) for s in sits]
    claimed: set[int] = set()
    for run in sorted(runs, key=_rank, reverse=True):
        idx = set(range(run.first, run.last + 1))
        if idx & claimed:
            continue
        claimed |= idx
        size = run.last - run.first + 1
        rivals = [r for r in runs if r.score >= 0.8 * run.score
                  and min(r.last, run.last) - max(r.first, run.first) + 1 >= 0.8 * size]
        events.append(_event(run, segs, rivals, named_by_zone=zone is not None))
    return sorted(events, key=lambda e: e.start)


def _event(run: _Run, segs: list[ToneSegment], rivals: list[_Run],
           named_by_zone: bool) -> ToneEvent:
    bursts = segs[run.first:run.last + 1]
    measured: list[float] = []
    for a, b in zip(bursts, [*bursts[1:], None], strict=True):
        measured.append(round(a.duration, 3))
        if b is not None:
            measured.append(round(b.start - a.end, 3))
    freqs = tuple(round(_measured(bursts, f), 1) for f in run.spec.tone.main)
    kinds: dict[str, list[str]] = defaultdict(list)
    for r in rivals:
        if r.spec.country not in kinds[r.spec.kind]:
            kinds[r.spec.kind].append(r.spec.country)
    kind = run.spec.kind
    candidates: dict[str, list[str]] = {}
    if not named_by_zone and len(kinds) > 1:
        total = sum(len(v) for v in kinds.values())
        top = max(kinds, key=lambda k: len(kinds[k]))
        kind = top if len(kinds[top]) >= AGREE_SHARE * total else "unknown"
        candidates = {k: sorted(v) for k, v in kinds.items() if k != kind}
    return ToneEvent(
        kind=kind, start=bursts[0].start, end=bursts[-1].end, frequencies=freqs,
        cadence=tuple(measured[:12]), confidence=round(run.score, 3),
        country=run.spec.country, spec=run.spec.describe(),
        cycles=_cycles(run.spec, len(bursts)) if kind == "ringback" else None,
        candidates=candidates)


def _measured(bursts: list[ToneSegment], nominal: float) -> float:
    """Mean measured frequency of the strongest component near ``nominal`` over the bursts."""
    near = []
    for b in bursts:
        close = [c for c in b.components if abs(c.freq - nominal) <= freq_tol(nominal)]
        near.append(max(close, key=lambda c: c.share).freq if close
                    else min(b.components, key=lambda c: abs(c.freq - nominal)).freq)
    return sum(near) / len(near)


def _sit_event(s: Sit) -> ToneEvent:
    cadence: list[float] = []
    for a, b in zip(s.segments, [*s.segments[1:], None], strict=True):
        cadence.append(round(a.duration, 3))
        if b is not None:
            cadence.append(round(b.start - a.end, 3))
    return ToneEvent(kind="sit", start=s.start, end=s.end,
                     frequencies=tuple(round(f, 1) for f in s.freqs), cadence=tuple(cadence),
                     confidence=s.confidence, sit_code=s.code, sit_meaning=s.meaning)
