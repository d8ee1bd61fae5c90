"""Known prompts: which reference recording played, where, and how much of it.

Fingerprint (after Haitsma & Kalker's "highly robust audio fingerprinting", the Philips
scheme, adapted to the telephone band):

* From the shared 10 ms spectra, the energy of 17 bands spaced logarithmically from 300 to
  3400 Hz, smoothed over 3 frames.
* 16 bits per frame: bit m is the sign of the *change over time* of the *difference between
  neighbouring bands*: ``(E[n,m] - E[n,m+1]) - (E[n-1,m] - E[n-1,m+1]) > 0``.  A gain cancels
  out (levels), and G.711 / GSM-FR coding, noise and small spectral tilts flip few bits.

Alignment: the reference's bits slide over the recording's; at every offset the bit error rate
(BER) over the frames voiced in the reference and not silent in the recording is computed at
once for all offsets by FFT cross-correlation (bits as +-1).  Each reference bit is weighted by
its strength (how far its band difference changed, saturating at 2.2 dB): a bit that barely
changed flips under any noise and should not count as much as a clear one.  Offsets where less
than :data:`MIN_OVERLAP` of the reference overlaps are ignored, so a prompt that starts before
the recording or is cut off at the end still matches on what was heard.  Unrelated audio sits
near BER 0.5; a match is a BER at most :data:`MATCH_BER`.  Each match reports where it starts
and ends, how much of the reference was heard (``coverage``) and whether its ending was cut
(``truncated``).  Once the offset is known, the waveform correlation of the aligned excerpt
(best lag within +-20 ms) is reported too: near 1 for a G.711 copy, lower for GSM or noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from probe.audio.frames import FRAME_S, NFFT, Frames, analyse_frames
from probe.audio.wavio import RATE, load_for_analysis, write_wav

BANDS = 17
BAND_HZ = (300.0, 3400.0)
SMOOTH = 3
MATCH_BER = 0.36
MIN_OVERLAP = 0.4  # of the reference's voiced frames
MIN_OVERLAP_S = 1.0
MAX_REPEATS = 4
ACTIVE_BELOW_PEAK_DB = 35.0
SILENT_DB = -65.0
STRONG_BIT = 0.5  # natural-log units: a 2.2 dB change of a band difference


def _band_edges() -> NDArray[np.int64]:
    edges = np.geomspace(BAND_HZ[0], BAND_HZ[1], BANDS + 1)
    return np.round(edges * NFFT / RATE).astype(np.int64)


_EDGES = _band_edges()


@dataclass(frozen=True)
class Fingerprint:
    bits: NDArray[np.int8]  # frames x 16, values +-1
    active: NDArray[np.bool_]  # frames with enough energy to mean something
    strength: NDArray[np.float32]  # frames x 16, 0..1: how far each bit is from flipping


def fingerprint(frames: Frames) -> Fingerprint:
    """16-bit sub-fingerprints, one per 10 ms frame (the first frame has no predecessor: 0s)."""
    if frames.count < 2:
        return Fingerprint(np.zeros((frames.count, BANDS - 1), np.int8),
                           np.zeros(frames.count, bool),
                           np.zeros((frames.count, BANDS - 1), np.float32))
    csum = np.cumsum(frames.power, axis=1, dtype=np.float64)
    e = csum[:, _EDGES[1:] - 1] - csum[:, _EDGES[:-1] - 1]
    if SMOOTH > 1:
        kernel = np.ones(SMOOTH) / SMOOTH
        e = np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, e)
    e = np.log(e + 1e-12)
    d = e[:, :-1] - e[:, 1:]
    f = np.zeros_like(d)
    f[1:] = d[1:] - d[:-1]
    bits = np.where(f > 0, 1, -1).astype(np.int8)
    level = frames.energy_db
    active = level >= max(float(level.max()) - ACTIVE_BELOW_PEAK_DB, SILENT_DB)
    strength = np.clip(np.abs(f) / STRONG_BIT, 0, 1).astype(np.float32)
    return Fingerprint(bits, active, strength)


@dataclass(frozen=True)
class Reference:
    name: str
    samples: NDArray[np.float64]
    fp: Fingerprint

    @property
    def duration(self) -> float:
        return len(self.samples) / RATE

    @classmethod
    def from_samples(cls, name: str, x: NDArray[np.float64]) -> Reference:
        return cls(name, x, fingerprint(analyse_frames(x)))


@dataclass(frozen=True)
class PromptMatch:
    name: str
    start: float  # s in the recording where the reference's first sample falls (may be < 0)
    end: float  # s where the heard part ends
    ber: float
    coverage: float  # share of the reference's duration heard
    truncated: bool  # ending cut off (the recording or the prompt stopped early)
    waveform_correlation: float | None

    @property
    def score(self) -> float:
        """1 - 2 BER: 1 for identical fingerprints, 0 for unrelated audio."""
        return round(1 - 2 * self.ber, 3)


def _align(ref: Fingerprint, rec: Fingerprint) -> tuple[NDArray[np.float64], ...]:
    """(weighted agreement, weight compared, bits overlapping) for every offset
    o = -(len(ref)-1) .. len(rec)-1, over the frames voiced in the reference and not silent in
    the recording."""
    from scipy.signal import fftconvolve

    wr = ref.active.astype(np.float64)
    wx = rec.active.astype(np.float64)
    s = ref.strength.astype(np.float64) * wr[:, None]
    r = ref.bits.astype(np.float64) * s
    x = rec.bits.astype(np.float64) * wx[:, None]
    # correlate: sum_t r[t] x[o + t]  ==  convolve(x, r[::-1])
    agree = fftconvolve(x, r[::-1], mode="full", axes=0).sum(axis=1)
    compared = fftconvolve(wx, s.sum(axis=1)[::-1], mode="full")
    overlap = fftconvolve(wx, wr[::-1], mode="full") * ref.bits.shape[1]
    return agree, np.maximum(compared, 0.0), np.round(overlap)


def match_prompt(ref: Reference, rec: Fingerprint, x: NDArray[np.float64],
                 max_matches: int = MAX_REPEATS) -> list[PromptMatch]:
    """Where ``ref`` plays in the recording (fingerprint ``rec``, samples ``x``): every
    non-overlapping occurrence (a looped greeting plays again), best first."""
    n_ref, n_rec = len(ref.fp.bits), len(rec.bits)
    voiced = int(ref.fp.active.sum())
    if n_ref < 2 or n_rec < 2 or voiced == 0:
        return []
    agree, compared, overlap = _align(ref.fp, rec)
    bits = ref.fp.bits.shape[1]
    need = min(max(MIN_OVERLAP * voiced, MIN_OVERLAP_S / FRAME_S), voiced) * bits
    valid = (overlap >= need) & (compared > 0)
    ber = np.where(valid, (1 - agree / np.maximum(compared, 1)) / 2, 1.0)
    found: list[PromptMatch] = []
    for _ in range(max_matches):
        k = int(np.argmin(ber))
        if ber[k] > MATCH_BER:
            break
        found.append(_describe(ref, rec, x, k - (n_ref - 1), float(ber[k])))
        ber[max(0, k - n_ref + 1):k + n_ref] = 1.0
    return found


def _describe(ref: Reference, rec: Fingerprint, x: NDArray[np.float64], offset: int,
              ber: float) -> PromptMatch:
    """The match at ``offset`` (recording frame where reference frame 0 falls)."""
    n_ref, n_rec = len(ref.fp.bits), len(rec.bits)
    lo, hi = max(0, -offset), min(n_ref, n_rec - offset)
    t = np.arange(lo, hi)
    both = ref.fp.active[t] & rec.active[t + offset]
    agreeing = both & ((ref.fp.bits[t] * rec.bits[t + offset]).mean(axis=1) > 0.2)
    # heard: where, over half a second, most voiced reference frames agree with the recording
    win = np.ones(50)
    heard = np.convolve(agreeing, win, "same") >= 0.35 * np.maximum(
        np.convolve(ref.fp.active[t], win, "same"), 1)
    heard &= ref.fp.active[t] | (np.convolve(heard, np.ones(3), "same") > 0)
    idx = np.flatnonzero(heard)
    heard_from = lo + (int(idx[0]) if idx.size else 0)
    heard_to = lo + (int(idx[-1]) + 1 if idx.size else 0)
    voiced_idx = np.flatnonzero(ref.fp.active)
    truncated = heard_to < int(voiced_idx[-1]) + 1 - 30  # > 0.3 s of voiced reference unheard
    coverage = max(0.0, (heard_to - heard_from) / n_ref)
    return PromptMatch(ref.name, round(offset * FRAME_S, 2),
                       round((offset + heard_to) * FRAME_S, 2), round(ber, 3),
                       round(min(1.0, coverage), 3), bool(truncated),
                       _waveform_correlation(ref.samples, x, offset * int(FRAME_S * RATE)))


def _waveform_correlation(ref: NDArray[np.float64], x: NDArray[np.float64],
                          shift: int) -> float | None:
    """Peak normalised cross-correlation of the aligned excerpt, lags within +-20 ms (one FFT
    correlation; the energy under each lag from cumulative sums)."""
    from scipy.signal import correlate

    lag = int(0.02 * RATE)
    i0 = max(0, -shift + lag)  # reference samples whose every lagged partner exists
    j0 = shift + i0
    n = min(len(ref) - i0, len(x) - j0 - lag)
    if n < RATE // 2 or j0 - lag < 0:
        return None
    r = ref[i0:i0 + n]
    y = x[j0 - lag:j0 + n + lag]
    num = correlate(y, r, mode="valid", method="fft")  # num[k] = sum r[i] y[i + k]
    c2 = np.concatenate([[0.0], np.cumsum(y * y)])
    energy = c2[n:n + 2 * lag + 1] - c2[:2 * lag + 1]
    den = np.sqrt(np.dot(r, r) * energy)
    valid = den > 0
    if not valid.any():
        return None
    return round(float(np.max(num[valid] / den[valid])), 3)


class PromptLibrary:
    """Reference prompts: ``<dir>/<name>.wav`` (any WAV; stored as 8 kHz 16-bit PCM)."""

    def __init__(self, references: list[Reference]) -> None:
        self.references = references

    @classmethod
    def load(cls, directory: str | Path | None, names: list[str] | None = None) -> PromptLibrary:
        if directory is None or not Path(directory).is_dir():
            return cls([])
        refs = []
        for path in sorted(Path(directory).glob("*.wav")):
            if names is not None and path.stem not in names:
                continue
            refs.append(Reference.from_samples(path.stem, load_for_analysis(path).samples))
        return cls(refs)

    def __len__(self) -> int:
        return len(self.references)

    def match(self, x: NDArray[np.float64], frames: Frames) -> list[PromptMatch]:
        """Every reference heard in the recording, best first, overlapping matches resolved
        in favour of the lower BER."""
        rec = fingerprint(frames)
        found = [m for ref in self.references for m in match_prompt(ref, rec, x)]
        found.sort(key=lambda m: m.ber)
        kept: list[PromptMatch] = []
        for m in found:
            if all(m.end <= k.start or m.start >= k.end for k in kept):
                kept.append(m)
        return kept

    def reference(self, name: str) -> Reference | None:
        return next((r for r in self.references if r.name == name), None)


def add_prompt(directory: str | Path, name: str, wav: str | Path) -> Path:
    """Store ``wav`` as reference ``name`` (8 kHz 16-bit PCM) in ``directory``; returns the path."""
    audio = load_for_analysis(wav)
    if audio.duration_s < 1.0:
        raise ValueError(f"{wav}: a reference prompt must be at least 1 s long")
    target = Path(directory) / f"{name}.wav"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_wav(target, audio.samples)
    return target
