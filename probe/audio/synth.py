"""Synthetic telephone audio for tests, benchmarks and the simulator: tones from the plans,
SIT, noise at a given SNR, and the channel codecs (G.711 in numpy, GSM-FR through sox).

Levels are AES17 dBFS (RMS of a full-scale sine = 0 dBFS).  Everything but :func:`gsm_fr`
is a pure function; :func:`gsm_fr` runs Debian's ``sox`` (GSM 06.10 encoder and decoder).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from probe.audio.g711 import alaw_roundtrip, ulaw_roundtrip
from probe.audio.plans import Tone, ToneSpec
from probe.audio.wavio import RATE

Samples = NDArray[np.float64]
AM_DEPTH = 0.9


def amplitude(level_dbfs: float) -> float:
    """Peak amplitude of a sine at ``level_dbfs`` (AES17)."""
    return float(10 ** (level_dbfs / 20))


def tone(t: Tone, duration: float, level_dbfs: float = -10.0, *, freq_scale: float = 1.0,
         phase: float = 0.0) -> Samples:
    """``duration`` seconds of ``t`` with total RMS at ``level_dbfs``; frequencies scaled by
    ``freq_scale`` (to test frequency error)."""
    n = round(duration * RATE)
    time = np.arange(n) / RATE + phase
    if t.modulation_hz:
        carrier = np.sin(2 * np.pi * t.main[0] * freq_scale * time)
        env = 1 + AM_DEPTH * np.sin(2 * np.pi * t.modulation_hz * time)
        y = carrier * env
    else:
        y = np.zeros_like(time)
        for k, f in enumerate(t.main):
            y = y + np.sin(2 * np.pi * f * freq_scale * time + 1.3 * k)
        y = np.asarray(y, dtype=np.float64)
    rms = np.sqrt(np.mean(y**2)) if n else 1.0
    return y / max(rms, 1e-12) * amplitude(level_dbfs) / np.sqrt(2)


def cadenced(spec: ToneSpec, duration: float, level_dbfs: float = -10.0, *,
             freq_scale: float = 1.0, offset: float = 0.0) -> Samples:
    """``spec`` played for ``duration`` s, starting ``offset`` s into its first cycle."""
    n = round(duration * RATE)
    out = np.zeros(n)
    if spec.continuous:
        return tone(spec.tone, duration, level_dbfs, freq_scale=freq_scale)
    cycle = sum(spec.cadence)
    t = -offset
    k = 0
    while t < duration:
        length = spec.cadence[k % len(spec.cadence)]
        if k % 2 == 0:
            a, b = max(0.0, t), min(duration, t + length)
            if b > a:
                i0, i1 = round(a * RATE), round(b * RATE)
                out[i0:i1] = tone(spec.tone, (i1 - i0) / RATE, level_dbfs,
                                  freq_scale=freq_scale, phase=a)
        t += length
        k += 1
        if k > 10_000 * max(1, len(spec.cadence)) or cycle <= 0:
            break
    return out


def sit_tone(freqs: tuple[float, float, float], durations: tuple[float, float, float],
             level_dbfs: float = -24.0, gap: float = 0.0) -> Samples:
    parts = []
    for f, d in zip(freqs, durations, strict=True):
        parts.append(tone(Tone.parse(f"{f:g}"), d, level_dbfs))
        parts.append(np.zeros(round(gap * RATE)))
    return np.concatenate(parts)


def silence(duration: float) -> Samples:
    return np.zeros(round(duration * RATE))


def add_noise(x: Samples, snr_db: float | None, *, reference_dbfs: float,
              rng: np.random.Generator, color: str = "white") -> Samples:
    """Add continuous noise ``snr_db`` below ``reference_dbfs`` (None: no noise)."""
    if snr_db is None:
        return x
    noise = rng.standard_normal(len(x))
    if color == "brown":
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
    noise /= max(np.sqrt(np.mean(noise**2)), 1e-12)
    return x + noise * amplitude(reference_dbfs - snr_db) / np.sqrt(2)


def gsm_fr(x: Samples) -> Samples:
    """What a GSM full-rate (06.10) channel delivers for ``x`` (8 kHz), via sox."""
    sox = shutil.which("sox")
    if sox is None:
        raise FileNotFoundError("sox is needed for GSM-FR coding (Debian package sox)")
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()
    raw = ["-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1"]
    enc = subprocess.run([sox, *raw, "-", "-t", "gsm", "-"], input=pcm, capture_output=True,
                         check=True).stdout
    dec = subprocess.run([sox, "-t", "gsm", "-r", "8000", "-c", "1", "-", *raw, "-"], input=enc,
                         capture_output=True, check=True).stdout
    y = np.frombuffer(dec, "<i2").astype(np.float64) / 32768
    out = np.zeros(len(x))
    out[:min(len(x), len(y))] = y[:len(x)]
    return out


CODECS = {
    "pcm": lambda x: x,
    "ulaw": ulaw_roundtrip,
    "alaw": alaw_roundtrip,
    "gsm": gsm_fr,
}


def codec(name: str, x: Samples) -> Samples:
    """``x`` through channel codec ``name`` ("pcm", "ulaw", "alaw", "gsm")."""
    return CODECS[name](np.clip(x, -1.0, 32767 / 32768))


# --------------------------------------------------------------------------- test corpora


@dataclass(frozen=True)
class ToneCase:
    spec: ToneSpec
    codec: str = "pcm"
    level_dbfs: float = -20.0
    snr_db: float | None = None
    freq_scale: float = 1.0
    offset: float = 0.0  # s into the first cycle

    @property
    def duration(self) -> float:
        if self.spec.continuous:
            return 5.0
        return max(6.0, 2.2 * sum(self.spec.cadence) + 0.5)

    def label(self) -> str:
        noise = "clean" if self.snr_db is None else f"{self.snr_db:g}dB"
        return (f"{self.spec.country}/{self.spec.kind} {self.codec} {self.level_dbfs:g}dBFS "
                f"{noise} x{self.freq_scale:g}")


def tone_case(case: ToneCase, rng: np.random.Generator) -> Samples:
    """The case's audio before the codec: lead-in silence, the tone, noise throughout."""
    x = np.concatenate([silence(0.3), cadenced(case.spec, case.duration, case.level_dbfs,
                                               freq_scale=case.freq_scale, offset=case.offset),
                        silence(0.3)])
    return add_noise(x, case.snr_db, reference_dbfs=case.level_dbfs, rng=rng)


def render(clips: list[Samples], codecs: list[str], gap_s: float = 0.5) -> list[Samples]:
    """Each clip through its codec; clips sharing a codec go through it in one pass (one sox
    run for all GSM clips), separated by silence and cut back apart."""
    out: list[Samples | None] = [None] * len(clips)
    gap = np.zeros(int(gap_s * RATE))
    for name in set(codecs):
        idx = [i for i, c in enumerate(codecs) if c == name]
        parts, spans, pos = [], [], 0
        for i in idx:
            n = len(clips[i]) + (-len(clips[i])) % 160  # whole GSM frames
            padded = np.zeros(n)
            padded[:len(clips[i])] = clips[i]
            parts += [padded, gap]
            spans.append((pos, pos + len(clips[i])))
            pos += n + len(gap)
        coded = codec(name, np.concatenate(parts)) if parts else np.zeros(0)
        for i, (a, b) in zip(idx, spans, strict=True):
            out[i] = coded[a:b]
    return [o if o is not None else np.zeros(0) for o in out]
