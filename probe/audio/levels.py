"""Level, clipping, silence, dead air and one-way audio: energy is the right tool here.

* Level: RMS over the *active* frames (above the silence threshold) and peak, AES17 dBFS.
* Clipping: runs of at least :data:`CLIP_RUN` consecutive samples at the channel's largest
  value.  A G.711 channel cannot exceed its largest code (µ-law 32124/32768, A-law 32256/32768),
  so the threshold is just below the smaller of those; 16-bit full scale is above it too.
* Silence: a 10 ms frame below :data:`SILENCE_DB` (comfort noise and line hiss sit around -60 to
  -70 dBFS; the quietest tones we must hear are -40 dBFS).  *Digital* silence (below
  :data:`DIGITAL_ZERO_DB`) is what the recorder writes when no RTP arrives at all.
* Dead air: answered, the far end's audio arrives, but it is silent for the whole answered part
  (less than :data:`DEAD_AIR_ACTIVE` of it is active).
* One-way audio: answered and no audio arrived: no packets (when RTP statistics say so) or
  digital silence throughout the answered part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from probe.audio.frames import FRAME_S, Frames, dbfs
from probe.audio.g711 import ALAW_MAX, ULAW_MAX

SILENCE_DB = -55.0
DIGITAL_ZERO_DB = -90.0
CLIP_LEVEL = min(ULAW_MAX, ALAW_MAX) * 0.999
CLIP_RUN = 3
CLIPPED_RATIO = 1e-3
DEAD_AIR_ACTIVE = 0.05


@dataclass(frozen=True)
class Levels:
    rms_dbfs: float | None  # over active frames; None when all silent
    peak_dbfs: float | None
    clipped_samples: int
    clipping_ratio: float
    clipped: bool
    silence_ratio: float  # of the analysed span
    longest_silence_s: float
    digital_silence_ratio: float


def clipped_samples(x: NDArray[np.float64]) -> int:
    """Samples in runs of >= CLIP_RUN at the channel's maximum magnitude."""
    at_max = np.abs(x) >= CLIP_LEVEL
    if not at_max.any():
        return 0
    d = np.diff(np.concatenate([[0], at_max.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    runs = ends - starts
    return int(runs[runs >= CLIP_RUN].sum())


def measure_levels(x: NDArray[np.float64], frames: Frames, start_s: float = 0.0) -> Levels:
    """Levels of ``x`` from ``start_s`` on (e.g. from the answer)."""
    f0 = min(frames.count, round(start_s / FRAME_S))
    e = frames.energy_db[f0:]
    seg = x[int(start_s * 8000):]
    active = e >= SILENCE_DB
    silent = ~active
    longest = 0
    if silent.any():
        d = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
        longest = int((np.flatnonzero(d == -1) - np.flatnonzero(d == 1)).max())
    if active.any():
        ms = np.mean(10 ** (e[active] / 10) / 2)
        rms = round(float(dbfs(float(ms))), 1)
    else:
        rms = None
    peak = float(np.max(np.abs(seg))) if seg.size else 0.0
    clipped = clipped_samples(seg)
    n = max(1, seg.size)
    return Levels(
        rms_dbfs=rms,
        peak_dbfs=round(20 * np.log10(peak), 1) if peak > 0 else None,
        clipped_samples=clipped, clipping_ratio=round(clipped / n, 5),
        clipped=clipped / n > CLIPPED_RATIO,
        silence_ratio=round(float(silent.mean()), 4) if e.size else 1.0,
        longest_silence_s=round(longest * FRAME_S, 2),
        digital_silence_ratio=round(float((e < DIGITAL_ZERO_DB).mean()), 4) if e.size else 1.0,
    )


def dead_air(levels: Levels, answered: bool) -> bool | None:
    """Answered, audio present but silent throughout (None when not answered)."""
    if not answered:
        return None
    return (1 - levels.silence_ratio) < DEAD_AIR_ACTIVE and levels.digital_silence_ratio < 0.95


def one_way_audio(levels: Levels, answered: bool, packets_received: int | None) -> bool | None:
    """Answered and nothing arrived (None when not answered)."""
    if not answered:
        return None
    if packets_received is not None:
        return packets_received == 0
    return levels.digital_silence_ratio >= 0.95
