"""Hearing against the standards: the tone corpus independent of our plan table (expectations
in tests/data/tone_standards.csv, tones made by sox, real-world degradations; see
tests/benchmarks/bench_tone_standards.py), partial cadences, tones that fit no plan, zone names.

The corpus test runs every row of the expectations twice (one full excerpt or one shorter than a
cycle, drawn per case), all at 10 dB SNR with codec, band limit, level, frequency error and
packet loss drawn (seeded); ``python -m tests.benchmarks --only standards`` runs the sweep.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from probe.audio.frames import analyse_frames
from probe.audio.plans import KINDS, UnknownZone, countries, resolve_zone
from probe.audio.progress import ToneEvent, classify
from probe.audio.tones import find_tone_segments
from tests.benchmarks import bench_tone_standards as corpus
from tests.test_audio_tones import show_report

RATE = 8000


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest):
    """Lines printed after the module's tests (visible without -s)."""
    lines: list[str] = []
    yield lines
    show_report(request, lines)


def hear(x: np.ndarray, zone: str | None = None) -> list[ToneEvent]:
    return classify(find_tone_segments(x, analyse_frames(x)), zone, duration=len(x) / RATE)


def sox(*effects: str) -> np.ndarray:
    """8 kHz samples made by sox from ``effects`` (a synth chain)."""
    out = subprocess.run([*corpus._sox(), "-n", "-r", "8000", "-c", "1", "-b", "16", "-e",
                          "signed", "-t", "raw", "-", *effects], capture_output=True,
                         check=True).stdout
    return np.frombuffer(out, "<i2").astype(np.float64) / 32768


def test_expectations_cover_40_countries_from_the_standards() -> None:
    table = corpus.standards()
    by_country: dict[str, set[str]] = {}
    for row in table:
        assert row.kind in KINDS, row
        assert row.source, row
        for f in row.tone.replace("*", "+").split("+"):
            assert 10 <= float(f) <= 2000, row
        by_country.setdefault(row.country, set()).add(row.kind)
    assert len(by_country) >= 40
    assert sum({"ringback", "busy"} <= kinds for kinds in by_country.values()) >= 40


def test_sox_tones_are_what_the_table_says() -> None:
    """The corpus's sox chains, checked with a plain FFT: frequencies, AM sidebands, cadence."""
    gb = next(s for s in corpus.standards() if (s.country, s.kind) == ("GB", "ringback"))
    x = corpus.sox_tone(gb, 3.0, 0.0)
    envelope = np.convolve(x**2, np.ones(80) / 80, mode="same")  # 10 ms mean square
    edges = np.flatnonzero(np.diff((envelope > 1e-4).astype(int)))
    # bursts 0.4 / 0.2 / 0.4 / 2.0 s (edges of a 10 ms envelope: +-10 ms)
    assert np.diff(edges[:3]) / RATE == pytest.approx([0.2, 0.4], abs=0.012)
    spectrum = np.abs(np.fft.rfft(x[:3200] * np.hanning(3200), 8000))
    assert sorted(np.argsort(spectrum)[-2:]) == [400, 450]
    am = sox(*corpus._synth("400*25", 1.0, 1.0))
    spectrum = np.abs(np.fft.rfft(am * np.hanning(len(am)), 8000))  # 1 Hz bins
    peaks = [k for k in range(1, 1000) if spectrum[k] >= max(spectrum[k - 1], spectrum[k + 1])
             and spectrum[k] > 0.1 * spectrum.max()]
    assert peaks == [375, 400, 425]


