"""The short-time spectrum every detector shares: computed once per recording.

Frames are 40 ms Hann windows every 10 ms (8 kHz: 320 samples, hop 80, FFT 512, so bins are
15.6 Hz apart).  40 ms resolves the closest tone pairs of the plans at frame level well enough to
tell "one tone", "two tones" and "broadband" apart, and still places a cadence edge to about
+-10 ms.  The signal is padded by half a window at both ends, so frame ``i`` is centred on
``i * hop`` samples: ``t = i * 0.010`` s.

Levels are AES17 dBFS: the RMS of a full-scale sine is 0 dBFS (a full-scale square is +3 dB).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from probe.audio.wavio import RATE

WIN = 320
HOP = 80
NFFT = 512
FRAME_S = HOP / RATE
FLOOR_DB = -120.0
_EPS = 1e-12


def dbfs(mean_square: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """Mean square -> AES17 dBFS (a full-scale sine, mean square 0.5, is 0 dBFS)."""
    return 10.0 * np.log10(np.maximum(np.asarray(mean_square, dtype=np.float64) * 2.0, 1e-12))


@dataclass(frozen=True)
class Frames:
    """Power spectra (frames x bins, float32) and per-frame levels of one recording."""

    power: NDArray[np.float32]
    energy_db: NDArray[np.float64]
    n_samples: int

    @property
    def count(self) -> int:
        return self.power.shape[0]

    @cached_property
    def freqs(self) -> NDArray[np.float64]:
        return np.fft.rfftfreq(NFFT, 1.0 / RATE).astype(np.float64)

    def bins(self, lo: float, hi: float) -> slice:
        """Bin range covering [lo, hi] Hz."""
        return slice(int(np.ceil(lo * NFFT / RATE)), int(np.floor(hi * NFFT / RATE)) + 1)

    @staticmethod
    def time(i: int | float) -> float:
        return float(i) * FRAME_S

    @staticmethod
    def index(t: float) -> int:
        return round(t / FRAME_S)


_WINDOW = np.hanning(WIN + 2)[1:-1].astype(np.float32)
# Parseval with the window: the bins of a frame sum to the frame's mean square.
_POWER_SCALE = 1.0 / float(np.sum(_WINDOW.astype(np.float64) ** 2) * NFFT / 2)


def analyse_frames(x: NDArray[np.float64]) -> Frames:
    """Short-time power spectra and levels of 8 kHz samples ``x`` (about 15 ms per minute)."""
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy import fft

    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    count = n // HOP + 1 if n else 0
    if count == 0:
        return Frames(np.zeros((0, NFFT // 2 + 1), np.float32), np.zeros(0), n)
    padded = np.zeros(count * HOP + WIN, np.float32)
    padded[WIN // 2:WIN // 2 + n] = x
    framed = sliding_window_view(padded, WIN)[::HOP][:count]
    energy = np.einsum("ij,ij->i", framed, framed).astype(np.float64) / WIN
    spec = fft.rfft(framed * _WINDOW, n=NFFT, axis=1)
    power = spec.real**2 + spec.imag**2
    power *= np.float32(_POWER_SCALE)
    return Frames(power, dbfs(energy), n)
