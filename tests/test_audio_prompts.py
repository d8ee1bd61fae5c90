"""Known prompts: the fingerprint finds the right prompt, where, and how much of it.

Variants of each reference: re-encoded (µ-law, A-law, GSM-FR), level-shifted, offset, noisy,
truncated, start cut; and non-matches: a different registered prompt, speech that is not a
prompt, another voice saying the same words, noise, ringback.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from probe.audio.analysis import analyze
from probe.audio.frames import analyse_frames
from probe.audio.prompts import PromptLibrary, Reference, add_prompt
from probe.audio.synth import add_noise, codec, silence
from probe.audio.wavio import read_wav, resample
from tests.test_audio_tones import show_report

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")

PROMPTS = {
    "welcome": "Welcome to the support hotline. Please hold the line, an operator will be "
               "with you shortly.",
    "busy": "All our operators are busy at the moment. Please call again later.",
    "closed": "We are closed. Our opening hours are Monday to Friday, nine to five.",
    "not-in-service": "The number you have dialled is not in service.",
}
OTHER = "Thank you for calling, your call is important to us and will be answered in order."


def say(text: str, tmp_path: Path, voice: str = "en") -> np.ndarray:
    wav = tmp_path / "say.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
    a = read_wav(wav)
    return resample(a.samples, a.rate) * 0.7


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> PromptLibrary:
    tmp = tmp_path_factory.mktemp("prompts")
    return PromptLibrary([Reference.from_samples(n, say(t, tmp)) for n, t in PROMPTS.items()])


def active_dbfs(x: np.ndarray) -> float:
    e = analyse_frames(x).energy_db
    return float(10 * np.log10(np.mean(10 ** (e[e > -50] / 10))))


def place(y: np.ndarray, lead: float = 2.0, tail: float = 1.0) -> np.ndarray:
    return np.concatenate([silence(lead), y, silence(tail)])


def test_prompt_variants(library: PromptLibrary, tmp_path: Path,
                         request: pytest.FixtureRequest) -> None:
    rng = np.random.default_rng(2)
    lines = ["Known prompts: variant -> best match (expected), start error, coverage",
             f"  {'variant':<30}{'matched':>16}{'expected':>16}{'dt s':>7}{'heard':>7}"
             f"{'score':>7}"]
    right = total = 0
    for ref in library.references:
        y = ref.samples
        level = active_dbfs(y)
        n = len(y)
        variants = {
            "identical": (place(y), ref.name, 2.0, False),
            "ulaw": (codec("ulaw", place(y)), ref.name, 2.0, False),
            "alaw -20 dB": (codec("alaw", place(y * 0.1)), ref.name, 2.0, False),
            "gsm": (codec("gsm", place(y)), ref.name, 2.0, False),
            "gsm +8 dB noise 15 dB": (codec("gsm", add_noise(place(np.clip(y * 2.5, -1, 1)), 15,
                                                             reference_dbfs=level + 8, rng=rng)),
                                      ref.name, 2.0, False),
            "offset 7.3 s": (place(y, lead=7.3), ref.name, 7.3, False),
            "truncated 60 %": (codec("ulaw", place(y[:int(n * 0.6)], tail=0)), ref.name, 2.0,
                               True),
            "start cut 1 s": (place(y[8000:]), ref.name, 1.0, False),
        }
        for label, (x, want, start, truncated) in variants.items():
            matches = library.match(x, analyse_frames(x))
            best = matches[0] if matches else None
            ok = (best is not None and best.name == want and abs(best.start - start) <= 0.05
                  and best.truncated == truncated)
            total += 1
            right += ok
            lines.append(f"  {ref.name + ' ' + label:<30}{best.name if best else '-':>16}"
                         f"{want:>16}{(best.start - start) if best else float('nan'):>7.2f}"
                         f"{best.coverage if best else 0:>7.2f}{best.score if best else 0:>7.2f}")
    negatives = {
        "other sentence": place(say(OTHER, tmp_path)),
        "same words, other voice": place(say(PROMPTS["welcome"], tmp_path, "en-us+f3")),
        "white noise": add_noise(silence(8), 0, reference_dbfs=-20, rng=rng),
        "ringback": codec("ulaw", np.tile(np.concatenate(
            [np.sin(2 * np.pi * 425 * np.arange(8000) / 8000) * 0.3, silence(4)]), 2)),
    }
    for label, x in negatives.items():
        matches = library.match(x, analyse_frames(x))
        total += 1
        right += not matches
        lines.append(f"  {label:<30}{matches[0].name if matches else '-':>16}{'-':>16}")
    lines.append(f"  correct {right}/{total}")
    show_report(request, lines)
    assert right / total >= 0.95


def test_greeting_checks_in_analysis(library: PromptLibrary, tmp_path: Path) -> None:
    welcome = library.reference("welcome")
    assert welcome is not None
    x = codec("ulaw", place(welcome.samples, lead=1.0))
    doc = analyze(x, prompts=library, answer_at_s=1.0, expected_prompts=["welcome"],
                  quality_method=None)
    assert doc["prompts"]["greeting"] == "welcome"
    assert doc["prompts"]["unknown_greeting"] is False and doc["prompts"]["unexpected"] is False

    doc = analyze(x, prompts=library, answer_at_s=1.0, expected_prompts=["closed"],
                  quality_method=None)
    assert doc["prompts"]["unexpected"] is True

    changed = place(say(OTHER, tmp_path), lead=1.0)
    doc = analyze(changed, prompts=library, answer_at_s=1.0, quality_method=None)
    assert doc["prompts"]["matched"] == [] and doc["prompts"]["unknown_greeting"] is True


def test_prompt_library_on_disk(tmp_path: Path) -> None:
    from probe.audio.wavio import write_wav

    src = tmp_path / "in.wav"
    t = np.arange(16000 * 2) / 16000
    write_wav(src, 0.3 * np.sin(2 * np.pi * 300 * t) * np.sin(2 * np.pi * 3 * t), rate=16000)
    stored = add_prompt(tmp_path / "prompts", "demo", src)
    assert read_wav(stored).rate == 8000
    lib = PromptLibrary.load(tmp_path / "prompts")
    assert [r.name for r in lib.references] == ["demo"]
    with pytest.raises(ValueError):
        write_wav(tmp_path / "short.wav", np.zeros(100))
        add_prompt(tmp_path / "prompts", "short", tmp_path / "short.wav")
