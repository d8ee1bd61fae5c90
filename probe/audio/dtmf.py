"""DTMF: in-band generation for IVR navigation, and a detector with ITU-T Q.24 tolerances.

Generation: each digit is its low-group + high-group sine pair, the high group 2 dB louder
(pre-emphasis against line loss), -8 dBm0 per tone by default, 80 ms on / 80 ms off.  0 dBm0 is
-3.14 dBFS (AES17): the G.711 digital milliwatt sits 3.14 dB below a full-scale sine.

Detection:

1. Blocks of 106 samples (13.25 ms) every 53 samples.  Goertzel power (done as one matrix
   product) at the eight DTMF frequencies.  A block holds a digit when the strongest row and
   column tones are each 6 dB above the others of their group, together hold 70 % of the
   block's power (speech and music do not), the block is above -45 dBFS, and the twist is
   within Q.24's usual limits: the high group at most 4 dB above the low group, at most 8 dB
   below it.
2. A digit is 4 consecutive blocks with the same key (at least 33 ms of tone: Q.24 asks that
   40 ms be accepted); one disagreeing block inside a digit is tolerated.
3. Frequency deviation, which a 13 ms block cannot resolve, is then measured on the whole digit
   (zero-padded FFT, parabolic peak): both tones must be within 2.5 % of nominal, between
   Q.24's "must accept" (1.5 %) and "must reject" (3.5 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from probe.audio.wavio import RATE

LOW = (697.0, 770.0, 852.0, 941.0)
HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")
DBM0_TO_DBFS = -3.14
BLOCK = 106
HOP = 53
MIN_BLOCKS = 4  # 106 + 3 x 53 samples = 33 ms of tone at least
MAX_DEVIATION = 0.025
TWIST_HIGH_ABOVE_DB = 4.0
TWIST_HIGH_BELOW_DB = 8.0
MIN_BLOCK_DBFS = -45.0


def _freqs(digit: str) -> tuple[float, float]:
    for r, row in enumerate(KEYS):
        c = row.find(digit.upper())
        if c >= 0:
            return LOW[r], HIGH[c]
    raise ValueError(f"not a DTMF digit: {digit!r}")


def generate(digits: str, *, on_s: float = 0.08, off_s: float = 0.08,
             level_dbm0: float = -8.0, high_boost_db: float = 2.0,
             freq_error: float = 0.0) -> NDArray[np.float64]:
    """In-band DTMF for ``digits`` (8 kHz floats), each tone at ``level_dbm0``."""
    n_on, n_off = round(on_s * RATE), round(off_s * RATE)
    t = np.arange(n_on) / RATE
    amp = np.sqrt(2) * 10 ** ((level_dbm0 + DBM0_TO_DBFS) / 20) / np.sqrt(2)
    out = []
    for d in digits:
        lo, hi = _freqs(d)
        y = amp * np.sin(2 * np.pi * lo * (1 + freq_error) * t)
        y += amp * 10 ** (high_boost_db / 20) * np.sin(2 * np.pi * hi * (1 + freq_error) * t)
        out += [y, np.zeros(n_off)]
    return np.concatenate(out) if out else np.zeros(0)


@dataclass(frozen=True)
class Digit:
    digit: str
    start: float
    end: float
    low_hz: float
    high_hz: float
    twist_db: float  # high group level minus low group level


_ALL = np.array(LOW + HIGH)
_BASIS = np.exp(-2j * np.pi * _ALL[None, :] * np.arange(BLOCK)[:, None] / RATE)


def _precise(x: NDArray[np.float64], nominal: float) -> float:
    n = len(x)
    nfft = 1 << max(14, int(np.ceil(np.log2(n))) + 2)
    p = np.abs(np.fft.rfft(x * np.hanning(n), nfft)) ** 2
    hz = RATE / nfft
    lo, hi = int(nominal * 0.94 / hz), int(nominal * 1.06 / hz) + 1
    k = lo + int(np.argmax(p[lo:hi]))
    y0, y1, y2 = np.log(p[k - 1:k + 2] + 1e-30)
    den = y0 - 2 * y1 + y2
    return (k + (0.5 * (y0 - y2) / den if den else 0.0)) * hz


def detect(x: NDArray[np.float64]) -> list[Digit]:
    """DTMF digits heard in 8 kHz samples ``x``."""
    from numpy.lib.stride_tricks import sliding_window_view

    x = np.asarray(x, dtype=np.float64)
    if len(x) < BLOCK:
        return []
    blocks = sliding_window_view(x, BLOCK)[::HOP]
    n = len(blocks)
    power = np.abs(blocks @ _BASIS) ** 2 * (2 / BLOCK**2)  # ~ mean square of each tone
    total = np.mean(blocks**2, axis=1) + 1e-20
    low, high = power[:, :4], power[:, 4:]
    r, c = np.argmax(low, axis=1), np.argmax(high, axis=1)
    lr = np.take_along_axis(low, r[:, None], 1)[:, 0]
    hc = np.take_along_axis(high, c[:, None], 1)[:, 0]
    low2 = np.sort(low, axis=1)[:, -2]
    high2 = np.sort(high, axis=1)[:, -2]
    twist = 10 * np.log10((hc + 1e-20) / (lr + 1e-20))
    ok = ((lr >= 4 * low2) & (hc >= 4 * high2) & (lr + hc >= 0.7 * total)
          & (10 * np.log10(2 * total) >= MIN_BLOCK_DBFS)
          & (twist <= TWIST_HIGH_ABOVE_DB) & (twist >= -TWIST_HIGH_BELOW_DB))
    keys = np.where(ok, r * 4 + c, -1)
    digits: list[Digit] = []
    i = 0
    while i < n:
        if keys[i] < 0:
            i += 1
            continue
        k, j = keys[i], i
        while j + 1 < n and (keys[j + 1] == k or (j + 2 < n and keys[j + 2] == k)):
            j += 1
        if j - i + 1 >= MIN_BLOCKS:
            seg = x[i * HOP:j * HOP + BLOCK]
            lo_nom, hi_nom = LOW[k // 4], HIGH[k % 4]
            lo_f, hi_f = _precise(seg, lo_nom), _precise(seg, hi_nom)
            if (abs(lo_f / lo_nom - 1) <= MAX_DEVIATION
                    and abs(hi_f / hi_nom - 1) <= MAX_DEVIATION):
                digits.append(Digit(KEYS[k // 4][k % 4], round(i * HOP / RATE, 3),
                                    round((j * HOP + BLOCK) / RATE, 3), round(lo_f, 1),
                                    round(hi_f, 1), round(float(np.median(twist[i:j + 1])), 1)))
        i = j + 1
    return digits


def detect_string(x: NDArray[np.float64]) -> str:
    return "".join(d.digit for d in detect(x))
