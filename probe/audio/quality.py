"""Full-reference quality of the received prompt against its matched reference.

* **ViSQOL v3** (``visqol-python[lattice]``, Apache-2.0, models bundled) is the default: fed
  16 kHz (upsampled 2x; fed 8 kHz its bands are wrong), speech mode, lattice mapper.  It costs
  about 3x real time on one x86 core, so it runs on the matched prompt only.
* **PESQ** (ITU-T P.862 narrowband, ``pesq`` package) only when asked for and installed: its
  reference code permits evaluation, not commercial use, so it is never a default dependency.

ViSQOL barely penalises dropouts, so :func:`dropout_ratio` counts them separately: frames
voiced in the reference whose received copy is more than 30 dB weaker.

A score that was not measured is None, never a default; every score names its method.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from probe.audio.wavio import RATE

METHOD_VISQOL = "visqol-v3-speech-lattice"
METHOD_PESQ = "pesq-p862-nb"
MIN_SECONDS = 1.0


@dataclass(frozen=True)
class Quality:
    mos: float | None
    method: str
    error: str | None = None  # why there is no score


@cache
def _visqol() -> Any | None:
    try:
        import logging

        from visqol import VisqolApi
    except ImportError:
        return None
    logging.getLogger("visqol").setLevel(logging.WARNING)
    api = VisqolApi()
    with native_stderr_without(TFLITE_CHATTER):  # the lattice model's interpreter is made here
        api.create(mode="speech", use_lattice_model=True)
    return api


#: What TensorFlow Lite's C++ logger says on every interpreter it makes ("INFO: Created
#: TensorFlow Lite XNNPACK delegate for CPU.").  It writes to fd 2 itself, and neither
#: TF_CPP_MIN_LOG_LEVEL (that is TensorFlow's logger, not TFLite's) nor an option of the
#: ai-edge-litert interpreter turns it off.
TFLITE_CHATTER = re.compile(rb"INFO: (Created TensorFlow Lite|Initialized TensorFlow Lite)")


@contextlib.contextmanager
def native_stderr_without(chatter: re.Pattern[bytes]) -> Iterator[None]:
    """Hold back what native code writes to fd 2 meanwhile, and pass on every line that is not
    ``chatter`` when done: real errors still reach stderr, only later.  (fd 2 is the process's:
    another thread's stderr lines in the meantime are delayed the same way, never lost.)"""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = b"".join(line for line in held.read().splitlines(keepends=True)
                            if not chatter.match(line))
            while kept:
                kept = kept[os.write(2, kept):]


def available(method: str) -> bool:
    if method == "visqol":
        try:
            import visqol  # noqa: F401
        except ImportError:
            return False
        return True
    if method == "pesq":
        try:
            import pesq  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def score(reference: NDArray[np.float64], degraded: NDArray[np.float64],
          method: str = "visqol") -> Quality:
    """MOS-LQO of ``degraded`` (aligned to ``reference``, both 8 kHz)."""
    n = min(len(reference), len(degraded))
    name = METHOD_VISQOL if method == "visqol" else METHOD_PESQ
    if n < MIN_SECONDS * RATE:
        return Quality(None, name, "less than 1 s of the prompt to compare")
    ref, deg = np.asarray(reference[:n], float), np.asarray(degraded[:n], float)
    if np.sqrt(np.mean(deg**2)) < 1e-4:
        return Quality(None, name, "received prompt is silent")
    if method == "pesq":
        try:
            from pesq import pesq
        except ImportError:
            return Quality(None, name, "pesq is not installed (optional extra: .[pesq])")
        return Quality(round(float(pesq(RATE, ref, deg, "nb")), 2), name)
    api = _visqol()
    if api is None:
        return Quality(None, name, "visqol-python is not installed")
    from scipy.signal import resample_poly

    result = api.measure_from_arrays(resample_poly(ref, 2, 1), resample_poly(deg, 2, 1), 16000)
    return Quality(round(float(result.moslqo), 2), name)


def dropout_ratio(reference: NDArray[np.float64], degraded: NDArray[np.float64]) -> float | None:
    """Share of the reference's voiced 20 ms frames that arrived 30 dB weaker or not at all."""
    n = min(len(reference), len(degraded)) // 160 * 160
    if n == 0:
        return None
    r = np.mean(np.asarray(reference[:n]).reshape(-1, 160) ** 2, axis=1)
    d = np.mean(np.asarray(degraded[:n]).reshape(-1, 160) ** 2, axis=1)
    voiced = r >= r.max() * 10 ** (-3.5)
    if not voiced.any():
        return None
    lost = voiced & (d < r * 10 ** (-3.0))
    return round(float(lost.sum() / voiced.sum()), 4)
