"""Tone segments: where a steady tone sounds, and its exact spectral components.

Method, in two passes:

1. **Frame pass** (shared 40 ms / 10 ms spectra, :mod:`probe.audio.frames`).  A frame is *tonal*
   when the two strongest spectral regions in 150-2200 Hz (each +-62 Hz around a peak, which
   also holds the sidebands of a 16-50 Hz AM tone) carry at least :data:`TONAL_RATIO` of the
   frame's 100-3900 Hz power and the frame is above :data:`MIN_LEVEL_DB`.  White noise 10 dB
   below a tone still leaves the ratio near 0.9; speech, noise and music rarely pass, and never
   for long with a stable spectrum.  Runs of tonal frames are split where the spectrum changes
   (cosine similarity of frames 40 ms apart below 0.5: the steps of a SIT), and their edges are
   trimmed to the frames within 3 dB of the run's median level (a 40 ms window centred on an
   edge sees half the tone: -3 dB), which places an edge to about one hop (10 ms).
2. **Segment pass**.  Each segment's samples (up to its middle second) get one long Hann FFT,
   zero-padded to about 1 Hz bins; peaks within 25 dB of the strongest, frequency by parabolic
   interpolation on the log spectrum, each with its share of the band power.  This resolves
   400 from 425 Hz, 400+450, and AM sidebands, which a 40 ms frame cannot.

Pure functions over 8 kHz float samples; nothing here knows about countries (see
:mod:`probe.audio.progress`).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from probe.audio.frames import FRAME_S, NFFT, Frames
from probe.audio.wavio import RATE

TONAL_RATIO = 0.6
MIN_LEVEL_DB = -60.0
MIN_SEGMENT_S = 0.05
SEARCH_HZ = (150.0, 2200.0)
TOTAL_HZ = (100.0, 3900.0)
REGION_BINS = 4  # +-62 Hz
SPLIT_LAG = 4  # frames (40 ms) between compared spectra
SPLIT_COS = 0.5
BRIDGE_FRAMES = 3  # 30 ms


@dataclass(frozen=True)
class Component:
    freq: float  # Hz
    share: float  # share of the segment's 120-2300 Hz power


@dataclass(frozen=True)
class ToneSegment:
    start: float  # s from the start of the recording
    end: float
    components: tuple[Component, ...]  # strongest first
    level_db: float  # AES17 dBFS, median over the segment

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def purity(self) -> float:
        """Share of the band power explained by the listed components."""
        return sum(c.share for c in self.components)

    @property
    def freqs(self) -> tuple[float, ...]:
        return tuple(c.freq for c in self.components)


def tonal_frames(frames: Frames) -> NDArray[np.bool_]:
    """Per frame: does a steady tone (one or two regions) dominate it?"""
    if frames.count == 0:
        return np.zeros(0, bool)
    band = frames.bins(*SEARCH_HZ)
    total = frames.bins(*TOTAL_HZ)
    p = frames.power[:, band]
    tot = frames.power[:, total].sum(axis=1) + 1e-20
    idx = np.arange(p.shape[1])[None, :]
    k1 = np.argmax(p, axis=1)[:, None]
    in1 = np.abs(idx - k1) <= REGION_BINS
    r1 = np.where(in1, p, 0).sum(axis=1)
    rest = np.where(in1, 0, p)
    k2 = np.argmax(rest, axis=1)[:, None]
    peak1 = np.take_along_axis(p, k1, axis=1)[:, 0]
    peak2 = np.take_along_axis(rest, k2, axis=1)[:, 0]
    in2 = (np.abs(idx - k2) <= REGION_BINS) & ~in1
    r2 = np.where(in2, p, 0).sum(axis=1)
    r2 = np.where(peak2 >= 0.03 * peak1, r2, 0)
    ratio = (r1 + r2) / tot
    return (ratio >= TONAL_RATIO) & (frames.energy_db >= MIN_LEVEL_DB)


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs."""
    if mask.size == 0:
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(),
                    strict=True))


