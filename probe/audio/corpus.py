"""Synthesized test corpora and their scoring, shared by the tests and the benchmark.

The tone corpus is every country plan x tone kind x codec x level x noise x frequency error
(:func:`tone_cases` with ``full=True``), or a seeded representative subset: every plan x kind x
codec once, with level, noise, frequency error and start offset drawn per case.  Kinds that a
plan cannot separate from another of its kinds (:func:`probe.audio.plans.confusable`) are
scored against either.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from probe.audio.frames import analyse_frames
from probe.audio.plans import all_specs, confusable
from probe.audio.progress import ToneEvent, classify
from probe.audio.synth import ToneCase, render, tone_case
from probe.audio.tones import find_tone_segments

CODECS = ("pcm", "ulaw", "alaw", "gsm")
LEVELS = (-40.0, -20.0, 0.0)
NOISE = (None, 20.0, 10.0)
FREQ = (0.985, 1.0, 1.015)  # +-1.5 %


def tone_cases(*, full: bool = False, seed: int = 1, countries: Iterable[str] | None = None,
               codecs: Iterable[str] = CODECS) -> list[ToneCase]:
    rng = np.random.default_rng(seed)
    wanted = {c.upper() for c in countries} if countries else None
    specs = [s for s in all_specs() if wanted is None or s.country in wanted]
    cases = []
    for spec in specs:
        grid = (itertools.product(codecs, LEVELS, NOISE, FREQ) if full
                else ((c, float(rng.choice(LEVELS)), NOISE[rng.integers(3)],
                       float(rng.choice(FREQ))) for c in codecs))
        for codec, level, snr, fs in grid:
            offset = float(rng.uniform(0, sum(spec.cadence))) if spec.cadence else 0.0
            cases.append(ToneCase(spec, codec, level, snr, fs, offset))
    return cases


@dataclass(frozen=True)
class Outcome:
    case: ToneCase
    zoned: str  # kind named with the zone ("none" when nothing)
    zoned_ok: bool
    unzoned: str | None  # kind named without a zone (None when not evaluated)
    unzoned_ok: bool | None
    ambiguous: bool | None  # no zone: "unknown" with the right kind among the candidates
    seconds: float


def _primary(events: list[ToneEvent]) -> ToneEvent | None:
    return max(events, key=lambda e: e.end - e.start) if events else None


def _accepted(case: ToneCase) -> set[str]:
    kinds = {case.spec.kind}
    for a, b in confusable(case.spec.country):
        if case.spec in (a, b):
            kinds |= {a.kind, b.kind}
    return kinds


def run_tone_cases(cases: list[ToneCase], *, seed: int = 1, unzoned: bool = True,
                   batch: int = 400) -> list[Outcome]:
    """Render and classify ``cases`` (``batch`` at a time: the full corpus is hours of audio)."""
    rng = np.random.default_rng(seed)
    out: list[Outcome] = []
    for i in range(0, len(cases), batch):
        out += _run_batch(cases[i:i + batch], rng, unzoned)
    return out


def _run_batch(cases: list[ToneCase], rng: np.random.Generator,
               unzoned: bool) -> list[Outcome]:
    clips = render([tone_case(c, rng) for c in cases], [c.codec for c in cases])
    out = []
    for case, x in zip(cases, clips, strict=True):
        segs = find_tone_segments(x, analyse_frames(x))
        ok_kinds = _accepted(case)
        zoned = classify(segs, case.spec.country, duration=len(x) / 8000)
        p = _primary(zoned)
        zoned_ok = p is not None and p.kind in ok_kinds and all(
            e.kind in ok_kinds for e in zoned)
        u_kind = u_ok = amb = None
        if unzoned:
            q = _primary(classify(segs, duration=len(x) / 8000))
            u_kind = q.kind if q else "none"
            u_ok = q is not None and q.kind in ok_kinds
            amb = q is not None and q.kind == "unknown" and bool(ok_kinds & set(q.candidates))
        out.append(Outcome(case, p.kind if p else "none", zoned_ok, u_kind, u_ok, amb,
                           len(x) / 8000))
    return out


def table(outcomes: list[Outcome], by: str) -> list[tuple[str, int, int, int, int, int]]:
    """Rows (group, cases, zoned correct, unzoned correct, unzoned ambiguous, unzoned wrong)."""
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        c = o.case
        key = {"kind": c.spec.kind, "codec": c.codec, "level": f"{c.level_dbfs:g} dBFS",
               "noise": "clean" if c.snr_db is None else f"{c.snr_db:g} dB SNR",
               "freq": f"{(c.freq_scale - 1) * 100:+.1f} %", "country": c.spec.country}[by]
        groups[key].append(o)
    rows = []
    for key in sorted(groups):
        g = groups[key]
        z = sum(o.zoned_ok for o in g)
        u = sum(bool(o.unzoned_ok) for o in g)
        a = sum(bool(o.ambiguous) for o in g)
        rows.append((key, len(g), z, u, a, len(g) - u - a))
    return rows


def format_table(title: str, rows: list[tuple[str, int, int, int, int, int]]) -> list[str]:
    lines = [title, f"  {'':<22}{'cases':>7}{'zone ok':>10}{'no-zone ok':>12}"
                    f"{'ambiguous':>11}{'wrong':>7}"]
    for key, n, z, u, a, w in rows:
        lines.append(f"  {key:<22}{n:>7}{z / n:>10.1%}{u / n:>12.1%}{a / n:>11.1%}{w / n:>7.1%}")
    n = sum(r[1] for r in rows)
    z, u, a = (sum(r[2] for r in rows), sum(r[3] for r in rows), sum(r[4] for r in rows))
    lines.append(f"  {'all':<22}{n:>7}{z / n:>10.1%}{u / n:>12.1%}{a / n:>11.1%}"
                 f"{(n - u - a) / n:>7.1%}")
    return lines
