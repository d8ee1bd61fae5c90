"""The whole hearing of one call: tones, DTMF, speech, levels, known prompts and quality.

:func:`analyze` is a pure function of the received samples (8 kHz) and what the timeline says
(when the call was answered, RTP statistics); it returns the ``analysis`` object of the result
document (``schema/result-v1.json``).  Order matters and saves work: the shared spectra are
computed once; explained tones (call progress, SIT, DTMF) are masked before the speech model
runs, so it only spends time on audio nothing cheaper explains; the expensive full-reference
quality score runs only on the matched prompt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from probe.audio import blas, dtmf, emodel, levels, quality
from probe.audio.frames import FRAME_S, analyse_frames
from probe.audio.plans import resolve_zone
from probe.audio.progress import ToneEvent, classify
from probe.audio.prompts import PromptLibrary, PromptMatch
from probe.audio.speech import SpeechResult, detect_speech
from probe.audio.tones import find_tone_segments
from probe.audio.wavio import RATE, load_for_analysis

ANALYSIS_VERSION = 1
GREETING_MIN_S = 0.8


@dataclass(frozen=True)
class RtpFacts:
    """What the E-model needs from a SIP call's receive statistics."""

    codec: str | None
    packets_received: int
    packets_lost: int
    packets_late: int  # discarded by the jitter buffer
    rtt_ms: float | None


def analyze(x: NDArray[np.float64], *, zone: str | None = None,
            prompts: PromptLibrary | None = None, expected_prompts: list[str] | None = None,
            answer_at_s: float | None = None, answered: bool | None = None,
            rtp: RtpFacts | None = None, quality_method: str | None = "visqol",
            use_vad_model: bool = True,
            jitter_buffer_ms: float = emodel.DEFAULT_JITTER_BUFFER_MS) -> dict[str, Any]:
    """Analyse 8 kHz mono samples; see the module docstring.  ``answered`` None = unknown."""
    with blas.one_thread():  # the products here are too small to share out (probe.audio.blas)
        return _analyze(x, zone, prompts, expected_prompts, answer_at_s, answered, rtp,
                        quality_method, use_vad_model, jitter_buffer_ms)


def _analyze(x: NDArray[np.float64], zone: str | None, prompts: PromptLibrary | None,
             expected_prompts: list[str] | None, answer_at_s: float | None,
             answered: bool | None, rtp: RtpFacts | None, quality_method: str | None,
             use_vad_model: bool, jitter_buffer_ms: float) -> dict[str, Any]:
    started = time.perf_counter()
    x = np.asarray(x, dtype=np.float64)
    frames = analyse_frames(x)
    segments = find_tone_segments(x, frames)
    tones = classify(segments, zone, duration=len(x) / RATE)
    digits = dtmf.detect(x)
    mask = explained(frames.count, [(ev.start, ev.end) for ev in tones]
                     + [(d.start, d.end) for d in digits])
    speech = detect_speech(x, frames, mask, use_model=use_vad_model)
    if answered is None and answer_at_s is not None:
        answered = True
    start = answer_at_s if answered and answer_at_s is not None else 0.0
    lv = levels.measure_levels(x, frames, start)
    packets = rtp.packets_received if rtp is not None else None
    matches = prompts.match(x, frames) if prompts is not None and len(prompts) else []
    hearing_ms = (time.perf_counter() - started) * 1000
    doc: dict[str, Any] = {
        "version": ANALYSIS_VERSION,
        "zone": resolve_zone(zone) if zone else None,
        "duration_s": round(len(x) / RATE, 3),
        "answer_at_s": round(answer_at_s, 3) if answer_at_s is not None else None,
        "tones": [_tone(ev) for ev in tones],
        "ring_cycles": (sum(ev.cycles or 0 for ev in tones if ev.kind == "ringback")
                        if any(ev.kind == "ringback" for ev in tones) else None),
        "dtmf": [{"digit": d.digit, "start_s": d.start, "end_s": d.end} for d in digits],
        "speech": _speech(speech, answer_at_s if answered else None),
        "level": {
            "from_s": round(start, 3),
            "rms_dbfs": lv.rms_dbfs, "peak_dbfs": lv.peak_dbfs, "clipped": lv.clipped,
            "clipping_ratio": lv.clipping_ratio, "silence_ratio": lv.silence_ratio,
            "longest_silence_s": lv.longest_silence_s,
        },
        "dead_air": levels.dead_air(lv, bool(answered)) if answered is not None else None,
        "one_way_audio": (levels.one_way_audio(lv, bool(answered), packets)
                          if answered is not None else None),
        "prompts": _prompts(matches, prompts, expected_prompts, speech,
                            answer_at_s if answered else None),
        "quality": {
            "full_reference": _full_reference(x, matches, prompts, quality_method),
            "emodel": _emodel(rtp, jitter_buffer_ms),
        },
        "timings_ms": {"hearing": round(hearing_ms, 1),
                       "total": round((time.perf_counter() - started) * 1000, 1)},
    }
    return doc


