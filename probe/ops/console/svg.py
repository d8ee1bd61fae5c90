"""Geometry for the inline SVG drawings (the templates draw; this computes where).

No chart library: a few lines of arithmetic give line charts, the call's ladder diagram and the
labelled bands of what the probe heard, and they work offline and print as vectors.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- line charts

CHART_W, CHART_H = 760, 220
PAD_L, PAD_R, PAD_T, PAD_B = 56, 12, 12, 28


@dataclass
class Series:
    label: str
    css: str
    path: str  # SVG path data; gaps (no value) start a new sub-path
    points: list[tuple[float, float, str]]  # x, y, title


@dataclass
class Chart:
    width: int
    height: int
    series: list[Series]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    empty: bool
    plot: tuple[float, float, float, float] = (PAD_L, PAD_T, CHART_W - PAD_R, CHART_H - PAD_B)


def line_chart(series: Sequence[tuple[str, str, Sequence[tuple[dt.datetime, float | None]]]],
               start: dt.datetime, end: dt.datetime, *, unit: str, hourly: bool,
               y_floor: float | None = None, y_ceiling: float | None = None) -> Chart:
    values = [v for _l, _c, pts in series for _t, v in pts if v is not None]
    low = y_floor if y_floor is not None else min([0.0, *values])
    high = y_ceiling if y_ceiling is not None else max([1.0, *values])
    if high <= low:
        high = low + 1
    step = _nice_step((high - low) / 4)
    high = math.ceil(high / step) * step if y_ceiling is None else high
    span_s = max((end - start).total_seconds(), 1.0)

    def x(at: dt.datetime) -> float:
        return PAD_L + (at - start).total_seconds() / span_s * (CHART_W - PAD_L - PAD_R)

    def x_mid(at: dt.datetime) -> float:
        # A bucket's point sits in the middle of the part of it inside the period.
        bucket_end = min(at + dt.timedelta(seconds=2 * _half(hourly)), end)
        bucket_start = max(at, start)
        return x(bucket_start + (bucket_end - bucket_start) / 2)

    def y(value: float) -> float:
        return CHART_H - PAD_B - (value - low) / (high - low) * (CHART_H - PAD_T - PAD_B)

    out = [_series(label, css, points, x_mid, y, unit, hourly) for label, css, points in series]
    y_ticks = [(y(v), _fmt(v) + (f" {unit}" if unit and unit != "%" else unit))
               for v in _frange(low, high, step)]
    return Chart(CHART_W, CHART_H, out, _x_ticks(start, end, hourly, x), y_ticks,
                 empty=not values)


def _half(hourly: bool) -> float:
    return 1800.0 if hourly else 43200.0


def _series(label: str, css: str, points: Sequence[tuple[dt.datetime, float | None]],
            x: Any, y: Any, unit: str, hourly: bool) -> Series:
    parts: list[str] = []
    dots: list[tuple[float, float, str]] = []
    pen_down = False
    for at, value in points:
        if value is None:
            pen_down = False
            continue
        px, py = x(at), y(value)
        parts.append(f"{'L' if pen_down else 'M'}{px:.1f},{py:.1f}")
        pen_down = True
        stamp = at.strftime("%Y-%m-%d %H:00" if hourly else "%Y-%m-%d")
        dots.append((px, py, f"{label} {stamp}: {_fmt(value)}{unit}"))
    return Series(label, css, " ".join(parts), dots)


def _x_ticks(start: dt.datetime, end: dt.datetime, hourly: bool, x: Any
             ) -> list[tuple[float, str]]:
    span = end - start
    every = (dt.timedelta(hours=max(1, math.ceil(span.total_seconds() / 3600 / 8))) if hourly
             else dt.timedelta(days=max(1, math.ceil(span.days / 8))))
    size = 3600 if hourly else 86400
    t = dt.datetime.fromtimestamp(math.ceil(start.timestamp() / size) * size, dt.UTC)
    ticks = []
    while t < end:
        ticks.append((x(t), t.strftime("%H:%M" if hourly else "%m-%d")))
        t += every
    return ticks


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def _frange(low: float, high: float, step: float) -> list[float]:
    count = round((high - low) / step)
    return [low + i * step for i in range(count + 1)]


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.2f}"


# --------------------------------------------------------------------------- ladder

LADDER_W = 640
PROBE_X, HOTLINE_X = 170, 560
LADDER_TOP, MIN_GAP, LADDER_SPAN = 56, 30, 420
#: Which side sends each timeline event (True: the probe).  ``media_start`` is the first RTP
#: (or audio) from the far end; ``end`` is the network's final word when it has a code.
FROM_PROBE = {"dial": True, "dtmf": True, "hangup": True, "challenge": False,
              "progress": False, "early_media": False, "answer": False, "media_start": False,
              "remote_hangup": False, "end": False}
DASHED = {"early_media", "media_start"}


@dataclass
class Arrow:
    y: float
    x1: float
    x2: float
    label: str
    at: str
    event: str
    dashed: bool


@dataclass
class Note:
    y: float
    label: str
    at: str
    event: str


@dataclass
class Ladder:
    width: int
    height: int
    arrows: list[Arrow] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    probe_x: float = PROBE_X
    hotline_x: float = HOTLINE_X


def ladder(timeline: Sequence[dict[str, Any]]) -> Ladder:
    """Arrows at heights proportional to their times, but never closer than :data:`MIN_GAP`
    (an answer and its first RTP 0.3 ms apart must both be readable)."""
    events = sorted((e for e in timeline if isinstance(e, dict)),
                    key=lambda e: float(e.get("at_ms") or 0))
    last = max([float(e.get("at_ms") or 0) for e in events] + [1.0])
    out = Ladder(LADDER_W, 0)
    y: float = LADDER_TOP - MIN_GAP
    for e in events:
        at_ms = float(e.get("at_ms") or 0)
        y = max(y + MIN_GAP, LADDER_TOP + at_ms / last * LADDER_SPAN)
        kind = str(e.get("event"))
        label = " ".join(str(p) for p in (kind, e.get("code"), e.get("reason"))
                         if p is not None)
        at = f"{at_ms:.1f} ms"
        if kind == "end" and e.get("code") is None:
            out.notes.append(Note(y, label, at, kind))  # the probe's own end: nothing sent
            continue
        probe_sends = FROM_PROBE.get(kind, False)
        x1, x2 = (PROBE_X, HOTLINE_X) if probe_sends else (HOTLINE_X, PROBE_X)
        out.arrows.append(Arrow(y, x1, x2, label, at, kind, kind in DASHED))
    out.height = int(y + 40)
    return out


# --------------------------------------------------------------------------- bands

BANDS_W, LANE_H = 900, 26
LANES = ("tones", "speech", "dtmf", "prompts")


@dataclass
class Band:
    lane: int
    x: float
    width: float
    label: str
    title: str
    kind: str


@dataclass
class Bands:
    width: int
    height: int
    duration_s: float
    lanes: list[str]
    bands: list[Band]
    ticks: list[tuple[float, str]]


def bands(analysis: dict[str, Any] | None, duration_s: float) -> Bands:
    """What the probe's analysis found, as bands on the recording's time axis (seconds from the
    start of the received audio, as the analysis counts them)."""
    a = analysis or {}
    span = max(duration_s, 0.001)
    found: list[Band] = []

    def add(lane: str, start: Any, end: Any, label: str, title: str, kind: str) -> None:
        if not isinstance(start, int | float) or not isinstance(end, int | float):
            return
        x = max(0.0, float(start)) / span * BANDS_W
        width = max(2.0, (float(end) - float(start)) / span * BANDS_W)
        found.append(Band(LANES.index(lane), x, min(width, BANDS_W - x), label, title, kind))

    for t in a.get("tones") or []:
        label = t.get("kind", "?") + (f" {t['sit_code']}" if t.get("sit_code") else "")
        freqs = "+".join(f"{f:g}" for f in t.get("frequencies_hz") or [])
        add("tones", t.get("start_s"), t.get("end_s"), label,
            f"{label} {freqs} Hz {t.get('sit_meaning') or ''}".strip(), f"tone-{t.get('kind')}")
    for s in (a.get("speech") or {}).get("segments") or []:
        add("speech", s.get("start_s"), s.get("end_s"), "speech", "speech", "speech")
    for d in a.get("dtmf") or []:
        add("dtmf", d.get("start_s"), d.get("end_s"), str(d.get("digit")),
            f"DTMF {d.get('digit')}", "dtmf")
    for p in (a.get("prompts") or {}).get("matched") or []:
        add("prompts", p.get("start_s"), p.get("end_s"), str(p.get("name")),
            f"{p.get('name')} (score {p.get('score')})", "prompt")
    step = _nice_step(span / 8)
    ticks = [(t / span * BANDS_W, f"{t:g} s") for t in _frange(0, span, step) if t <= span]
    return Bands(BANDS_W, LANE_H * len(LANES) + 22, span, list(LANES), found, ticks)
