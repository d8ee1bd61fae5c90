"""Call-progress tones, cadence and SIT on synthesized corpora, with accuracy tables.

The corpus test runs every country plan x tone kind x codec (pcm, µ-law, A-law, GSM-FR) once,
with level (-40/-20/0 dBFS), noise (none, 20, 10 dB SNR), frequency error (+-1.5 %) and start
offset drawn per case (seeded): a representative subset of the full cross-product, which
``python -m tests.benchmarks --only audio`` runs in full.
"""

from __future__ import annotations

import numpy as np
import pytest

from probe.audio import cadence
from probe.audio.corpus import format_table, run_tone_cases, table, tone_cases
from probe.audio.frames import analyse_frames
from probe.audio.plans import KINDS, all_specs, countries, plan
from probe.audio.progress import classify
from probe.audio.sit import NA_CODES
from probe.audio.synth import add_noise, codec, silence, sit_tone
from probe.audio.tones import find_tone_segments


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest):
    """Lines printed after the module's tests (visible without -s)."""
    lines: list[str] = []
    yield lines
    show_report(request, lines)


def show_report(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Write ``lines`` to the terminal past pytest's output capture."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not lines:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def events(x: np.ndarray, zone: str | None = None):
    return classify(find_tone_segments(x, analyse_frames(x)), zone)


def test_plans_cover_at_least_40_countries_with_modulated_tones() -> None:
    assert len(countries()) >= 40
    kinds = {s.kind for s in all_specs()}
    assert kinds == set(KINDS)
    modulated = {s.country for s in all_specs() if s.tone.modulation_hz}
    assert {"IN", "JP", "SG", "ZA", "TH"} <= modulated
    for code in countries():  # every plan has the tones a caller hears
        assert {"ringback", "busy"} <= {s.kind for s in plan(code)}, code


def test_cadence_decides_busy_from_congestion() -> None:
    busy, cong = (0.5, 0.5), (0.25, 0.25)
    assert cadence.match([0.5, 0.5, 0.5], [0.5, 0.5], busy, first_truncated=False)
    assert cadence.match([0.5, 0.5, 0.5], [0.5, 0.5], cong, first_truncated=False) is None
    assert cadence.match([0.25] * 4, [0.25] * 3, cong, first_truncated=False)
    assert cadence.match([0.25] * 4, [0.25] * 3, busy, first_truncated=False) is None
    # a truncated first or last burst does not count against the pattern
    assert cadence.match([0.1, 0.5, 0.2], [0.5, 0.5], busy, first_truncated=True)
    assert cadence.match([0.1, 0.5], [0.5], busy, first_truncated=False) is None


def test_same_frequency_busy_and_congestion_in_one_recording() -> None:
    de = {s.kind: s for s in plan("DE")}
    from probe.audio.synth import cadenced

    x = np.concatenate([silence(0.5), cadenced(de["busy"], 4.0, -20), silence(1.5),
                        cadenced(de["congestion"], 3.0, -20), silence(0.5)])
    kinds = [e.kind for e in events(x, "DE")]
    assert kinds == ["busy", "congestion"]


def test_ringback_cycles_counted() -> None:
    from probe.audio.synth import cadenced

    gb = {s.kind: s for s in plan("GB")}
    x = np.concatenate([silence(0.2), cadenced(gb["ringback"], 3 * 3.0 - 2.0, -20)])
    (ev,) = events(x, "GB")
    assert ev.kind == "ringback" and ev.cycles == 3 and ev.frequencies == pytest.approx(
        (400, 450), abs=2)


def test_tone_corpus_accuracy(report: list[str]) -> None:
    outcomes = run_tone_cases(tone_cases(seed=11))
    for by in ("kind", "codec", "level", "noise", "freq"):
        report += format_table(f"Call-progress tones by {by} (45 plans, subset of the "
                               "cross-product)", table(outcomes, by))
    n = len(outcomes)
    zoned = sum(o.zoned_ok for o in outcomes) / n
    unzoned_right_or_honest = sum(bool(o.unzoned_ok or o.ambiguous) for o in outcomes) / n
    assert zoned >= 0.97
    assert unzoned_right_or_honest >= 0.95
    for o in outcomes:  # nothing clean and loud may fail
        if o.case.snr_db is None and o.case.level_dbfs > -40 and o.case.codec != "gsm":
            assert o.zoned_ok, o.case.label()


def _sit(code: str | None, fmt: str, level: float, snr: float | None,
         rng: np.random.Generator) -> np.ndarray:
    if code is None:
        freqs, durs = (950.0, 1400.0, 1800.0), (0.33, 0.33, 0.33)
    else:
        (p1, p2), = [k for k, v in NA_CODES.items() if v[0] == code]
        f1 = 913.8 if p1[1] == "l" else 985.2
        f2 = 1370.6 if p2[1] == "l" else 1428.5
        durs = (0.274 if p1[0] == "S" else 0.38, 0.274 if p2[0] == "S" else 0.38, 0.38)
        freqs = (f1, f2, 1776.7)
    x = np.concatenate([silence(0.4), sit_tone(freqs, durs, level, gap=0.01), silence(0.6)])
    return codec(fmt, add_noise(x, snr, reference_dbfs=level, rng=rng))


def test_sit_codes(report: list[str]) -> None:
    rng = np.random.default_rng(5)
    codes = [None, *(v[0] for v in NA_CODES.values())]
    rows = []
    total = right = 0
    for fmt in ("pcm", "ulaw", "alaw", "gsm"):
        ok = n = 0
        for code in codes:
            for level, snr in ((-24.0, None), (-40.0, 10.0), (-10.0, 20.0)):
                found = [e for e in events(_sit(code, fmt, level, snr, rng)) if e.kind == "sit"]
                n += 1
                ok += len(found) == 1 and found[0].sit_code == (code or "ITU")
        rows.append(f"  {fmt:<6}{n:>6}{ok / n:>10.1%}")
        total += n
        right += ok
    report += ["SIT (ITU + 8 North American codes x 3 level/noise)", "  codec  cases   correct",
               *rows]
    assert right / total >= 0.95


def test_speech_is_not_a_tone() -> None:
    from probe.audio.wavio import read_wav
    from probe.sim.hotline import GREETING_WAV

    x = read_wav(GREETING_WAV).samples
    for zone in (None, "DE", "US", "GB"):
        assert [e for e in events(x, zone) if e.kind != "unknown"] == [], zone