def analyze_file(path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """:func:`analyze` on a WAV file (any rate or encoding :mod:`probe.audio.wavio` reads)."""
    return analyze(load_for_analysis(path).samples, **kwargs)


def explained(count: int, spans: list[tuple[float, float]]) -> NDArray[np.bool_]:
    """Per frame: inside one of ``spans`` (s), the tones and digits the speech gate skips."""
    mask = np.zeros(count, bool)
    for start, end in spans:
        mask[_frame(start):_frame(end) + 1] = True
    return mask


def _frame(t: float) -> int:
    return max(0, round(t / FRAME_S))


def _tone(ev: ToneEvent) -> dict[str, Any]:
    return {
        "kind": ev.kind, "start_s": round(ev.start, 3), "end_s": round(ev.end, 3),
        "frequencies_hz": list(ev.frequencies), "cadence_s": list(ev.cadence),
        "confidence": ev.confidence, "country": ev.country, "spec": ev.spec,
        "cycles": ev.cycles, "candidates": ev.candidates, "sit_code": ev.sit_code,
        "sit_meaning": ev.sit_meaning,
    }


def _speech(sp: SpeechResult, answer_at_s: float | None) -> dict[str, Any]:
    first = None
    if answer_at_s is not None:
        after = [s for s in sp.segments if s.end > answer_at_s]
        if after:
            first = round(max(0.0, after[0].start - answer_at_s), 3)
    return {
        "method": sp.method,
        "present": bool(sp.segments),
        "total_s": round(sp.total_s, 2),
        "segments": [{"start_s": s.start, "end_s": s.end} for s in sp.segments],
        "first_after_answer_s": first,
    }


def _prompts(matches: list[PromptMatch], library: PromptLibrary | None,
             expected: list[str] | None, sp: SpeechResult,
             answer_at_s: float | None) -> dict[str, Any] | None:
    if library is None or not len(library):
        return None
    since = answer_at_s or 0.0
    greeting_seg = next((s for s in sp.segments
                         if s.end > since and s.duration >= GREETING_MIN_S), None)
    greeting = None
    if greeting_seg is not None:
        for m in sorted(matches, key=lambda m: m.start):
            if m.start < greeting_seg.end and m.end > greeting_seg.start:
                greeting = m.name
                break
    names = [m.name for m in matches]
    return {
        "references": len(library),
        "matched": [{"name": m.name, "start_s": m.start, "end_s": m.end, "ber": m.ber,
                     "score": m.score, "coverage": m.coverage, "truncated": m.truncated,
                     "waveform_correlation": m.waveform_correlation} for m in matches],
        "greeting": greeting,
        "unknown_greeting": (greeting is None) if greeting_seg is not None else None,
        "expected": expected,
        "unexpected": (not any(n in expected for n in names)) if expected else None,
    }


def _full_reference(x: NDArray[np.float64], matches: list[PromptMatch],
                    library: PromptLibrary | None, method: str | None) -> dict[str, Any] | None:
    if not method or library is None or not matches:
        return None
    m = max(matches, key=lambda m: m.coverage)
    ref = library.reference(m.name)
    if ref is None:
        return None
    shift = round(m.start * RATE)
    r0 = max(0, -shift)
    r1 = min(len(ref.samples), round((m.end - m.start) * RATE))
    reference = ref.samples[r0:r1]
    degraded = x[shift + r0:shift + r1]
    q = quality.score(reference, degraded, method)
    return {"prompt": m.name, "mos": q.mos, "method": q.method, "error": q.error,
            "dropout_ratio": quality.dropout_ratio(reference, degraded),
            "seconds": round(len(degraded) / RATE, 2)}


def _emodel(rtp: RtpFacts | None, jitter_buffer_ms: float) -> dict[str, Any] | None:
    if rtp is None:
        return None
    e = emodel.rate(rtp.codec, rtp.packets_received, rtp.packets_lost, rtp.packets_late,
                    rtt_ms=rtp.rtt_ms, jitter_buffer_ms=jitter_buffer_ms)
    if e is None:
        return {"r": None, "mos": None, "loss_percent": None, "delay_ms": None,
                "method": "itu-t-g107",
                "error": f"no G.113 impairment values for codec {rtp.codec!r} or no packets"}
    return {"r": e.r, "mos": e.mos, "loss_percent": e.loss_percent, "delay_ms": e.delay_ms,
            "method": e.method, "error": None}