def _split_on_change(frames: Frames, a: int, b: int) -> list[tuple[int, int]]:
    """Split the run [a, b) where its spectrum changes (a SIT step, one tone to another)."""
    if b - a < 2 * SPLIT_LAG + 2:
        return [(a, b)]
    band = frames.bins(*SEARCH_HZ)
    s = np.sqrt(frames.power[a:b, band].astype(np.float64))
    s /= np.linalg.norm(s, axis=1, keepdims=True) + 1e-20
    lag = SPLIT_LAG
    cos = np.einsum("ij,ij->i", s[:-2 * lag], s[2 * lag:])  # compares j-lag with j+lag
    low = cos < SPLIT_COS
    cuts = []
    for ra, rb in _runs(low):
        cuts.append(a + lag + ra + int(np.argmin(cos[ra:rb])))
    bounds = [a, *cuts, b]
    return [(x, y) for x, y in itertools.pairwise(bounds) if y > x]


def _trim(frames: Frames, a: int, b: int) -> tuple[int, int]:
    level = frames.energy_db[a:b]
    keep = level >= np.median(level) - 3.0
    inside = np.flatnonzero(keep)
    if inside.size == 0:
        return a, a
    return a + int(inside[0]), a + int(inside[-1]) + 1


@functools.lru_cache(maxsize=64)
def _hann(n: int) -> NDArray[np.float64]:
    return np.hanning(n + 2)[1:-1]


def components(x: NDArray[np.float64], max_components: int = 6) -> tuple[Component, ...]:
    """Spectral peaks of a steady-tone excerpt ``x`` (8 kHz), strongest first."""
    from scipy import fft

    n = len(x)
    if n < 64:
        return ()
    if n > RATE:  # the middle second is plenty: 1 Hz resolution
        mid = (n - RATE) // 2
        x = x[mid:mid + RATE]
        n = RATE
    nfft = max(4096, 1 << int(np.ceil(np.log2(n)) + 1))
    spec = fft.rfft(x * _hann(n), n=nfft)
    p = spec.real**2 + spec.imag**2
    hz = RATE / nfft
    lo, hi = int(120 / hz), int(2300 / hz)
    band = p[lo:hi]
    total = float(band.sum()) + 1e-30
    lobe = max(1, round(2.0 * RATE / n / hz))  # Hann main-lobe half width, in bins
    found: list[Component] = []
    work = band.copy()
    peak_max = float(work.max())
    for _ in range(max_components):
        k = int(np.argmax(work))
        if work[k] <= peak_max * 10 ** (-2.5) or work[k] <= 0:
            break
        if 0 < k < len(band) - 1 and band[k - 1] > 0 and band[k + 1] > 0:
            y0, y1, y2 = np.log(band[k - 1]), np.log(band[k]), np.log(band[k + 1])
            denom = y0 - 2 * y1 + y2
            delta = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
        else:
            delta = 0.0
        sl = slice(max(0, k - lobe), k + lobe + 1)
        share = float(band[sl].sum()) / total
        found.append(Component((lo + k + float(np.clip(delta, -0.5, 0.5))) * hz, share))
        work[max(0, k - 2 * lobe):k + 2 * lobe + 1] = 0
    return tuple(found)


def find_tone_segments(x: NDArray[np.float64], frames: Frames) -> list[ToneSegment]:
    """Every steady-tone segment of at least :data:`MIN_SEGMENT_S`, in time order."""
    mask = tonal_frames(frames)
    # bridge drop-outs of up to BRIDGE_FRAMES (a codec glitch, an AM trough, a lost packet
    # concealed too quietly); the shortest cadence gap of any plan is 100 ms
    gaps = _runs(~mask)
    for a, b in gaps:
        if b - a <= BRIDGE_FRAMES and a > 0 and b < mask.size:
            mask[a:b] = True
    segments: list[ToneSegment] = []
    for a, b in _runs(mask):
        for sa, sb in _split_on_change(frames, a, b):
            ta, tb = _trim(frames, sa, sb)
            start, end = max(0.0, (ta - 0.5) * FRAME_S), min(len(x) / RATE, (tb - 0.5) * FRAME_S)
            if end - start < MIN_SEGMENT_S:
                continue
            i0, i1 = int((start + 0.01) * RATE), int((end - 0.01) * RATE)
            comps = components(x[i0:i1])
            if not comps:
                continue
            segments.append(ToneSegment(round(start, 3), round(end, 3), comps,
                                        float(np.median(frames.energy_db[ta:tb]))))
    return segments


__all__ = ["NFFT", "Component", "ToneSegment", "components", "find_tone_segments",
           "tonal_frames"]
