"""Call-progress tones: tone segments -> named events (ringback, busy, congestion, SIT...).

Method:

1. :func:`probe.audio.tones.find_tone_segments` gives steady-tone bursts with exact components;
   :func:`probe.audio.sit.find_sits` takes the SIT triples out first.
2. Each burst is scored against every tone of the candidate plans (:func:`tone_score`): each
   main frequency must be present within +-2.5 % (10 Hz at least), AM tones must show sidebands,
   no strong component may be left unexplained (weaker peaks within 12 Hz of a main one are the
   tone smeared, by packet loss concealment or a codec), and the score is the share of power
   explained, discounted by the frequency error and the smear.
3. For every candidate spec, consecutive matching bursts are grown into a run while the cadence
   still fits (:mod:`probe.audio.cadence`): **cadence, not frequency, separates busy from
   congestion**.  The first and the last burst may be cut short (the recording or the early
   media starts mid-burst; the answer or our hang-up ends one); a burst smeared past scoring
   (:func:`smeared_fit`) may continue a run.  A run needs evidence: two checked durations, or
   one continuous tone of 2.6 s (longer than any cadenced burst), or, with a zone, one whole
   burst of at least 0.8 s away from the recording's edges (a call answered after the first
   ring; confidence halved).
4. Runs are claimed best-first (score = tone score x cadence fit x evidence, plus 0.02 per
   checked duration up to ten, so a run that explains more bursts wins; between equal fits the
   shorter cycle); a burst belongs to one event.
5. With a zone, the candidates are that country's plan.  Without one, every plan competes; the
   event is named when the countries whose plans fit (80 % of the bursts at 80 % of the
   score) agree on the kind (or three in four of
   them do; the others are listed as ``candidates``), else its kind is ``"unknown"``.  With a
   zone, ``candidates`` lists the zone's other kinds that fit as well.
6. **Partial cadence**: bursts left over that hold less than a cycle (too few durations to
   check) are named from what they do hold: every spec that could have produced them
   (bursts cut by the recording's edges only bounded above) gets a likelihood
   (:func:`probe.audio.cadence.partial_likelihood`); the likeliest kind is named, the others
   are its ``candidates``, and the confidence is halved and shared among them.
7. **Nothing heard goes unreported**: steady tones still left (one or two tones, not a vowel's
   harmonics, 0.3 s or more) become ``"unknown"`` events with their measured frequencies and
   cadence, and the nearest specs of all plans as ``candidates``.

Confidence: tone score x (1 - cadence error / 2) x evidence factor (0.7 with two checked
durations, 0.85 with three, 1 with four or more); partial: half the tone score x the kind's
share of the likelihood; unknown: 0.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from dataclasses import dataclass, field, replace

from probe.audio import cadence as cad
from probe.audio.plans import Tone, ToneSpec, all_specs, plan, resolve_zone
from probe.audio.sit import Sit, find_sits
from probe.audio.tones import ToneSegment

FREQ_REL_TOL = 0.025
FREQ_MIN_TOL = 10.0
MIN_EXPLAINED = 0.5
UNEXPLAINED_MAX = 0.10
SPREAD_HZ = 12.0  # PLC smear; JP's 16 Hz AM sidebands stay sidebands
SMEAR_HZ = 30.0
SMEARED_SCORE = 0.3
DROPOUT_S = 0.07
BACKGROUND_DB = 6.0
GAP_FILL_DB = 3.0
WEAK_CHECKED = 3  # a run on this few checked durations lists what it cannot exclude
AGREE_SHARE = 0.75
SINGLE_BURST_MIN_S = 0.8
EDGE_S = 0.06  # a burst this close to the recording's start or end may have been cut by it
PARTIAL_MIN_TONE_S = 0.15  # less tone than this is named by nothing but ``unknown``
PARTIAL_CONFIDENCE = 0.5
UNKNOWN_MIN_S = 0.3
UNKNOWN_MAX_GAP_S = 5.0


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
    # weaker peaks close to a main frequency are the tone smeared (packet loss concealment,
    # a codec's pitch jitter): they count as the tone, at a discount, so that a spec naming
    # them as AM sidebands still scores higher
    mains = [seg.components[j] for j in used]
    spread = 0.0
    for j, c in enumerate(seg.components):
        if j not in used and any(abs(c.freq - m.freq) <= SPREAD_HZ and c.share < m.share
                                 for m in mains):
            used.add(j)
            spread += c.share
    explained = sum(seg.components[j].share for j in used)
    leftover = max((c.share for j, c in enumerate(seg.components) if j not in used), default=0.0)
    if explained < MIN_EXPLAINED or leftover > UNEXPLAINED_MAX:
        return None
    return explained * (1.0 - 0.5 * sum(closeness) / len(closeness)) * (1.0 - 0.5 * spread)


def smeared_fit(seg: ToneSegment, tone: Tone) -> bool:
    """Is the burst ``tone`` smeared past :func:`tone_score` (packet loss concealment repeats
    20 ms packets: sidebands at +-25 Hz)?  Every main frequency present, the strongest component
    one of them, nothing strong further than :data:`SMEAR_HZ` from them.  Such a burst may
    continue a run whose cadence it fits; it adds nothing to the run's score."""
    if not seg.components or all(abs(seg.components[0].freq - f) > freq_tol(f)
                                 for f in tone.main):
        return False
    if not all(any(abs(c.freq - f) <= freq_tol(f) and c.share >= 0.1 for c in seg.components)
               for f in tone.main):
        return False
    return all(c.share <= UNEXPLAINED_MAX or any(abs(c.freq - f) <= SMEAR_HZ for f in tone.main)
               for c in seg.components)


