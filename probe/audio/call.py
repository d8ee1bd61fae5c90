"""From a recorded call (timeline + WAV + RTP statistics) to its ``analysis`` object.

The WAV's first sample is the first media event (``early_media`` or ``media_start``), so the
answer's position in the audio is ``answer - first media`` on the monotonic clock.  SIP calls
bring RTP statistics for the E-model: packets the jitter buffer discarded count as late.
Any channel works the same way: a modem dialer that records audio and stamps its events gets
the same analysis.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from probe.audio.analysis import RtpFacts, analyze
from probe.audio.prompts import PromptLibrary
from probe.audio.wavio import WavError, load_for_analysis
from probe.results.timeline import CallRecord, Ev

log = logging.getLogger("probe.audio")


def answer_offset_s(record: CallRecord) -> float | None:
    """Seconds into the recording at which the call was answered (None: not answered)."""
    answer = record.first(Ev.ANSWER)
    media = [e for e in record.events if e.kind in (Ev.EARLY_MEDIA, Ev.MEDIA_START)]
    if answer is None or not media:
        return None
    return max(0.0, (answer.t_ns - min(e.t_ns for e in media)) / 1e9)


def rtp_facts(record: CallRecord) -> RtpFacts | None:
    r = record.rtp
    if r is None:
        return None
    return RtpFacts(codec=r.codec, packets_received=r.packets_received,
                    packets_lost=r.packets_lost, packets_late=r.packets_discarded,
                    rtt_ms=r.rtt_mean_us / 1000 if r.rtt_mean_us is not None else None)


def analyze_record(record: CallRecord, *, zone: str | None, prompts_dir: Path | None,
                   expected_prompts: tuple[str, ...] = (), quality: str = "visqol",
                   vad_model: bool = True, jitter_buffer_ms: float = 60.0
                   ) -> dict[str, Any] | None:
    """The call's analysis; None when there is no readable recording (logged)."""
    path = record.audio_path
    if path is None or not Path(path).exists():
        return None
    try:
        audio = load_for_analysis(path)
    except (OSError, WavError) as exc:
        log.warning("cannot analyse %s: %s", path, exc)
        return None
    library = PromptLibrary.load(prompts_dir)
    answered = record.has(Ev.ANSWER)
    return analyze(audio.samples, zone=zone, prompts=library,
                   expected_prompts=list(expected_prompts) or None,
                   answer_at_s=answer_offset_s(record), answered=answered,
                   rtp=rtp_facts(record) if record.channel == "sip" else None,
                   quality_method=None if quality == "off" else quality,
                   use_vad_model=vad_model, jitter_buffer_ms=jitter_buffer_ms)
