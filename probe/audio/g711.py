"""G.711 µ-law and A-law companding (ITU-T G.711), vectorised over numpy arrays.

Samples are floats in [-1, 1) (full scale = 1.0, i.e. 16-bit PCM / 32768).  Used to decode
G.711 WAV files, to simulate the codec in test corpora, and to know the largest code a G.711
channel can carry (clipping shows as runs at that code).

The segment formulas follow G.711 exactly (14-bit µ-law with bias 33, 13-bit A-law with the
0x55 even-bit inversion); ``encode(decode(c)) == c`` for every code.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Samples = NDArray[np.float64]

_MU_BIAS = 0x84  # 132 = 33 << 2 on the 16-bit scale


def ulaw_encode(x: Samples) -> NDArray[np.uint8]:
    """Floats in [-1, 1) -> µ-law codes (bytes as stored in a WAV / RTP payload)."""
    pcm = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768,
                  32767).astype(np.int32) >> 2  # 14-bit
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.where(pcm < 0, -pcm, pcm)
    mag = np.minimum(mag, 8159) + 33
    segment = np.maximum(np.floor(np.log2(mag)).astype(np.int32) - 5, 0)
    code = np.where(segment > 7, 0x7F, (np.minimum(segment, 7) << 4)
                    | ((mag >> (np.minimum(segment, 7) + 1)) & 0x0F)) ^ mask
    return code.astype(np.uint8)


def ulaw_decode(codes: NDArray[np.uint8]) -> Samples:
    """µ-law codes -> floats in [-1, 1)."""
    c = ~np.asarray(codes, dtype=np.int32) & 0xFF
    sign = c & 0x80
    exponent = (c >> 4) & 0x07
    mantissa = c & 0x0F
    mag = (((mantissa << 3) + _MU_BIAS) << exponent) - _MU_BIAS
    return np.where(sign != 0, -mag, mag).astype(np.float64) / 32768.0


def alaw_encode(x: Samples) -> NDArray[np.uint8]:
    """Floats in [-1, 1) -> A-law codes."""
    pcm = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768,
                  32767).astype(np.int32) >> 3  # 13-bit
    sign = np.where(pcm >= 0, 0x80, 0x00)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    mag = np.minimum(mag, 0x0FFF)
    exponent = np.where(mag >= 32, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4,
                        0)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    code = (sign | (exponent << 4) | mantissa) ^ 0x55
    return code.astype(np.uint8)


def alaw_decode(codes: NDArray[np.uint8]) -> Samples:
    """A-law codes -> floats in [-1, 1)."""
    c = np.asarray(codes, dtype=np.int32) ^ 0x55
    sign = c & 0x80
    exponent = (c >> 4) & 0x07
    mantissa = c & 0x0F
    mag = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, mag, -mag).astype(np.float64) / 32768.0


def ulaw_roundtrip(x: Samples) -> Samples:
    """What a µ-law channel delivers for ``x``."""
    return ulaw_decode(ulaw_encode(x))


def alaw_roundtrip(x: Samples) -> Samples:
    """What an A-law channel delivers for ``x``."""
    return alaw_decode(alaw_encode(x))


ULAW_MAX = float(ulaw_decode(np.array([0x80], dtype=np.uint8))[0])  # 32124 / 32768
ALAW_MAX = float(alaw_decode(np.array([0xAA], dtype=np.uint8))[0])  # 32256 / 32768