@dataclass
class _Run:
    spec: ToneSpec
    first: int
    last: int  # inclusive segment indexes
    score: float
    match: cad.CadenceMatch


def _evidence(m: cad.CadenceMatch, spec: ToneSpec, longest: float, zoned: bool,
              cut: bool) -> float:
    if spec.continuous:
        return 1.0
    if m.checked == 1:  # one whole burst: a ring answered at once; only with a zone, >= 0.8 s,
        # and not at an edge of the recording (cut, it is a partial cadence: see below)
        return 0.5 if zoned and longest >= SINGLE_BURST_MIN_S and not cut else 0.0
    return {0: 0.0, 2: 0.7, 3: 0.85}.get(m.checked, 1.0)


def _runs_for(spec: ToneSpec, segs: list[ToneSegment], scores: list[float | None],
              smeared: list[bool], max_gap: float, zoned: bool, end: float) -> list[_Run]:
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
            # the first burst may be cut short wherever it is: the recording, or the early
            # media path, can start in the middle of one
            m = cad.match(ons, offs, spec.cadence, first_truncated=True)
            if m is None:
                break
            best, last = m, j
            if (j + 1 < n and (scores[j + 1] is not None or smeared[j + 1])
                    and segs[j + 1].start - segs[j].end <= max_gap):
                j += 1
            else:
                break
        if best is None:
            i += 1
            continue
        longest = max(s.duration for s in segs[i:last + 1])
        cut = segs[i].start <= EDGE_S or segs[last].end >= end - EDGE_S
        evidence = _evidence(best, spec, longest, zoned, cut)
        if evidence > 0:
            mean = sum(s for s in scores[i:last + 1] if s is not None) / (last - i + 1)
            runs.append(_Run(spec, i, last, mean * (1 - best.error / 2) * evidence, best))
            i = last + 1
        else:
            i += 1
    return runs


def _rank(run: _Run) -> tuple[float, float, int]:
    """Best first; among similar fits, the run that explains more of the tone wins (a busy
    tone's run beats the three-burst pieces of it that a longer pattern also fits); between
    equal fits, the shorter cycle (the likelier to show a given stretch of bursts)."""
    cycle = sum(run.spec.cadence)
    return (run.score + 0.02 * min(run.match.checked, 10), 1 / cycle if cycle else 0.0,
            -run.first)


