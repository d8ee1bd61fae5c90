"""Special Information Tones: three rising tones before an announcement, with their code.

ITU-T Q.35 / E.180: 950, 1400, 1800 Hz (+-50 Hz), 330 +-70 ms each, gaps up to 30 ms.
North America (Telcordia GR-1162, T1.209) codes the cause in the first two segments: each is low
or high in frequency (913.8 / 985.2 Hz; 1370.6 / 1428.5 Hz) and short or long (274 / 380 ms); the
third is always 1776.7 Hz long.  The detector accepts what field detectors accept (f1 873-1029,
f2 1309-1493, f3 1620-1857 Hz, each 200-470 ms) and names the code only when both coded segments
sit within 20 Hz of a North American frequency (the ITU 950 / 1400 Hz are 35 / 29 Hz away), else
reports the ITU tone.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from probe.audio.tones import ToneSegment

BANDS = ((873.0, 1029.0), (1309.0, 1493.0), (1620.0, 1857.0))
DURATION = (0.20, 0.47)
MAX_GAP = 0.10
NA_LOW_HIGH = ((913.8, 985.2), (1370.6, 1428.5))
NA_SHORT_LONG_S = 0.327  # midway between 274 and 380 ms
NA_FREQ_TOL = 20.0

# (segment 1, segment 2) as (S|L)(l|h) -> code, meaning
NA_CODES: dict[tuple[str, str], tuple[str, str]] = {
    ("Sl", "Sl"): ("IC", "intercept: number changed or disconnected"),
    ("Lh", "Sl"): ("VC", "vacant code: number not assigned"),
    ("Sl", "Lh"): ("RO'", "reorder, intra-LATA: all circuits busy"),
    ("Sh", "Ll"): ("RO''", "reorder, inter-LATA: all circuits busy"),
    ("Lh", "Lh"): ("NC'", "no circuit, intra-LATA"),
    ("Ll", "Ll"): ("NC''", "no circuit, inter-LATA"),
    ("Ll", "Sh"): ("IO", "ineffective other: call could not be completed"),
    ("Sh", "Sh"): ("FU", "reserved for future use"),
}


@dataclass(frozen=True)
class Sit:
    start: float
    end: float
    freqs: tuple[float, float, float]
    durations: tuple[float, float, float]
    code: str  # "ITU" or a North American code ("IC", "VC", "RO'", ...)
    meaning: str
    confidence: float
    segments: tuple[ToneSegment, ToneSegment, ToneSegment]


def _single(seg: ToneSegment) -> float | None:
    if not seg.components or seg.components[0].share < 0.6:
        return None
    return seg.components[0].freq


def _na_part(freq: float, duration: float, lo_hi: tuple[float, float]) -> str | None:
    lo, hi = lo_hi
    if abs(freq - lo) <= NA_FREQ_TOL:
        tag = "l"
    elif abs(freq - hi) <= NA_FREQ_TOL:
        tag = "h"
    else:
        return None
    return ("S" if duration < NA_SHORT_LONG_S else "L") + tag


def find_sits(segments: list[ToneSegment]) -> list[Sit]:
    """Every SIT among the tone segments (time order)."""
    found: list[Sit] = []
    i = 0
    while i + 2 < len(segments):
        trio = segments[i:i + 3]
        freqs = [_single(s) for s in trio]
        ok = all(f is not None and lo <= f <= hi for f, (lo, hi) in zip(freqs, BANDS, strict=True))
        ok = ok and all(DURATION[0] <= s.duration <= DURATION[1] for s in trio)
        ok = ok and all(b.start - a.end <= MAX_GAP for a, b in itertools.pairwise(trio))
        if not ok:
            i += 1
            continue
        f1, f2, f3 = (float(f) for f in freqs)  # type: ignore[arg-type]
        d = tuple(round(s.duration, 3) for s in trio)
        p1 = _na_part(f1, d[0], NA_LOW_HIGH[0])
        p2 = _na_part(f2, d[1], NA_LOW_HIGH[1])
        if p1 and p2 and (p1, p2) in NA_CODES:
            code, meaning = NA_CODES[(p1, p2)]
        else:
            code, meaning = "ITU", "special information tone: an announcement follows"
        purity = min(s.components[0].share for s in trio)
        found.append(Sit(trio[0].start, trio[2].end, (f1, f2, f3), d, code,  # type: ignore[arg-type]
                         meaning, round(min(1.0, purity), 3), tuple(trio)))  # type: ignore[arg-type]
        i += 3
    return found
