"""Wiring: one test call end to end (dial → measure → result), and the run loop around it.

``run_call`` is what ``probe call`` does; ``Runner`` is what ``probe run`` does: every target and
channel at its interval, results published to MQTT as they come.  This thread owns the SIP
endpoint; the publisher owns the paho client on its own thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe.config import Config, Target
from probe.dial.sip import SipDialer
from probe.errors import ConfigError, DialerError
from probe.mqtt import Publisher
from probe.result import build_result, validate_result

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
    """Delete all but the ``keep`` newest WAVs; returns how many were deleted."""
    wavs = sorted(audio_dir.glob("*.wav"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in wavs[keep:]:
        old.unlink(missing_ok=True)
    return max(0, len(wavs) - keep)


def start_sip_dialer(config: Config) -> SipDialer | None:
    """A started dialer when any target calls over SIP, else None."""
    if config.sip is None or not any("sip" in t.channels for t in config.targets):
        return None
    return SipDialer(config.sip, probe_id=config.probe.id).start()


def run_call(config: Config, target: Target, channel: str, dialer: SipDialer | None,
             audio_dir: Path) -> dict[str, Any]:
    """Place one test call and return its validated result document."""
    if channel != "sip":
        raise DialerError(f"channel {channel!r} has no dialer in this version of the probe")
    if dialer is None or target.sip_uri is None:
        raise DialerError(f"target {target.name!r} has no SIP path configured")
    result_id = str(uuid.uuid4())
    record = dialer.call(target.sip_uri, target.expect, target=target.name,
                         audio_path=audio_dir / f"{result_id}.wav", dtmf=target.dtmf,
                         dtmf_after_s=target.dtmf_after_s)
    doc = build_result(record, target.expect, config.probe, result_id=result_id)
    validate_result(doc)
    return doc


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


@dataclass
class Slot:
    target: Target
    channel: str
    due: float  # monotonic seconds


def plan(targets: tuple[Target, ...], now: float) -> list[Slot]:
    """Every (target, channel) pair, first due now, in configuration order."""
    return [Slot(t, c, now) for t in targets for c in t.channels]


def reschedule(slot: Slot, now: float) -> None:
    """Next due time on the slot's own grid; slots missed while busy are skipped, not piled up."""
    interval = slot.target.interval_s
    slot.due += interval
    if slot.due <= now:
        missed = int((now - slot.due) // interval) + 1
        slot.due += missed * interval


class Runner:
    """``probe run``: places the scheduled calls and publishes every result."""

    def __init__(self, config: Config, *, once: bool = False) -> None:
        self.config = config
        self.once = once
        self.stopping = threading.Event()
        self.results: list[dict[str, Any]] = []

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        config = self.config
        audio_dir = prepare_state_dir(config)
        boot = next_boot_count(config.probe.state_dir)
        publisher = _publisher(config, boot)
        dialer = start_sip_dialer(config)
        log.info("probe %s started (boot %d, %d targets)", config.probe.id, boot,
                 len(config.targets))
        try:
            slots = plan(config.targets, time.monotonic())
            while slots and not self.stopping.is_set():
                slot = min(slots, key=lambda s: s.due)
                if self.stopping.wait(max(0.0, slot.due - time.monotonic())):
                    break
                self._one(slot, dialer, audio_dir, publisher)
                if self.once:
                    slots.remove(slot)
                else:
                    reschedule(slot, time.monotonic())
        finally:
            if dialer is not None:
                dialer.close()
            if publisher is not None:
                publisher.close(timeout=10.0, reason="stopped")
        return 0

    def _one(self, slot: Slot, dialer: SipDialer | None, audio_dir: Path,
             publisher: Publisher | None) -> None:
        try:
            doc = run_call(self.config, slot.target, slot.channel, dialer, audio_dir)
        except DialerError as exc:
            log.error("test call to %s over %s not placed: %s", slot.target.name, slot.channel,
                      exc)
            return
        self.results.append(doc)
        log.info("%s/%s: %s (pdd %s ms, answer %s ms) id=%s", slot.target.name, slot.channel,
                 doc["outcome"], doc["timings_ms"]["post_dial_delay"],
                 doc["timings_ms"]["time_to_answer"], doc["id"])
        if publisher is not None:
            publisher.publish("result", doc)
        prune_audio(audio_dir)


def _publisher(config: Config, boot: int) -> Publisher | None:
    m = config.mqtt
    if m is None:
        return None
    return Publisher(probe_id=config.probe.id, host=m.host, port=m.port,
                     keepalive_s=m.keepalive_s, username=m.username,
                     password=m.password.reveal() if m.password else None,
                     session_expiry_s=m.session_expiry_s, boot_count=boot)