def _cycles(spec: ToneSpec, bursts: int) -> int:
    per_cycle = max(1, len(spec.ons))
    return -(-bursts // per_cycle)


def classify(segments: list[ToneSegment], zone: str | None = None,
             duration: float | None = None) -> list[ToneEvent]:
    """Name the call-progress tones among ``segments`` (SIT included), in time order.

    ``duration`` is the recording's length (default: the end of the last segment); a burst
    within :data:`EDGE_S` of either end may have been cut by it."""
    segments = merge_dropouts(segments)
    sits = find_sits(segments)
    in_sit = {id(s) for sit in sits for s in sit.segments}
    segs = [s for s in segments if id(s) not in in_sit]
    code = resolve_zone(zone) if zone else None
    specs = plan(code) if code else all_specs()
    scores = _scores(specs, segs)
    specs_by_tone = {spec.tone.expr: spec.tone for spec in specs}
    smeared = {expr: [v is None and smeared_fit(s, specs_by_tone[expr]) for s, v in
                      zip(segs, sc, strict=True)]
               for expr, sc in scores.items()}
    end = duration if duration is not None else max((s.end for s in segments), default=0.0)
    runs: list[_Run] = []
    for spec in specs:
        sc = scores[spec.tone.expr]
        if not any(v is not None for v in sc):
            continue
        max_gap = (max(spec.offs) + cad.tolerance(max(spec.offs))) if spec.offs else 0.1
        runs.extend(_runs_for(spec, segs, sc, smeared[spec.tone.expr], max_gap,
                              code is not None, end))

    events: list[ToneEvent] = [_sit_event(s) for s in sits]
    claimed: set[int] = set()
    for run in sorted(runs, key=_rank, reverse=True):
        idx = set(range(run.first, run.last + 1))
        if idx & claimed:
            continue
        claimed |= idx
        run = _with_edge_fragments(run, segs, scores[run.spec.tone.expr],
                                   smeared[run.spec.tone.expr], claimed)
        size = run.last - run.first + 1
        rivals = [r for r in runs if r.score >= 0.8 * run.score
                  and min(r.last, run.last) - max(r.first, run.first) + 1 >= 0.8 * size]
        ev = _event(run, segs, rivals, named_by_zone=code is not None)
        if code is not None and run.match.checked <= WEAK_CHECKED:
            ev = _with_unexcluded(ev, run, specs, segs, scores)
        events.append(ev)
    events += _partial_events(specs, segs, scores, smeared, claimed, end, code is not None)
    events += _unknown_events(segs, claimed)
    return sorted(events, key=lambda e: e.start)


def _with_edge_fragments(run: _Run, segs: list[ToneSegment], sc: list[float | None],
                         smeared: list[bool], claimed: set[int]) -> _Run:
    """The run with the unclaimed pieces of its tone just before and after it (a burst cut by
    a drop-out or the channel, no longer than the spec's longest burst, its gap fitting),
    which would otherwise be named apart as some shorter-cadenced kind; ``claimed`` grows."""
    spec = run.spec
    if spec.continuous:
        return run
    max_gap = max(spec.offs) + cad.tolerance(max(spec.offs))
    longest = max(spec.ons) + cad.tolerance(max(spec.ons))

    def fits(k: int, gap: float) -> bool:
        return (k not in claimed and 0 <= gap <= max_gap and segs[k].duration <= longest
                and (sc[k] is not None or smeared[k]))

    first, last = run.first, run.last
    while first > 0 and fits(first - 1, segs[first].start - segs[first - 1].end):
        first -= 1
        claimed.add(first)
    while last + 1 < len(segs) and fits(last + 1, segs[last + 1].start - segs[last].end):
        last += 1
        claimed.add(last)
    return replace(run, first=first, last=last)


def _with_unexcluded(ev: ToneEvent, run: _Run, specs: tuple[ToneSpec, ...],
                     segs: list[ToneSegment], scores: dict[str, list[float | None]]) -> ToneEvent:
    """A run on little evidence: add to its candidates the zone's kinds whose tone and cadence
    could have made the same bursts (first and last cut short), which it cannot exclude."""
    bursts = segs[run.first:run.last + 1]
    ons = [b.duration for b in bursts]
    offs = [y.start - x.end for x, y in itertools.pairwise(bursts)]
    candidates = {k: list(v) for k, v in ev.candidates.items()}
    for spec in specs:
        if spec.kind == ev.kind or spec.country in candidates.get(spec.kind, []):
            continue
        if all(v is not None for v in scores[spec.tone.expr][run.first:run.last + 1]) and (
                cad.partial_likelihood(ons, offs, spec.cadence, first_cut=True,
                                       last_cut=True) > 0):
            candidates.setdefault(spec.kind, []).append(spec.country)
    return replace(ev, candidates=candidates)


def merge_dropouts(segments: list[ToneSegment]) -> list[ToneSegment]:
    """Bursts of one tone less than :data:`DROPOUT_S` apart made one: a gap that short is a
    drop-out (three lost packets concealed into silence), never a cadence's (100 ms at least
    in every plan); a SIT's steps change frequency and stay apart."""
    out: list[ToneSegment] = []
    for s in _without_background(segments):
        p = out[-1] if out else None
        if p is not None and s.start - p.end <= DROPOUT_S and _one_tone(p, s):
            longer = p if p.duration >= s.duration else s
            out[-1] = ToneSegment(p.start, s.end, longer.components, longer.level_db)
        else:
            out.append(s)
    return out


def _without_background(segments: list[ToneSegment]) -> list[ToneSegment]:
    """Segments that are no tone and :data:`BACKGROUND_DB` below a tone next to them, or that sit
    between two bursts of one tone, :data:`GAP_FILL_DB` quieter and not that tone, left out: a
    codec's comfort noise in a cadence's gaps (AMR with DTX shapes it like the tone), which
    would otherwise hide the gap."""
    keep = []
    like = [_tone_like(s) for s in segments]
    for i, s in enumerate(segments):
        near = [segments[k] for k in (i - 1, i + 1) if 0 <= k < len(segments) and like[k]]
        if not like[i] and any(s.level_db < n.level_db - BACKGROUND_DB for n in near):
            continue
        # between two bursts of one tone, quieter and not that tone: what fills the gap
        if (0 < i < len(segments) - 1 and _one_tone(segments[i - 1], segments[i + 1])
                and not _one_tone(s, segments[i - 1])
                and s.level_db < min(segments[i - 1].level_db, segments[i + 1].level_db)
                - GAP_FILL_DB):
            continue
        keep.append(s)
    return keep


def _one_tone(a: ToneSegment, b: ToneSegment) -> bool:
    def strong(seg: ToneSegment) -> list[float]:
        return sorted(c.freq for c in seg.components if c.share >= 0.2)

    fa, fb = strong(a), strong(b)
    return bool(fa) and len(fa) == len(fb) and all(
        abs(x - y) <= freq_tol(x) for x, y in zip(fa, fb, strict=True))


def _scores(specs: tuple[ToneSpec, ...], segs: list[ToneSegment]) -> dict[str, list[float | None]]:
    """Tone score of every segment against every distinct tone of ``specs``."""
    out: dict[str, list[float | None]] = {}
    for spec in specs:
        if spec.tone.expr not in out:
            out[spec.tone.expr] = [tone_score(s, spec.tone) for s in segs]
    return out


@dataclass
class _Partial:
    spec: ToneSpec
    first: int
    last: int
    likelihood: float
    score: float  # mean tone score


def _partial_events(specs: tuple[ToneSpec, ...], segs: list[ToneSegment],
                    scores: dict[str, list[float | None]], smeared: dict[str, list[bool]],
                    claimed: set[int], end: float, zoned: bool) -> list[ToneEvent]:
    """Bursts no run explains, too few to match a cadence (less than a cycle): named from what
    they hold (:func:`probe.audio.cadence.partial_likelihood`), the most likely kind first, with
    a lower confidence and every other kind they cannot exclude as ``candidates``."""
    found: list[_Partial] = []
    for spec in specs:
        sc = scores[spec.tone.expr]
        max_gap = (max(spec.offs) + cad.tolerance(max(spec.offs))) if spec.offs else 0.1
        # a smeared burst (see smeared_fit) counts, with a low score
        fit = [v if v is not None else SMEARED_SCORE if sm else None
               for v, sm in zip(sc, smeared[spec.tone.expr], strict=True)]
        i = 0
        while i < len(segs):
            if i in claimed or fit[i] is None:
                i += 1
                continue
            j = i
            while (j + 1 < len(segs) and j + 1 not in claimed and fit[j + 1] is not None
                   and segs[j + 1].start - segs[j].end <= max_gap):
                j += 1
            found += _partials_in(spec, segs, fit, i, j, end)
            i = j + 1
    events: list[ToneEvent] = []
    used: set[int] = set()
    for p in sorted(found, key=lambda p: (p.last - p.first, p.likelihood * p.score),
                    reverse=True):
        idx = set(range(p.first, p.last + 1))
        if idx & used:
            continue
        used |= idx
        claimed |= idx
        events.append(_partial_event([q for q in found if (q.first, q.last) == (p.first, p.last)],
                                     segs, zoned))
    return events


def _partials_in(spec: ToneSpec, segs: list[ToneSegment], sc: list[float | None], i: int,
                 j: int, end: float) -> list[_Partial]:
    """``spec`` as what produced the bursts i..j, when it could have (else nothing)."""
    bursts = segs[i:j + 1]
    if sum(s.duration for s in bursts) < PARTIAL_MIN_TONE_S:
        return []
    ons = [s.duration for s in bursts]
    offs = [y.start - x.end for x, y in itertools.pairwise(bursts)]
    like = cad.partial_likelihood(ons, offs, spec.cadence, first_cut=bursts[0].start <= EDGE_S,
                                  last_cut=bursts[-1].end >= end - EDGE_S)
    if like <= 0:
        return []
    return [_Partial(spec, i, j, like, sum(v for v in sc[i:j + 1] if v is not None) / len(ons))]


def _partial_event(same: list[_Partial], segs: list[ToneSegment], zoned: bool) -> ToneEvent:
    """One event for the specs ``same`` that could all have produced the same bursts: the kind
    with most of the likelihood is named (without a zone only when it holds
    :data:`AGREE_SHARE` of it, else ``unknown``); the others are its ``candidates``."""
    def weight(q: _Partial) -> float:
        return q.likelihood * q.score

    by_kind: dict[str, float] = defaultdict(float)
    countries: dict[str, list[str]] = defaultdict(list)
    for q in sorted(same, key=weight, reverse=True):
        by_kind[q.spec.kind] += weight(q)
        if q.spec.country not in countries[q.spec.kind]:
            countries[q.spec.kind].append(q.spec.country)
    total = sum(by_kind.values())
    top = max(by_kind, key=lambda k: by_kind[k])
    best = max((q for q in same if q.spec.kind == top), key=weight)
    kind = top if zoned or by_kind[top] >= AGREE_SHARE * total else "unknown"
    bursts = segs[best.first:best.last + 1]
    return ToneEvent(
        kind=kind, start=bursts[0].start, end=bursts[-1].end,
        frequencies=tuple(round(_measured(bursts, f), 1) for f in best.spec.tone.main),
        cadence=_cadence(bursts),
        # less than a cycle heard: halved, and shared with the kinds it cannot exclude
        confidence=round(PARTIAL_CONFIDENCE * best.score * by_kind[top] / total, 3),
        country=best.spec.country, spec=best.spec.describe(),
        cycles=1 if kind == "ringback" else None,
        candidates={k: v for k, v in countries.items() if k != kind})


def _unknown_events(segs: list[ToneSegment], claimed: set[int]) -> list[ToneEvent]:
    """Tones that fit no plan: reported as ``unknown`` with what was measured and the nearest
    specs of all plans as ``candidates`` (never dropped).  Bursts of one tone (main frequencies
    within tolerance, nothing claimed between) no more than :data:`UNKNOWN_MAX_GAP_S` apart make
    one event; less than :data:`UNKNOWN_MIN_S` of tone in all, or a burst that is not
    :func:`_tone_like`, is left out (a vowel is not a tone)."""
    events = []
    groups: list[list[ToneSegment]] = []
    previous = -2
    for i in (i for i in range(len(segs)) if i not in claimed):
        s = segs[i]
        g = groups[-1] if groups else None
        follows = i == previous + 1  # nothing claimed between
        previous = i
        if (g is not None and follows and s.start - g[-1].end <= UNKNOWN_MAX_GAP_S
                and abs(s.components[0].freq - g[-1].components[0].freq)
                <= freq_tol(s.components[0].freq)):
            g.append(s)
        else:
            groups.append([s])
    for g in groups:
        if sum(s.duration for s in g) < UNKNOWN_MIN_S or not all(map(_tone_like, g)):
            continue
        main = tuple(c.freq for c in g[0].components if c.share >= 0.2) or (
            g[0].components[0].freq,)
        freqs = tuple(sorted(round(_measured(g, f), 1) for f in main))
        events.append(ToneEvent(kind="unknown", start=g[0].start, end=g[-1].end,
                                frequencies=freqs, cadence=_cadence(g), confidence=0.0,
                                candidates=_nearest(freqs, g)))
    return events


def _tone_like(seg: ToneSegment) -> bool:
    """One or two tones (each with any AM sidebands within 60 Hz) holding 80 % of the power,
    not an octave or a twelfth apart: a vowel's harmonics fail this, a telephone tone passes."""
    groups: list[list[float]] = []  # [frequency, main share, share] of each tone
    for c in seg.components:  # strongest first: a sideband is well below its carrier
        near = next((g for g in groups if abs(c.freq - g[0]) <= 60.0 and c.share <= 0.6 * g[1]),
                    None)
        if near is not None:
            near[2] += c.share
        else:
            groups.append([c.freq, c.share, c.share])
    strong = [g for g in groups if g[2] >= 0.1]
    if not 1 <= len(strong) <= 2 or sum(g[2] for g in strong) < 0.8:
        return False
    if len(strong) == 2:
        ratio = max(strong[0][0], strong[1][0]) / min(strong[0][0], strong[1][0])
        return all(abs(ratio - n) > 0.04 * n for n in (2, 3))
    return True


@functools.cache
def _all_tones() -> dict[str, Tone]:
    return {spec.tone.expr: spec.tone for spec in all_specs()}


def _nearest(freqs: tuple[float, ...], bursts: list[ToneSegment],
             count: int = 3) -> dict[str, list[str]]:
    """The ``count`` specs of all plans nearest to the measured tone (relative frequency error,
    then the on-time), as kind -> countries."""
    on = sorted(s.duration for s in bursts)[len(bursts) // 2]
    heard = sorted(freqs)

    def tone_error(tone: Tone) -> float:
        main = sorted(tone.main)
        err = sum(min(abs(h - m) / m for h in heard) for m in main) / len(main)
        return round(err + 0.05 * abs(len(main) - len(freqs)), 2)

    def timing(spec: ToneSpec) -> float:
        return min((abs(on - o) / o for o in spec.ons), default=0.0 if on > 2.6 else 1.0)

    # the frequency error once per distinct tone (a few dozen), the timing only for the specs
    # of the nearest tones
    errors = {expr: tone_error(tone) for expr, tone in _all_tones().items()}
    cut = sorted(set(errors.values()))[:count]
    near = [spec for spec in all_specs() if errors[spec.tone.expr] <= cut[-1]]
    out: dict[str, list[str]] = defaultdict(list)
    for spec in sorted(near, key=lambda sp: (errors[sp.tone.expr], timing(sp)))[:count]:
        if spec.country not in out[spec.kind]:
            out[spec.kind].append(spec.country)
    return dict(out)


def _cadence(bursts: list[ToneSegment]) -> tuple[float, ...]:
    measured: list[float] = []
    for a, b in zip(bursts, [*bursts[1:], None], strict=True):
        measured.append(round(a.duration, 3))
        if b is not None:
            measured.append(round(b.start - a.end, 3))
    return tuple(measured[:12])


def _event(run: _Run, segs: list[ToneSegment], rivals: list[_Run],
           named_by_zone: bool) -> ToneEvent:
    bursts = segs[run.first:run.last + 1]
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
    elif named_by_zone:  # kinds of the zone's plan that fit these bursts as well
        candidates = {k: v for k, v in kinds.items() if k != kind}
    return ToneEvent(
        kind=kind, start=bursts[0].start, end=bursts[-1].end, frequencies=freqs,
        cadence=_cadence(bursts), confidence=round(run.score, 3),
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
