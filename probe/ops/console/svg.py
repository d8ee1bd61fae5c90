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


# --------------------------------------------------------------------------- history charts

HISTORY_BUCKETS = 360  # about two pixels each: more points than that only add bytes
#: Reports further apart than this are a gap (the probe reports every 60 s): the line breaks,
#: a state band ends — the chart does not draw across a time nobody measured.
HISTORY_GAP_S = 300.0


@dataclass
class StateBand:
    x: float
    width: float
    state: str
    title: str


@dataclass
class RunLabel:
    x: float
    label: str
    title: str


@dataclass
class HistoryChart:
    """A time chart of a probe's health samples: one line (bucketed), optionally state bands
    behind it (the line state) and labels where a text changes (the operator)."""

    width: int
    height: int
    series: list[Series]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    bands: list[StateBand]
    labels: list[RunLabel]
    empty: bool
    plot: tuple[float, float, float, float] = (PAD_L, PAD_T, CHART_W - PAD_R, CHART_H - PAD_B)


Sample = tuple[dt.datetime, float | None]


def history_chart(points: Sequence[Sample], start: dt.datetime, end: dt.datetime, *,
                  label: str, css: str, unit: str, reduce: str = "mean",
                  states: Sequence[tuple[dt.datetime, str | None]] = (),
                  texts: Sequence[tuple[dt.datetime, str | None]] = (),
                  include: tuple[float, float] = (0.0, 1.0)) -> HistoryChart:
    """``points`` (oldest first) over [start, end]: at most :data:`HISTORY_BUCKETS` points,
    each the ``mean`` or the ``max`` (a depth: its peak matters) of its bucket's values.  The
    y axis spans the values and at least ``include`` (a signal has no zero to start from)."""
    span_s = max((end - start).total_seconds(), 1.0)
    x0, y0, x1, y1 = PAD_L, PAD_T, CHART_W - PAD_R, CHART_H - PAD_B

    def x(at: dt.datetime) -> float:
        offset = min(max((at - start).total_seconds(), 0.0), span_s)
        return x0 + offset / span_s * (x1 - x0)

    reduced = _buckets(points, start, span_s, reduce)
    values = [v for _t, v in reduced]
    low, high = min([include[0], *values]), max([include[1], *values])
    if high <= low:
        high = low + 1
    step = _nice_step((high - low) / 4)
    low, high = math.floor(low / step) * step, math.ceil(high / step) * step

    def y(value: float) -> float:
        return y1 - (value - low) / (high - low) * (y1 - y0)

    parts: list[str] = []
    dots: list[tuple[float, float, str]] = []
    previous: dt.datetime | None = None
    gap = max(HISTORY_GAP_S, 2.5 * span_s / HISTORY_BUCKETS)
    for at, value in reduced:
        pen_down = previous is not None and (at - previous).total_seconds() <= gap
        px, py = x(at), y(value)
        parts.append(f"{'L' if pen_down else 'M'}{px:.1f},{py:.1f}")
        dots.append((px, py, f"{label} {at:%Y-%m-%d %H:%M}: {_fmt(value)} {unit}".rstrip()))
        previous = at
    # A lone point between gaps is invisible as a path: a dot shows it, and the latest value
    # gets one to hover (a dot per bucket would be hundreds of elements).
    shown = sorted({*_lone(parts), len(parts) - 1} - {-1})
    series = Series(label, css, " ".join(parts), [dots[i] for i in shown])
    y_ticks = [(y(v), f"{_fmt(v)} {unit}".rstrip()) for v in _frange(low, high, step)]
    hourly = span_s <= 3 * 86400
    return HistoryChart(CHART_W, CHART_H, [series], _x_ticks(start, end, hourly, x), y_ticks,
                        _bands(states, gap, x), _run_labels(texts, x), empty=not values)


def _buckets(points: Sequence[Sample], start: dt.datetime, span_s: float, reduce: str
             ) -> list[tuple[dt.datetime, float]]:
    groups: dict[int, list[Sample]] = {}
    for at, value in points:
        if value is None:
            continue
        k = int((at - start).total_seconds() / span_s * HISTORY_BUCKETS)
        if 0 <= k <= HISTORY_BUCKETS:
            groups.setdefault(k, []).append((at, value))
    out = []
    for _k, group in sorted(groups.items()):
        vals = [float(v) for _t, v in group if v is not None]
        value = max(vals) if reduce == "max" else sum(vals) / len(vals)
        out.append((group[-1][0], value))  # at the bucket's last report: gaps stay honest
    return out


def _lone(parts: list[str]) -> list[int]:
    """Indexes of the points that start a sub-path no other point continues."""
    return [i for i, p in enumerate(parts) if p.startswith("M") and
            (i + 1 == len(parts) or parts[i + 1].startswith("M"))]


def _bands(states: Sequence[tuple[dt.datetime, str | None]], gap: float, x: Any
           ) -> list[StateBand]:
    """Runs of one state: from its first report to the next report (the state held until the
    probe said otherwise); a gap in the reports or a report without a state ends a run."""
    runs: list[list[Any]] = []  # [state, first, last]
    open_run: list[Any] | None = None
    previous: dt.datetime | None = None
    for at, state in states:
        contiguous = previous is not None and (at - previous).total_seconds() <= gap
        previous = at
        if open_run is not None:
            if contiguous:
                open_run[2] = at
            if not contiguous or state != open_run[0]:
                open_run = None
        if state is not None and open_run is None:
            open_run = [state, at, at]
            runs.append(open_run)
    out = []
    for state, first, last in runs:
        x_start, x_end = x(first), x(last)
        out.append(StateBand(x_start, max(x_end - x_start, 1.5), state,
                             f"{state}: {first:%Y-%m-%d %H:%M} to {last:%H:%M}"))
    return out


def _run_labels(texts: Sequence[tuple[dt.datetime, str | None]], x: Any) -> list[RunLabel]:
    """A label where the text changes (the operator the modem is on), once per run."""
    out: list[RunLabel] = []
    current: str | None = None
    for at, text in texts:
        if text is not None and text != current:
            out.append(RunLabel(x(at), text, f"{text} from {at:%Y-%m-%d %H:%M}"))
        current = text if text is not None else current
    return out
