"""Wiring: one test call end to end (dial → measure → result), and the state directory.

``run_call`` is what ``probe call`` does, and what each channel worker of the daemon
(``probe.daemon.run``) does for every scheduled call.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.clock import clock_synced
from probe.config.model import Config, Target
from probe.diagnosis.history import VerdictBook
from probe.diagnosis.rules import ProbeFacts
from probe.dial.dialer import Dialer
from probe.dial.progress import CallSteps, Progress, Step
from probe.dial.sip import SipDialer
from probe.errors import ConfigError, DialerError
from probe.results.document import build_result, validate_result, wav_duration_ms
from probe.results.timeline import CallRecord

if TYPE_CHECKING:
    from probe.dial.modem import ModemDialer

log = logging.getLogger("probe.run")

AUDIO_KEEP = 500  # newest received-audio WAVs kept in <state_dir>/audio; older ones are deleted


def prepare_state_dir(config: Config) -> Path:
    """Create the state directory (and audio/ under it) or fail as a configuration error."""
    audio = config.probe.state_dir / "audio"
    try:
        audio.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError([("probe.state_dir", f"cannot create {audio}: {exc.strerror}")],
                          config.source) from exc
    if not os.access(audio, os.W_OK):
        raise ConfigError([("probe.state_dir", f"{audio} is not writable")], config.source)
    return audio


def prune_audio(audio_dir: Path, keep: int = AUDIO_KEEP) -> int:
    """Delete all but the ``keep`` newest WAVs; returns how many this call deleted.

    Every channel worker prunes after its call, so two may prune at once: a WAV the other one
    deleted first is passed over, never an error (the call that prunes has its result made)."""
    dated = []
    for wav in audio_dir.glob("*.wav"):
        try:
            dated.append((wav.stat().st_mtime, wav))
        except FileNotFoundError:
            continue
    dated.sort(key=lambda pair: pair[0], reverse=True)
    deleted = 0
    for _, old in dated[keep:]:
        try:
            old.unlink()
            deleted += 1
        except FileNotFoundError:
            continue
    return deleted


def start_sip_dialer(config: Config) -> SipDialer | None:
    """A started dialer when any target calls over SIP, else None."""
    if config.sip is None or not any("sip" in t.channels for t in config.targets):
        return None
    return SipDialer(config.sip, probe_id=config.probe.id).start()


def start_modem_dialer(config: Config, channel: str) -> ModemDialer | None:
    """A dialer for the modem serving ``channel`` ("gsm"/"analog"), None when none is
    configured.  The port opens at the first call (and reopens after an unplug)."""
    from probe.dial.modem import ModemDialer

    modem = config.modem(channel)
    return ModemDialer(modem) if modem is not None else None


def run_call(config: Config, target: Target, channel: str, dialer: Dialer, audio_dir: Path, *,
             verdicts: VerdictBook | None = None, facts: ProbeFacts | None = None,
             line: Callable[[], dict[str, Any] | None] | None = None,
             progress: Progress | None = None,
             analysis_worker: bool = False) -> dict[str, Any]:
    """Place one test call and return its validated result document.

    With ``verdicts``, the result carries the target's diagnosis across its channels
    (probe/diagnosis/rules.py), given the probe's own ``facts`` at the time; ``line`` gives the
    line facts (probe/board/line.py snapshot) that go into the result.  (The daemon defers analog
    calls while the line is in use with ``LineMonitor.seize()``.)  ``progress`` is told each
    step of the call as it happens (probe/dial/progress.py).  ``analysis_worker``: the call is
    heard in a short-lived process (the daemon, which must not keep the analysis stack).
    """
    result_id = str(uuid.uuid4())
    audio_path = audio_dir / f"{result_id}.wav"
    # started_at is read at the dial: a clock set by NTP only during the call leaves that
    # timestamp on the old clock, so the result is synchronised only if it was so throughout
    synced_at_dial = clock_synced()
    destination = dialer.destination(target)
    if destination is None:
        raise DialerError(f"target {target.name!r} has nothing to dial over {channel}")
    record = dialer.call(destination, target.expect, target=target.name, audio_path=audio_path,
                         dtmf=target.dtmf, dtmf_after_s=target.dtmf_after_s,
                         on_event=_steps(progress, destination))
    if progress is not None and record.audio_path is not None:
        heard_ms = wav_duration_ms(record.audio_path)
        progress(Step("analysing", "analysing what was heard"
                      + (f" ({heard_ms / 1000:.1f} s of audio)…" if heard_ms else "…")))
    doc = build_result(record, target.expect, config.probe, result_id=result_id,
                       clock_synced=synced_at_dial and clock_synced(),
                       analysis=analyze_call(config, target, record, in_worker=analysis_worker))
    if line is not None:  # the line facts go into every result (probe/board/line.py snapshot)
        doc["line"] = line()
    if verdicts is not None:
        doc["diagnosis"] = verdicts.assess(doc, target, facts or ProbeFacts()).as_json()
    validate_result(doc)
    return doc


def _steps(progress: Progress | None, destination: str) -> CallSteps | None:
    return None if progress is None else CallSteps(progress, destination)


def analyze_call(config: Config, target: Target, record: CallRecord, *,
                 in_worker: bool = False) -> dict[str, Any] | None:
    """Hear the recorded call (tones, speech, prompts, quality; probe/audio), ``in_worker``
    in a short-lived process (probe/dial/analysis_worker.py).  A failure of the analysis is
    logged and leaves ``analysis`` null: it never loses the call's result."""
    audio = config.audio
    options: dict[str, Any] = {
        "zone": target.zone or audio.zone,
        "prompts_dir": audio.prompts_dir or config.probe.state_dir / "prompts",
        "expected_prompts": target.expected_prompts, "quality": audio.quality,
        "vad_model": audio.vad_model, "jitter_buffer_ms": audio.jitter_buffer_ms}
    if in_worker:
        from probe.dial.analysis_worker import analyze_in_worker

        return analyze_in_worker(record, options)
    from probe.audio.call import analyze_record

    try:
        return analyze_record(record, **options)
    except Exception:  # the analysis must not cost us the call's result
        log.exception("audio analysis of %s failed", record.audio_path)
        return None


def next_boot_count(state_dir: Path) -> int:
    """Increment and return the boot counter kept in the state directory (atomic replace)."""
    path = state_dir / "boot_count"
    try:
        count = int(path.read_text().strip()) + 1
    except (FileNotFoundError, ValueError):
        count = 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{count}\n")
    os.replace(tmp, path)
    return count