def test_standards_corpus_at_10_db_snr(report: list[str]) -> None:
    table = corpus.standards()
    cases = corpus.cases(table, seed=17, per_standard=2, snr=(10.0,))
    outcomes = corpus.run(cases, table, seed=17)
    s = corpus.summary(outcomes)
    report += [f"Tones from the standards at 10 dB SNR ({s['cases']:.0f} cases, "
               f"{len({c.std.country for c in cases})} countries, sox-made): right "
               f"{s['right']:.1%}, right or honest {s['right_or_honest']:.1%}, right "
               f"{s['right_when_determinable']:.1%} where the excerpt decides the kind"]
    for by in ("excerpt", "codec", "kind", "loss"):
        report += [f"  by {by}", corpus.accuracy_table(outcomes, by)]
    report += ["  misses", corpus.miss_table(outcomes)]
    assert s["right_or_honest"] >= 0.99
    assert s["right_when_determinable"] >= 0.99
    for o in outcomes:  # nothing whole, clean of loss and audible may be missed
        if o.case.excerpt == "full" and not o.case.loss and o.case.level_dbfs > -30:
            assert o.ok, (o.case.label(), o.why())


def test_a_tone_no_plan_has_is_reported_as_unknown() -> None:
    # 1000 Hz, 0.3 s on 0.3 s off: no plan's tone
    x = sox(*[a for _ in range(6) for a in ("synth", "0.3", "sine", "1000", "pad", "0", "0.3",
                                            ":")][:-1])
    for zone in (None, "DE"):
        (ev,) = hear(0.1 * x, zone)
        assert ev.kind == "unknown" and ev.frequencies == pytest.approx((1000,), abs=2)
        assert ev.cadence[:2] == pytest.approx((0.3, 0.3), abs=0.03)
        assert ev.candidates  # the nearest specs of all plans
    # North American ringback heard with the German plan: unknown, nearest says US ringback
    us = next(s for s in corpus.standards() if (s.country, s.kind) == ("US", "ringback"))
    (ev,) = hear(0.1 * corpus.sox_tone(us, 13.0, 0.5), "DE")
    assert ev.kind == "unknown" and ev.frequencies == pytest.approx((440, 480), abs=3)
    assert "US" in ev.candidates.get("ringback", [])


def _de(kind: str) -> corpus.Standard:
    return next(s for s in corpus.standards() if (s.country, s.kind) == ("DE", kind))


def test_less_than_a_cycle_is_named_from_what_it_holds() -> None:
    full = hear(0.1 * corpus.sox_tone(_de("ringback"), 11.0, 0.0), "DE")
    assert [e.kind for e in full] == ["ringback"]
    # the end of a ring, then silence: only a ringback burst is that long (busy is 0.48 s)
    (ev,) = hear(0.1 * corpus.sox_tone(_de("ringback"), 3.0, 0.4), "DE")
    assert ev.kind == "ringback" and ev.confidence < full[0].confidence
    # 0.3 s inside a burst: dial tone most likely, ringback and busy not excluded
    (ev,) = hear(0.1 * corpus.sox_tone(_de("ringback"), 0.3, 0.2), "DE")
    assert ev.kind == "dial" and {"ringback", "busy"} <= set(ev.candidates)
    assert ev.confidence <= 0.5
    # the same without a zone: heard, not named beyond what the plans agree on
    (ev,) = hear(0.1 * corpus.sox_tone(_de("ringback"), 0.3, 0.2))
    assert ev.kind in ("dial", "unknown") and ev.candidates


@pytest.mark.parametrize(("name", "code"), [
    ("de", "DE"), ("DE", "DE"), ("uk", "GB"), ("UK", "GB"), ("gb", "GB"), ("el", "GR"),
    ("DEU", "DE"), ("Germany", "DE"), ("united kingdom", "GB"), ("United States", "US"),
    ("en_GB", "GB"), ("de-DE", "DE"), ("South Korea", "KR"),
])
def test_zone_names(name: str, code: str) -> None:
    assert resolve_zone(name) == code


def test_an_unknown_zone_lists_the_choices() -> None:
    with pytest.raises(UnknownZone) as err:
        resolve_zone("us-old")
    text = str(err.value)
    assert "'us-old'" in text and all(code in text for code in countries())
    assert "UK for GB" in text
    with pytest.raises(UnknownZone, match="did you mean DE"):
        resolve_zone("Germny")
