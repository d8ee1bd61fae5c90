"""Quality scores (ViSQOL full reference, E-model G.107), G.711, WAV decoding, DTMF (Q.24)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.audio import dtmf, emodel, quality
from probe.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from probe.audio.synth import add_noise, codec, silence
from probe.audio.wavio import read_wav, write_wav
from probe.sim.hotline import GREETING_WAV
from tests.test_audio_tones import show_report

# ------------------------------------------------------------------ E-model (ITU-T G.107)


def test_emodel_default_and_reference_values() -> None:
    assert emodel.mos_from_r(93.2) == pytest.approx(4.41, abs=0.01)
    assert emodel.mos_from_r(-5) == 1.0 and emodel.mos_from_r(120) == 4.5
    assert emodel.delay_impairment(100) == 0
    # G.107: Idd at 200 ms (X = 1) = 25 * (2^(1/6) - 3 * (1 + 3^-6)^(1/6) + 2)
    x = 1.0
    expected = 25 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)
    assert emodel.delay_impairment(200) == pytest.approx(expected)
    # G.711 with PLC, 2 % random loss: Ie,eff = 95 * 2 / (2 + 25.1)
    assert emodel.effective_ie(0, 25.1, 2.0) == pytest.approx(95 * 2 / 27.1)
    clean = emodel.rate("PCMU/8000", 1000, 0, 0, rtt_ms=0, jitter_buffer_ms=20)
    assert clean is not None and clean.r == 93.2 and clean.mos == pytest.approx(4.41, abs=0.01)


def test_emodel_late_packets_count_as_lost_and_unknown_codec_is_null() -> None:
    a = emodel.rate("PCMA/8000", 990, 10, 0, rtt_ms=40)
    b = emodel.rate("PCMA/8000", 990, 10, 20, rtt_ms=40)
    assert a is not None and b is not None
    assert b.loss_percent == pytest.approx(3.0) and b.r < a.r
    assert emodel.rate("opus/48000", 100, 0, 0, rtt_ms=None) is None
    assert emodel.rate("PCMU/8000", 0, 0, 0, rtt_ms=None) is None
    assert emodel.rate("PCMU/8000", 10, 0, 0, rtt_ms=None).method.endswith("delay-assumed")
    assert emodel.late_packets([40, 41, 45, 130, 200], buffer_ms=60) == 2


@given(st.floats(0, 100), st.floats(0, 100))
def test_emodel_mos_is_monotonic_in_r(r1: float, r2: float) -> None:
    lo, hi = sorted((r1, r2))
    assert emodel.mos_from_r(lo) <= emodel.mos_from_r(hi) + 1e-12


# ------------------------------------------------------------------ full reference


@pytest.mark.skipif(not quality.available("visqol"), reason="visqol-python not installed")
def test_visqol_orders_damage(request: pytest.FixtureRequest) -> None:
    ref = read_wav(GREETING_WAV).samples
    rng = np.random.default_rng(0)
    lossy = ref.copy()
    frames = lossy[:len(lossy) // 160 * 160].reshape(-1, 160)
    frames[rng.random(len(frames)) < 0.2] = 0
    cases = {
        "identical": ref,
        "gsm": codec("gsm", ref),
        "20 % frames lost": lossy,
        "noise 5 dB SNR": add_noise(ref, 5, reference_dbfs=-17, rng=rng),
    }
    scores = {k: quality.score(ref, v) for k, v in cases.items() if k != "20 % frames lost"}
    lines = ["Full-reference quality (ViSQOL v3 speech, lattice) on the stand-in greeting",
             *(f"  {k:<20}{s.mos:>6}  dropouts {quality.dropout_ratio(ref, cases[k])}"
               for k, s in scores.items()),
             f"  {'20 % frames lost':<20}{'-':>6}  dropouts {quality.dropout_ratio(ref, lossy)}"]
    show_report(request, lines)
    assert all(s.method == quality.METHOD_VISQOL for s in scores.values())
    assert scores["identical"].mos > 4.3
    assert scores["identical"].mos > scores["gsm"].mos > scores["noise 5 dB SNR"].mos
    assert quality.dropout_ratio(ref, lossy) == pytest.approx(0.2, abs=0.05)
    assert quality.dropout_ratio(ref, ref) == 0
    silent = quality.score(ref, np.zeros_like(ref))
    assert silent.mos is None and silent.error
    short = quality.score(ref[:4000], ref[:4000])
    assert short.mos is None and short.error


# ------------------------------------------------------------------ G.711 and WAV files


def test_g711_code_tables_roundtrip() -> None:
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(alaw_encode(alaw_decode(codes)), codes)
    mu = ulaw_encode(ulaw_decode(codes))
    assert np.array_equal(mu[codes != 0x7F], codes[codes != 0x7F])  # 0x7F is -0: becomes +0


@settings(max_examples=50)
@given(st.lists(st.floats(-1, 0.999), min_size=1, max_size=200))
def test_g711_error_is_within_a_quantisation_step(values: list[float]) -> None:
    x = np.array(values)
    for enc, dec in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        y = dec(enc(x))
        assert np.all(np.abs(y - x) <= np.maximum(np.abs(x) * 0.07, 2 / 2048) + 1e-9)


def _wav(path: Path, tag: int, bits: int, payload: bytes, rate: int = 8000) -> Path:
    align = bits // 8
    fmt = struct.pack("<HHIIHH", tag, 1, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack(
        "<I", 3) + b"abc\x00" + b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_wav_reader_encodings(tmp_path: Path) -> None:
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)
    pcm16 = read_wav(_wav(tmp_path / "a.wav", 1, 16, (x * 32768).astype("<i2").tobytes()))
    ulaw = read_wav(_wav(tmp_path / "b.wav", 7, 8, ulaw_encode(x).tobytes()))
    alaw = read_wav(_wav(tmp_path / "c.wav", 6, 8, alaw_encode(x).tobytes()))
    flt = read_wav(_wav(tmp_path / "d.wav", 3, 32, x.astype("<f4").tobytes()))
    for a in (pcm16, ulaw, alaw, flt):
        assert a.rate == 8000 and np.max(np.abs(a.samples - x)) < 0.02
    assert (ulaw.encoding, alaw.encoding) == ("ulaw", "alaw")
    write_wav(tmp_path / "e.wav", x, rate=16000)
    assert read_wav(tmp_path / "e.wav").rate == 16000


# ------------------------------------------------------------------ DTMF (ITU-T Q.24)


def test_dtmf_q24_table(request: pytest.FixtureRequest) -> None:
    digits = "0123456789*#ABCD"
    rng = np.random.default_rng(4)
    lines = ["DTMF (Q.24): digits recovered of 16, 40 ms on / 40 ms off, -8 dBm0, 20 dB SNR",
             f"  {'frequency error':<18}{'pcm':>6}{'ulaw':>6}{'alaw':>6}   required"]
    for err, must in ((0.0, "all"), (0.015, "all"), (-0.015, "all"), (0.035, "none"),
                      (-0.035, "none")):
        got = {}
        for fmt in ("pcm", "ulaw", "alaw"):
            x = dtmf.generate(digits, on_s=0.04, off_s=0.04, freq_error=err)
            x = codec(fmt, add_noise(np.concatenate([silence(0.1), x]), 20,
                                     reference_dbfs=-9, rng=rng))
            got[fmt] = dtmf.detect_string(x)
        lines.append(f"  {err:+.1%}{'':<12}" + "".join(f"{len(g):>6}" for g in got.values())
                     + f"   {must}")
        for g in got.values():
            assert g == (digits if must == "all" else ""), (err, got)
    show_report(request, lines)


def test_dtmf_twist_duration_and_talk_off() -> None:
    assert dtmf.detect_string(dtmf.generate("159", high_boost_db=3.5)) == "159"
    assert dtmf.detect_string(dtmf.generate("159", high_boost_db=-7.5)) == "159"
    assert dtmf.detect_string(dtmf.generate("159", high_boost_db=6)) == ""
    assert dtmf.detect_string(dtmf.generate("159", high_boost_db=-10)) == ""
    assert dtmf.detect_string(dtmf.generate("159", on_s=0.02)) == ""
    assert dtmf.detect_string(read_wav(GREETING_WAV).samples) == ""
    (d,) = dtmf.detect(np.concatenate([silence(0.5), dtmf.generate("7", on_s=0.1)]))
    assert d.digit == "7" and d.start == pytest.approx(0.5, abs=0.015)
    assert d.end - d.start == pytest.approx(0.1, abs=0.015)
    assert math.isclose(d.low_hz, 852, abs_tol=3) and math.isclose(d.high_hz, 1209, abs_tol=3)
