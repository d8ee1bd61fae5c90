"""Reading and writing WAV files as float sample arrays (no dependency beyond numpy/scipy).

The SIP recorder writes 8 kHz 16-bit PCM; reference prompts and stand-in audio are often G.711
(µ-law / A-law WAV, format tags 7 / 6), sometimes 16 or 48 kHz PCM or float.  The stdlib
``wave`` module reads PCM only, so this module parses the RIFF chunks itself:

    RIFF <size> WAVE
      fmt  <16|18|40>  tag:u16 channels:u16 rate:u32 byte_rate:u32 align:u16 bits:u16 [ext]
      data <n>         interleaved samples
      (other chunks are skipped; chunks are padded to even sizes)

Everything is returned as float64 in [-1, 1), channels mixed to mono, and resampled to the
analysis rate (8 kHz, the telephone band) with a polyphase filter when needed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from probe.audio.g711 import alaw_decode, ulaw_decode

RATE = 8000  # every analysis runs at the telephone-band rate

_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
ENCODINGS = {_PCM: "pcm", _FLOAT: "float", _ALAW: "alaw", _ULAW: "ulaw"}


class WavError(ValueError):
    """The file is not a WAV this module can read (the message says why)."""


@dataclass(frozen=True)
class Audio:
    samples: NDArray[np.float64]  # mono, [-1, 1)
    rate: int
    encoding: str  # "pcm", "float", "ulaw", "alaw"
    bits: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate


def read_wav(path: str | Path) -> Audio:
    """Decode a WAV file (PCM 8/16/24/32-bit, float 32/64, µ-law, A-law) to mono floats."""
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError(f"{path}: not a RIFF/WAVE file")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16:
        raise WavError(f"{path}: no fmt chunk")
    if payload is None:
        raise WavError(f"{path}: no data chunk")
    tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the SubFormat GUID
    if channels < 1 or rate < 1:
        raise WavError(f"{path}: {channels} channels at {rate} Hz")
    frames = len(payload) // max(align, 1)
    raw = payload[:frames * align]
    x = _decode(raw, tag, bits, path)
    x = x.reshape(-1, channels).mean(axis=1) if channels > 1 else x
    return Audio(x.astype(np.float64), rate, ENCODINGS.get(tag, "?"), bits)


def _decode(raw: bytes, tag: int, bits: int, path: str | Path) -> NDArray[np.float64]:
    if tag == _ULAW and bits == 8:
        return ulaw_decode(np.frombuffer(raw, np.uint8))
    if tag == _ALAW and bits == 8:
        return alaw_decode(np.frombuffer(raw, np.uint8))
    if tag == _FLOAT and bits in (32, 64):
        return np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float64)
    if tag == _PCM:
        if bits == 8:
            return (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) / 128.0
        if bits == 16:
            return np.frombuffer(raw, "<i2").astype(np.float64) / 32768.0
        if bits == 24:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            v = np.where(v >= 1 << 23, v - (1 << 24), v)
            return v.astype(np.float64) / float(1 << 23)
        if bits == 32:
            return np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)
    raise WavError(f"{path}: unsupported WAV encoding (format tag {tag}, {bits} bits)")


def resample(x: NDArray[np.float64], rate: int, to: int = RATE) -> NDArray[np.float64]:
    """Polyphase resampling (scipy ``resample_poly``, Kaiser-windowed anti-alias filter)."""
    if rate == to:
        return np.asarray(x, dtype=np.float64)
    from scipy.signal import resample_poly

    g = gcd(rate, to)
    return resample_poly(np.asarray(x, dtype=np.float64), to // g, rate // g)


def load_for_analysis(path: str | Path) -> Audio:
    """A WAV as 8 kHz mono floats (the encoding of the file is kept for clipping checks)."""
    audio = read_wav(path)
    if audio.rate == RATE:
        return audio
    return Audio(resample(audio.samples, audio.rate), RATE, audio.encoding, audio.bits)


def write_wav(path: str | Path, x: NDArray[np.float64], rate: int = RATE) -> None:
    """Write 16-bit PCM mono (what the recorder writes; references are stored this way)."""
    pcm = np.clip(np.round(np.asarray(x) * 32768.0), -32768, 32767).astype("<i2").tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16,
                         _PCM, 1, rate, rate * 2, 2, 16, b"data", len(pcm))
    Path(path).write_bytes(header + pcm)
